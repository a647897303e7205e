"""The two-layer MLP of the lecture: one hidden layer of ReLUs."""
import math

from torch import Tensor, nn

from nnlab.models.init import normal_init


class MLP(nn.Module):
    """The lecture's two-layer net: flatten -> Linear(in, hidden) -> ReLU -> Linear(hidden, classes).
    batch_norm=True adds a BatchNorm1d over the hidden units, before the ReLU."""

    # Read by nnlab.population: members can train stacked (a forward of the parameters alone, no randomness;
    # batch_norm=False: no buffers), their forwards vmapped into one.
    stackable, vmap_on_cpu = True, True

    def __init__(self, in_shape: tuple[int, ...] = (1, 28, 28), num_classes: int = 10,
                 hidden: int = 100, init_std: float | None = None, batch_norm: bool = False):
        super().__init__()
        if hidden < 1:
            raise ValueError(f"model.hidden must be a positive number of units, got {hidden}")
        self.fc1 = nn.Linear(math.prod(in_shape), hidden)
        self.norm = nn.BatchNorm1d(hidden) if batch_norm else nn.Identity()
        self.fc2 = nn.Linear(hidden, num_classes)
        if init_std is not None:  # None keeps PyTorch's default (Kaiming-uniform) init
            normal_init(self, init_std)

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm(self.fc1(x.flatten(1))).relu()  # (B, in) -> (B, hidden)
        return self.fc2(h)                 # (B, classes) logits
