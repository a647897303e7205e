"""The linear (softmax) classifier: one linear layer on the flattened input."""
import math

from torch import Tensor, nn

from nnlab.models.init import normal_init


class Linear(nn.Module):
    """Softmax regression: flatten -> Linear(in, classes). Returns logits (B, classes)."""

    # Read by nnlab.population: members can train stacked (a forward of the parameters alone, no randomness),
    # their forwards vmapped into one.
    stackable, vmap_on_cpu = True, True

    def __init__(self, in_shape: tuple[int, ...] = (1, 28, 28), num_classes: int = 10,
                 init_std: float | None = None):
        super().__init__()
        self.fc = nn.Linear(math.prod(in_shape), num_classes)
        if init_std is not None:  # None keeps PyTorch's default (Kaiming-uniform) init
            normal_init(self, init_std)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x.flatten(1))  # (B, *in_shape) -> (B, in) -> (B, classes)
