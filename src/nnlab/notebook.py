"""The MNIST notebook's own training loop, as it was written, for make bench to time against nnlab.

Its loader (torchvision's MNIST with ToTensor, DataLoader with one worker process) and its cells'
train_one_epoch and test_one_epoch, on nnlab's split of the same training images."""
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, transforms


def run_notebook(cfg: DictConfig) -> dict:
    """The notebook's cells (its train_one_epoch as written; its test pass on the validation images
    after each epoch, then on the test set), on nnlab's split of the same training images."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(cfg.seed)
    transform = transforms.Compose([transforms.ToTensor()])
    root, val_size = Path(cfg.data.root), cfg.data.val_size
    train_data = datasets.MNIST(root, train=True, download=False, transform=transform)
    test_data = datasets.MNIST(root, train=False, download=False, transform=transform)
    order = torch.randperm(len(train_data), generator=torch.Generator().manual_seed(cfg.data.split_seed)).tolist()
    val_data = Subset(train_data, order[:val_size]) if val_size else test_data
    loader = lambda ds, shuffle: DataLoader(ds, batch_size=cfg.data.batch_size, shuffle=shuffle,  # noqa: E731
                                            num_workers=1)
    train_loader = loader(Subset(train_data, order[val_size:]), True)
    val_loader, test_loader = loader(val_data, False), loader(test_data, False)
    model = instantiate(cfg.model).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.optimizer.lr)
    for epoch in range(cfg.trainer.max_epochs):
        train_one_epoch(train_loader, model, device, optimizer, cfg.log_interval, epoch)
        val = test_one_epoch(val_loader, model, device)
    test = test_one_epoch(test_loader, model, device)
    return {"val/loss": val[0], "val/acc": val[1], "test/loss": test[0], "test/acc": test[1]}


def train_one_epoch(train_loader, model, device, optimizer, log_interval, epoch):  # the notebook's, verbatim
    model.train()
    losses = []
    counter = []
    for i, (img, label) in enumerate(train_loader):
        img, label = img.to(device), label.to(device)
        optimizer.zero_grad()
        output = model(img)
        criterion = torch.nn.CrossEntropyLoss()
        loss = criterion(output, label)
        loss.backward()
        optimizer.step()
        if (i + 1) % log_interval == 0:
            losses.append(loss.item())
            counter.append((i * train_loader.batch_size) + img.size(0) + epoch * len(train_loader.dataset))
    return losses, counter


def test_one_epoch(test_loader, model, device) -> tuple[float, float]:  # mean loss, accuracy
    model.eval()
    criterion = torch.nn.CrossEntropyLoss(reduction="sum")
    test_loss, num_correct = 0.0, 0
    with torch.no_grad():
        for img, label in test_loader:
            img, label = img.to(device), label.to(device)
            output = model(img)
            test_loss += criterion(output, label).item()
            num_correct += (output.argmax(1) == label).sum().item()
    return test_loss / len(test_loader.dataset), num_correct / len(test_loader.dataset)
