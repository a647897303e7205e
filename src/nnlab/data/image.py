"""Any torchvision image dataset, held in memory as float tensors.

A new one is a subclass naming the torchvision class and its shape, and a yaml in conf/data/
(FashionMNIST, KMNIST, CIFAR-10 alike).

    class FashionMNISTDataModule(ImageDataModule):
        dataset, in_shape, num_classes = torchvision.datasets.FashionMNIST, (1, 28, 28), 10
"""
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torchvision.datasets import VisionDataset

from nnlab.data.loader import Split, TensorDataModule


class ImageDataModule(TensorDataModule):
    """Batches of (B, C, H, W) float images in [0, 1] (ToTensor's scaling) and int64 labels.

    val_size images are held out of the training set by a split seeded with split_seed, so model
    choice never sees the test set; val_size=0 trains on all of it and validates on the test set.
    train_images=N trains on the first N images of the training split only (quick runs and tests; the
    validation split stays as it is); null trains on all of it.
    normalize=True standardises each channel with `mean` and `std` (of the training pixels in [0, 1]).
    prepare_data fetches the files: torchvision's own download when `download` is true; a subclass
    may fetch them its own way (MNIST: a verified offline source)."""

    dataset: type[VisionDataset]  # a torchvision class taking (root, train=..., download=...)
    in_shape: tuple[int, int, int]
    num_classes: int
    train_size: int | None = None  # images in the training split, when known: val_size is checked against it

    def __init__(self, root: str = "data", batch_size: int = 64, val_size: int = 5000, split_seed: int = 0,
                 normalize: bool = False, mean: list[float] | None = None, std: list[float] | None = None,
                 download: bool = False, eval_batch_size: int = 1000, train_images: int | None = None):
        super().__init__()
        name = type(self).__name__
        if val_size < 0 or self.train_size is not None and val_size >= self.train_size:
            raise ValueError(f"data.val_size={val_size} must be in [0, {self.train_size}): 0 validates on the test set")
        if train_images is not None and train_images < 1:
            raise ValueError(f"data.train_images={train_images} must be a positive number of images, or null for all")
        if batch_size < 1 or eval_batch_size < 1:
            raise ValueError(f"data.batch_size={batch_size} must be a positive number of images")
        channels = self.in_shape[0]
        if normalize and (mean is None or std is None or len(mean) != channels or len(std) != channels
                          or min(std) <= 0):
            raise ValueError(f"data.normalize=true needs data.mean and data.std, {channels} value(s) each (std > 0), "
                             f"for {name}'s {channels} channel(s)")
        self.root, self.normalize, self.download = Path(root), normalize, download
        self.mean, self.std = mean, std
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.val_size, self.split_seed, self.train_images = val_size, split_seed, train_images

    def prepare_data(self) -> None:
        for train in (True, False):
            try:
                self.dataset(self.root, train=train, download=self.download)
            except RuntimeError as e:  # torchvision: "Dataset not found or corrupted..."
                raise FileNotFoundError(f"{self.dataset.__name__} is not in {self.root}: put its files there, or "
                                        "set data.download=true to fetch them with torchvision") from e

    def describe(self) -> str:
        """What `python -m nnlab.data` prints once prepare_data has run."""
        return f"{self.dataset.__name__} files ready in {self.root}"

    def load(self) -> tuple[Split, Split, Split]:
        x, y = self.read(train=True)
        test = self.read(train=False)
        if not self.val_size:
            return (x[:self.train_images], y[:self.train_images]), test, test
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(self.split_seed))
        held, kept = order[: self.val_size], order[self.val_size:][:self.train_images]
        return (x[kept], y[kept]), (x[held], y[held]), test

    def read(self, train: bool) -> tuple[Tensor, Tensor]:
        ds = self.dataset(self.root, train=train, download=False)
        x = torch.as_tensor(np.asarray(ds.data))  # uint8: (N, H, W) (MNIST-like) or (N, H, W, C) (CIFAR-like)
        # (N, C, H, W) in [0, 1], scaled and normalised in place: no temporary the size of the set
        # (MNIST's 60,000 training images: 188 MB each)
        x = (x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)).float().div_(255)
        if tuple(x.shape[1:]) != tuple(self.in_shape):
            raise ValueError(f"{self.dataset.__name__} in {self.root} has images of shape {tuple(x.shape[1:])}, "
                             f"not {type(self).__name__}.in_shape {tuple(self.in_shape)}")
        if self.normalize:
            x.sub_(torch.tensor(self.mean).view(-1, 1, 1)).div_(torch.tensor(self.std).view(-1, 1, 1))
        return x.contiguous(), torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)
