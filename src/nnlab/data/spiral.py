"""The notebook's 2-D spiral: K interleaved arms of N points, class j on arm j."""
import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from nnlab.data.loader import tensor_loader


def make_spiral(n: int = 100, k: int = 3, seed: int = 0, noise: float = 0.2) -> tuple[Tensor, Tensor]:
    """(X, y): X (n*k, 2) float32 points, y (n*k,) int64 labels, class-major as in the notebook.

    For class j: r = linspace(0, 1, n), t = linspace(4j, 4(j+1), n) + noise * randn(n),
    x = (r sin t, r cos t).
    """
    g = torch.Generator().manual_seed(seed)
    r = torch.linspace(0.0, 1.0, n)
    xs, ys = [], []
    for j in range(k):
        t = torch.linspace(4.0 * j, 4.0 * (j + 1), n) + noise * torch.randn(n, generator=g)
        xs.append(torch.stack([r * t.sin(), r * t.cos()], dim=1))
        ys.append(torch.full((n,), j, dtype=torch.int64))
    return torch.cat(xs), torch.cat(ys)


class SpiralDataModule(L.LightningDataModule):
    """Train on the draw with `seed`; validate and test on fresh draws (seed + 1, seed + 2), so
    val/acc and test/acc measure generalisation while train/acc is the fit to the own set.
    batch_size=None is full-batch gradient descent, as the notebook; an epoch is then
    steps_per_epoch such steps (Lightning's per-epoch work would otherwise dominate)."""

    in_shape = (2,)

    def __init__(self, n: int = 100, k: int = 3, seed: int = 0, noise: float = 0.2,
                 batch_size: int | None = None, steps_per_epoch: int = 100):
        super().__init__()
        if n < 1 or k < 2:
            raise ValueError(f"data.n={n}, data.k={k}: need at least 1 point per class and 2 classes")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"data.batch_size={batch_size} must be positive, or null for full batch")
        self.n, self.k, self.seed, self.noise, self.batch_size = n, k, seed, noise, batch_size
        self.steps_per_epoch = steps_per_epoch
        self.num_classes = k

    def setup(self, stage: str | None = None) -> None:
        self.train_set, self.val_set, self.test_set = (
            make_spiral(self.n, self.k, s, self.noise) for s in (self.seed, self.seed + 1, self.seed + 2))

    def train_dataloader(self) -> DataLoader:
        # Full batch needs no shuffle (every step sees the same mean gradient); minibatches do.
        if self.batch_size is None:  # the same full batch, steps_per_epoch times
            return DataLoader(TensorDataset(*self.train_set), batch_size=None,
                              sampler=[slice(None)] * self.steps_per_epoch)
        return tensor_loader(*self.train_set, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return tensor_loader(*self.val_set, self.n * self.k)

    def test_dataloader(self) -> DataLoader:
        return tensor_loader(*self.test_set, self.n * self.k)
