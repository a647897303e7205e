"""Shared fixtures: a shrunken config, and tiny MNIST idx files written here (tests never download)."""
import hashlib
import struct

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from nnlab import CONF_DIR
from nnlab.data import mnist_raw


def idx_images(pixels: np.ndarray) -> bytes:
    return struct.pack(">IIII", 0x0803, len(pixels), 28, 28) + pixels.astype(np.uint8).tobytes()


def idx_labels(labels: np.ndarray) -> bytes:
    return struct.pack(">II", 0x0801, len(labels)) + labels.astype(np.uint8).tobytes()


@pytest.fixture
def tiny_mnist(tmp_path, monkeypatch):
    """<root>/MNIST/raw with 120 train and 40 test random images; the expected MD5s become theirs.

    Each image's class is readable from its brightness, so a model can learn it in a few steps."""
    rng = np.random.default_rng(0)
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    files = {}
    for split, n in (("train", 120), ("t10k", 40)):
        labels = rng.integers(0, 10, n)  # unbalanced classes: accuracy must be correct/total
        pixels = rng.integers(0, 20, (n, 28, 28)) + labels[:, None, None] * 20
        files[f"{split}-images-idx3-ubyte"] = idx_images(pixels)
        files[f"{split}-labels-idx1-ubyte"] = idx_labels(labels)
    for name, data in files.items():
        (raw / name).write_bytes(data)
    monkeypatch.setattr(mnist_raw, "RAW_MD5", {k: hashlib.md5(v).hexdigest() for k, v in files.items()})
    return tmp_path / "data"


@pytest.fixture
def make_cfg(tmp_path):
    """Compose conf/train.yaml with overrides, writing into tmp_path/run, quiet and short."""
    def _make(*overrides: str):
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            return compose("train", overrides=[f"run_dir={tmp_path / 'run'}", "callbacks.epoch_log.every_n_epochs=1000",
                                               *overrides])
    return _make


@pytest.fixture
def scalars():
    """Every TensorBoard scalar of a run folder: {tag: [(step, value), ...]}."""
    def _read(run):
        events = EventAccumulator(str(run / "tensorboard"))
        events.Reload()
        return {tag: sorted((e.step, e.value) for e in events.Scalars(tag)) for tag in events.Tags()["scalars"]}
    return _read
