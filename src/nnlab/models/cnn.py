from torch import Tensor, nn


class CNN(nn.Module):
    """The notebook's CNN, layer for layer. Takes 1x28x28 images only.

    (B,1,28,28) -conv5-> (B,10,24,24) -pool2-> (B,10,12,12) -conv5-> (B,20,8,8) -pool2-> (B,20,4,4)
    -flatten-> (B,320) -fc-> (B,classes)
    """

    IN_SHAPE = (1, 28, 28)

    def __init__(self, in_shape: tuple[int, ...] = IN_SHAPE, num_classes: int = 10):
        super().__init__()
        if tuple(in_shape) != self.IN_SHAPE:
            raise ValueError(f"model=cnn takes 1x28x28 images but the data gives shape {tuple(in_shape)}: "
                             "use data=mnist, or model=linear|mlp for this data")
        self.conv1 = nn.Sequential(nn.Conv2d(1, 10, kernel_size=5), nn.ReLU(), nn.MaxPool2d(2))
        self.conv2 = nn.Sequential(nn.Conv2d(10, 20, kernel_size=5), nn.ReLU(), nn.MaxPool2d(2))
        self.fc = nn.Linear(320, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.conv2(self.conv1(x)).flatten(1))
