"""MNIST through torchvision's MNIST class, held in memory as float32 tensors (188 MB for the 60k training images)."""
from pathlib import Path

import torch
from torchvision.datasets import MNIST

from nnlab.data.loader import Split, TensorDataModule
from nnlab.data.mnist_raw import SOURCES, prepare_raw

MEAN, STD = 0.1307, 0.3081  # of the 60k training pixels in [0, 1]


class MNISTDataModule(TensorDataModule):
    """Batches of (B, 1, 28, 28) float images in [0, 1] (ToTensor's scaling) and int64 labels.

    val_size images are held out of the 60k training set by a split seeded with split_seed, so
    model choice never sees the test set; val_size=0 trains on all 60k and validates on the test
    set, as the notebook did. normalize=True standardises pixels with MNIST's mean and std.
    """

    in_shape = (1, 28, 28)
    num_classes = 10

    def __init__(self, root: str = "data", batch_size: int = 64, val_size: int = 5000,
                 split_seed: int = 0, normalize: bool = False, source: str = "auto",
                 eval_batch_size: int = 1000):
        super().__init__()
        if not 0 <= val_size < 60000:
            raise ValueError(f"data.val_size={val_size} must be in [0, 60000): 0 validates on the test set")
        if batch_size < 1 or eval_batch_size < 1:
            raise ValueError(f"data.batch_size={batch_size} must be a positive number of images")
        if source not in SOURCES:
            raise ValueError(f"data.source={source!r} must be one of {', '.join(SOURCES)}")
        self.root, self.source, self.normalize = Path(root), source, normalize
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.val_size, self.split_seed = val_size, split_seed

    def prepare_data(self) -> None:
        prepare_raw(self.root / "MNIST" / "raw", self.source)

    def load(self) -> tuple[Split, Split, Split]:
        x, y = self._load(train=True)
        test = self._load(train=False)
        if not self.val_size:
            return (x, y), test, test
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(self.split_seed))
        held, kept = order[: self.val_size], order[self.val_size:]
        return (x[kept], y[kept]), (x[held], y[held]), test

    def _load(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        ds = MNIST(self.root, train=train, download=False)  # torchvision's reader of the raw idx files
        x = ds.data.unsqueeze(1).float().div(255)  # (N, 28, 28) uint8 -> (N, 1, 28, 28) in [0, 1]
        if self.normalize:
            x = (x - MEAN) / STD
        return x, ds.targets
