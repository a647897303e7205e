"""Plain nn.Modules. Each takes the data's `in_shape` and `num_classes`; none knows of training."""
from nnlab.models.cnn import CNN
from nnlab.models.linear import Linear
from nnlab.models.mlp import MLP

__all__ = ["CNN", "Linear", "MLP"]
