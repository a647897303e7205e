"""The notebook's 2-D spiral: K interleaved arms of N points, class j on arm j."""
import torch
from torch import Tensor

from nnlab.data.loader import Split, TensorDataModule


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


class SpiralDataModule(TensorDataModule):
    """Train on the draw with `seed`; validate and test on fresh draws (seed + 1, seed + 2), so
    val/acc and test/acc measure generalisation while train/acc is the fit to the own set.
    batch_size=None is full-batch gradient descent, as the notebook; an epoch is then
    steps_per_epoch such steps (null: FULL_BATCH_STEPS; Lightning's per-epoch work would otherwise
    dominate). With a batch size an epoch is one shuffled pass, and steps_per_epoch is refused."""

    in_shape = (2,)
    FULL_BATCH_STEPS = 100

    def __init__(self, n: int = 100, k: int = 3, seed: int = 0, noise: float = 0.2,
                 batch_size: int | None = None, steps_per_epoch: int | None = None):
        super().__init__()
        if n < 1 or k < 2:
            raise ValueError(f"data.n={n}, data.k={k}: need at least 1 point per class and 2 classes")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"data.batch_size={batch_size} must be positive, or null for full batch")
        if batch_size is not None and steps_per_epoch is not None:
            raise ValueError(f"data.steps_per_epoch={steps_per_epoch} counts full-batch steps, but data.batch_size="
                             f"{batch_size} makes an epoch one pass over the data: drop data.steps_per_epoch "
                             "(null), or train full batch with data.batch_size=null")
        self.n, self.k, self.seed, self.noise, self.batch_size = n, k, seed, noise, batch_size
        self.num_classes, self.eval_batch_size = k, n * k
        # Full batch: the same batch steps_per_epoch times (Lightning's per-epoch work would dominate
        # one-step epochs); minibatches: one shuffled pass per epoch.
        self.train_repeat = (steps_per_epoch or self.FULL_BATCH_STEPS) if batch_size is None else 1

    def load(self) -> tuple[Split, Split, Split]:
        return tuple(make_spiral(self.n, self.k, s, self.noise) for s in (self.seed, self.seed + 1, self.seed + 2))
