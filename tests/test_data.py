"""A dataset beyond MNIST is one class and one yaml: added here in-test, trained end to end."""
import importlib
import sys
import types

import numpy as np
import pytest
import torch
from conftest import idx_images, idx_labels

import nnlab.data
from nnlab.data import MNISTDataModule
from nnlab.train import train

# What a user adds to src/nnlab/data/: one file each (nnlab builds only classes defined in its own
# package). Written into a folder on nnlab.data's package path, so they import as nnlab.data.<file>.
FASHION = """from torchvision.datasets import FashionMNIST

from nnlab.data import ImageDataModule


class FashionMNISTDataModule(ImageDataModule):
    dataset, in_shape, num_classes = FashionMNIST, (1, 28, 28), 10
"""

COLOR = """import numpy as np
from torchvision.datasets import VisionDataset

from nnlab.data import ImageDataModule


class TinyColor(VisionDataset):
    \"\"\"CIFAR-10's format in miniature: data (N, 32, 32, 3) uint8, targets a list; the class is the
    dominant colour channel.\"\"\"

    def __init__(self, root, train: bool = True, download: bool = False):
        super().__init__(root)
        rng = np.random.default_rng(0 if train else 1)
        self.targets = list(rng.integers(0, 3, 60 if train else 30))
        self.data = rng.integers(0, 60, (len(self.targets), 32, 32, 3), dtype=np.uint8)
        for i, t in enumerate(self.targets):
            self.data[i, :, :, t] += 150


class ColorDataModule(ImageDataModule):
    dataset, in_shape, num_classes = TinyColor, (3, 32, 32), 3
"""


def add_dataset(tmp_path, monkeypatch, name: str, source: str, yaml: str) -> tuple[types.ModuleType, str]:
    """The class's file as nnlab.data.<name>, its yaml into a config folder on Hydra's search path."""
    (tmp_path / "pkg").mkdir(exist_ok=True)
    (tmp_path / "pkg" / f"{name}.py").write_text(source)
    monkeypatch.setattr(nnlab.data, "__path__", [*nnlab.data.__path__, str(tmp_path / "pkg")])
    monkeypatch.setitem(sys.modules, f"nnlab.data.{name}", None)  # undone after the test: no module left
    del sys.modules[f"nnlab.data.{name}"]
    module = importlib.import_module(f"nnlab.data.{name}")
    (tmp_path / "conf" / "data").mkdir(parents=True, exist_ok=True)
    (tmp_path / "conf" / "data" / f"{name}.yaml").write_text(yaml)
    return module, f"hydra.searchpath=[file://{tmp_path / 'conf'}]"


def test_a_dataset_added_with_one_class_and_one_yaml_trains_end_to_end(make_cfg, tmp_path, monkeypatch):
    raw = tmp_path / "data" / "FashionMNIST" / "raw"  # torchvision's own layout and idx format
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 120), ("t10k", 40)):
        labels = rng.integers(0, 10, n)
        (raw / f"{split}-images-idx3-ubyte").write_bytes(idx_images(rng.integers(0, 20, (n, 28, 28)) + labels[:, None, None] * 20))
        (raw / f"{split}-labels-idx1-ubyte").write_bytes(idx_labels(labels))
    _, path = add_dataset(tmp_path, monkeypatch, "fashion_mnist", FASHION,
                          f"_target_: nnlab.data.fashion_mnist.FashionMNISTDataModule\nroot: {tmp_path / 'data'}\nbatch_size: 20\n"
                       "val_size: 20\nnormalize: true\nmean: [0.2]\nstd: [0.3]\n")
    metrics = train(make_cfg(path, "data=fashion_mnist", "optimizer=adam", "optimizer.lr=0.01", "trainer.max_epochs=3"))
    assert metrics["status"] == "ok" and metrics["steps"] == 3 * 5  # 100 training images, batch 20
    assert metrics["test/acc"] > 0.3  # brightness encodes the class: well above chance (0.1)
    assert (tmp_path / "run" / "first_batch.png").exists()


def test_the_cnn_and_figures_take_three_channel_images(make_cfg, tmp_path, monkeypatch):
    _, path = add_dataset(tmp_path, monkeypatch, "color", COLOR,
                          "_target_: nnlab.data.color.ColorDataModule\nbatch_size: 10\nval_size: 10\n")
    metrics = train(make_cfg(path, "data=color", "model=cnn", "model.batch_norm=true", "optimizer=adam",
                             "optimizer.lr=0.01", "trainer.max_epochs=2"))
    assert metrics["status"] == "ok" and metrics["steps"] == 2 * 5 and metrics["test/acc"] > 0.5  # chance 1/3
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["state_dict"]["net.fc.weight"].shape == (3, 20 * 5 * 5)  # 32 -> 28 -> 14 -> 10 -> 5
    assert (tmp_path / "run" / "first_batch.png").stat().st_size > 1000


def test_normalize_needs_stats_for_every_channel(make_cfg, tmp_path, monkeypatch):
    color, _ = add_dataset(tmp_path, monkeypatch, "color", COLOR, "")
    with pytest.raises(ValueError, match="data.normalize=true needs data.mean and data.std, 3 value"):
        color.ColorDataModule(normalize=True, mean=[0.5], std=[0.2])


@pytest.mark.parametrize("args,line", [
    (["data=spiral"], "nothing to fetch: this data is generated"),
    (["data.root={root}"], "MNIST raw files verified in {root}/MNIST/raw")])
def test_fetching_names_what_it_fetched(args, line, tiny_mnist, cli):
    done = cli("nnlab.data.__main__", *(a.format(root=tiny_mnist) for a in args))
    assert done.returncode == 0 and done.stdout.strip().splitlines()[-1] == line.format(root=tiny_mnist)


def test_a_dataset_not_there_is_one_line_naming_the_fix(tmp_path, monkeypatch, capsys):
    fashion, _ = add_dataset(tmp_path, monkeypatch, "fashion_mnist", FASHION, "")
    with pytest.raises(FileNotFoundError, match=f"FashionMNIST is not in {tmp_path}: .*data.download=true"):
        fashion.FashionMNISTDataModule(root=str(tmp_path)).prepare_data()


def test_train_images_cuts_the_training_split_and_leaves_validation_as_it_is(tiny_mnist):
    whole, cut = (MNISTDataModule(root=str(tiny_mnist), val_size=20, train_images=n) for n in (None, 30))
    for data in (whole, cut):
        data.prepare_data()
        data.setup("fit")
    assert len(whole.train_set[1]) == 100 and len(cut.train_set[1]) == 30
    assert torch.equal(cut.train_set[0], whole.train_set[0][:30]) and torch.equal(cut.val_set[0], whole.val_set[0])
    with pytest.raises(ValueError, match="data.train_images=0 must be a positive number"):
        MNISTDataModule(root=str(tiny_mnist), train_images=0)
