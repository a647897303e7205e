"""LightningDataModules, one file per dataset. Each exposes `in_shape` and `num_classes`."""
from nnlab.data.image import ImageDataModule
from nnlab.data.mnist import MNISTDataModule
from nnlab.data.spiral import SpiralDataModule

__all__ = ["ImageDataModule", "MNISTDataModule", "SpiralDataModule"]
