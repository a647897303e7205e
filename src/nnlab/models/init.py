from torch import nn


def normal_init(module: nn.Module, std: float) -> None:
    """The spiral notebook's init: every weight drawn as std * randn, every bias 0."""
    for name, p in module.named_parameters():
        nn.init.zeros_(p) if name.endswith("bias") else nn.init.normal_(p, 0.0, std)
