"""What a training step costs: each model bare in PyTorch against nnlab's Lightning path, and the
data loaders. Targets for speed and memory are checked here, never in a timed test.

    python -m nnlab.bench [steps=100] [repeats=3]        # make bench ARGS="steps=300"

Synthetic tensors of MNIST's and the spiral's shapes (speed does not depend on pixel values), on
the GPU when there is one, else the CPU. Lightning's cost per step is timed as the difference
between fits of `steps` and 2*`steps` steps, so its start-up is left out. Prints a markdown table:
median over `repeats` (min-max).
"""
import logging
import resource
import statistics
import sys
import time
import warnings

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from nnlab.classifier import Classifier
from nnlab.data.loader import TensorLoader
from nnlab.models import CNN, MLP, Linear

CASES = [("linear", Linear, "mnist"), ("mlp", MLP, "mnist"), ("cnn", CNN, "mnist"),
         ("linear", Linear, "spiral"), ("mlp", MLP, "spiral")]
SHAPES = {"mnist": ((1, 28, 28), 10, 64), "spiral": ((2,), 3, 300)}  # in_shape, classes, batch


def bare_ms(make, in_shape, classes, batch, steps, device) -> float:
    net = make(in_shape=in_shape, num_classes=classes).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)
    x, y = torch.rand(batch, *in_shape, device=device), torch.randint(0, classes, (batch,), device=device)
    def run(n):
        for _ in range(n):
            opt.zero_grad()
            F.cross_entropy(net(x), y).backward()
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
    run(10)  # warm-up
    start = time.perf_counter()
    run(steps)
    return (time.perf_counter() - start) / steps * 1e3


def lightning_ms(make, in_shape, classes, batch, steps, device) -> float:
    def fit(n):
        data = TensorLoader(torch.rand(batch * 8, *in_shape), torch.randint(0, classes, (batch * 8,)), batch)
        module = Classifier(make(in_shape=in_shape, num_classes=classes), classes, torch.optim.SGD)
        trainer = L.Trainer(max_steps=n, accelerator=device.type, devices=1, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                            limit_val_batches=0, deterministic=True, log_every_n_steps=100)
        start = time.perf_counter()
        trainer.fit(module, train_dataloaders=data)
        return time.perf_counter() - start
    return (fit(2 * steps) - fit(steps)) / steps * 1e3


def loader_us(kind: str, n: int = 10_000) -> float:
    x, y = torch.rand(n, 1, 28, 28), torch.randint(0, 10, (n,))
    loader = (TensorLoader(x, y, 64, shuffle=True) if kind == "nnlab"  # one index op per batch
              else DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True))  # per-sample fetch + collate
    start = time.perf_counter()
    for _ in loader:
        pass
    return (time.perf_counter() - start) / n * 1e6


def spread(values: list[float], fmt: str) -> str:
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def main(steps: int = 100, repeats: int = 3) -> None:
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{steps} steps x {repeats} repeats\n")
    print("| model | data | batch | bare PyTorch ms/step | nnlab (Lightning) ms/step |\n|---|---|---|---|---|")
    for name, make, data in CASES:
        in_shape, classes, batch = SHAPES[data]
        bare = [bare_ms(make, in_shape, classes, batch, steps, device) for _ in range(repeats)]
        lit = [lightning_ms(make, in_shape, classes, batch, steps, device) for _ in range(repeats)]
        print(f"| {name} | {data} | {batch} | {spread(bare, '.2f')} | {spread(lit, '.2f')} |", flush=True)
    print("\n| MNIST-shaped loader, batch 64 | us/sample |\n|---|---|")
    for kind in ("nnlab", "per-sample"):
        print(f"| {kind} | {spread([loader_us(kind) for _ in range(repeats)], '.2f')} |")
    print(f"\npeak resident memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    args = dict(a.split("=", 1) for a in sys.argv[1:])
    unknown = set(args) - {"steps", "repeats"}
    if unknown or not all(v.isdigit() and int(v) > 0 for v in args.values()):
        sys.exit(f"nnlab: bench takes steps=N repeats=N (positive whole numbers), got {' '.join(sys.argv[1:])}")
    main(**{k: int(v) for k, v in args.items()})
