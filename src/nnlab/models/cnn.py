"""The notebook's small CNN: two 5x5 convolutions with max-pooling, then one linear layer."""
from torch import Tensor, nn


def pooled(side: int) -> int:
    """An image side after conv5 -> pool2 -> conv5 -> pool2 (28 -> 24 -> 12 -> 8 -> 4)."""
    return ((side - 4) // 2 - 4) // 2


class CNN(nn.Module):
    """The notebook's CNN, layer for layer, on C x H x W images of any size from 16x16 up.

    (B,C,28,28) -conv5-> (B,10,24,24) -pool2-> (B,10,12,12) -conv5-> (B,20,8,8) -pool2-> (B,20,4,4)
    -flatten-> (B,320) -fc-> (B,classes); a 3x32x32 image flattens to 20*5*5 = 500.
    batch_norm=True adds a BatchNorm2d after each convolution, before its ReLU.
    """

    # Read by nnlab.population: members can train stacked (a forward of the parameters alone, no randomness;
    # batch_norm=False: no buffers), each member's forward in turn on the CPU (vmapped convolutions are slower).
    stackable, vmap_on_cpu = True, False

    def __init__(self, in_shape: tuple[int, ...] = (1, 28, 28), num_classes: int = 10, batch_norm: bool = False):
        super().__init__()
        if len(in_shape) != 3 or pooled(min(in_shape[1:])) < 1:
            raise ValueError(f"model=cnn takes C x H x W images of 16x16 pixels or more, but the data gives shape "
                             f"{tuple(in_shape)}: use image data (data=mnist), or model=linear|mlp for this data")
        channels, height, width = in_shape
        norm = nn.BatchNorm2d if batch_norm else lambda _: nn.Identity()
        self.conv1 = nn.Sequential(nn.Conv2d(channels, 10, kernel_size=5), norm(10), nn.ReLU(), nn.MaxPool2d(2))
        self.conv2 = nn.Sequential(nn.Conv2d(10, 20, kernel_size=5), norm(20), nn.ReLU(), nn.MaxPool2d(2))
        self.fc = nn.Linear(20 * pooled(height) * pooled(width), num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.conv2(self.conv1(x)).flatten(1))
