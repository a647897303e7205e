"""The spiral notebook's weight init, shared by the models that offer it (`init_std`)."""
from torch import nn


def normal_init(module: nn.Module, std: float) -> None:
    """The spiral notebook's init: every layer's weight drawn as std * randn, its bias 0 (a batch
    norm keeps its own: scale 1, shift 0)."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear | nn.Conv2d):
            nn.init.normal_(layer.weight, 0.0, std)
            nn.init.zeros_(layer.bias)
