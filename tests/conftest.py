"""Shared fixtures: a shrunken config, tiny MNIST idx files written here (tests never download), and
the commands run in this process (`cli`) or, for the few end-to-end smoke tests, in a fresh one."""
import contextlib
import dataclasses
import hashlib
import importlib
import io
import json
import logging
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from nnlab import CONF_DIR, errors, runs
from nnlab.data import mnist_raw

runs.register_resolvers()  # the ones conf/train.yaml names, for configs composed here
if os.environ.get("PYTEST_XDIST_WORKER"):  # make test: a worker a core, where two threads each would
    torch.set_num_threads(1)                # take turns on both cores (a test compares within its worker)


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


# A tiny spiral run: 2 epochs of 3 full-batch steps
SPIRAL = ["data=spiral", "model=mlp", "model.init_std=0.01", "optimizer.lr=1.0", "scheduler=none",
          "trainer.max_epochs=2", "data.steps_per_epoch=3"]


@pytest.fixture
def interrupted_run(make_cfg, tmp_path):
    """A finished tiny spiral run made to look interrupted, with its config saved as Hydra saves it."""

    from omegaconf import OmegaConf

    from nnlab.train import train
    cfg = make_cfg(*SPIRAL)
    train(cfg)
    run = tmp_path / "run"
    (run / ".hydra").mkdir()
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    metrics = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").write_text(json.dumps({**metrics, "status": "interrupted"}))
    return run


@pytest.fixture
def scalars():
    """Every TensorBoard scalar of a run folder: {tag: [(step, value), ...]}."""
    def _read(run):
        events = EventAccumulator(str(run / "tensorboard"))
        events.Reload()
        return {tag: sorted((e.step, e.value) for e in events.Scalars(tag)) for tag in events.Tags()["scalars"]}
    return _read


def wandb_logged(run: Path) -> list[dict]:
    """What logger=wandb recorded offline in a run folder, a dict a W&B run (a resumed run adds one), in
    the order they ran: {"run": (id, name, project), "config": {key: value}, "history": [{key: value},
    ...] without wandb's own timestamps}, read from wandb/offline-run-*/run-*.wandb. Only wandb's Go
    core reads these files: they are LevelDB's log
    format (32 KiB blocks; records, or parts of one, each after a 7-byte header: CRC, length, kind)
    after a 7-byte ":W&B" header, holding wandb's Record protobufs (wandb.proto). Read here for the
    tests alone: a wandb release that changes the format fails them here, by name."""
    return [wandb_file(path) for path in sorted((run / "wandb").glob("offline-run-*/run-*.wandb"))]


def wandb_file(path: Path) -> dict:
    from wandb.proto import wandb_internal_pb2
    data, pos, part, out = path.read_bytes(), 7, b"", {"config": {}, "history": []}
    assert data[:4] == b":W&B", f"{path} does not start as the wandb files this reader knows"
    while pos + 7 <= len(data):
        if (left := 32768 - pos % 32768) < 7 or data[pos:pos + 7] == bytes(7):  # a block's padding
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        part, pos = part + data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # a whole record, or its last part
            record = wandb_internal_pb2.Record.FromString(part)
            part, what = b"", record.WhichOneof("record_type")
            if what == "run":
                out["run"] = (record.run.run_id, record.run.display_name, record.run.project)
            elif what == "config":
                out["config"].update({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                                      for i in record.config.update})
            elif what == "history":
                row = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
                out["history"].append({k: v for k, v in row.items() if k not in ("_timestamp", "_runtime")})
    return out


@dataclasses.dataclass
class Done:
    """What a command left: its exit code and what it printed."""
    returncode: int
    stdout: str
    stderr: str


def in_process(module: str, *args: str, cwd: Path | None = None) -> Done:
    """`python -m <module> *args` run in this process, as its __main__ runs it (nnlab.errors.command):
    its exit code, stdout and stderr. The folder, sys.path, logging and torch's thread count are put back
    after it, as a fresh process would have them for the next command."""
    main = importlib.import_module(module).main
    folder, path = os.getcwd(), sys.path[:]
    handlers, level, threads = logging.root.handlers[:], logging.root.level, torch.get_num_threads()
    out, err = io.StringIO(), io.StringIO()
    try:
        if cwd is not None:  # python -m puts the folder it runs in first on sys.path
            os.chdir(cwd)
            sys.path.insert(0, str(cwd))
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = errors.call(main, list(args))
    finally:
        os.chdir(folder)
        sys.path[:] = path
        logging.root.handlers[:] = handlers
        logging.root.setLevel(level)
        torch.set_num_threads(threads)
    return Done(code, out.getvalue(), err.getvalue())


@pytest.fixture
def cli():
    """in_process, as a fixture."""
    return in_process


def fresh_process(module: str, *args: str, cwd: Path, **kw) -> subprocess.CompletedProcess:
    """`python -m <module> *args` as a person runs it: a new process (the smoke tests, the slow tier)."""
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, **kw)


def make_dry_run(*args: str) -> subprocess.CompletedProcess:
    """`make -n *args` in the repository: what a Make target would run. Without the variables of a make
    this suite may run under (make test ARGS=...): make hands them to its recipes' environment, where a
    nested make would take them for its own."""
    root = Path(__file__).parents[1]
    makefile = set(re.findall(r"^([A-Z_]+)\s*[:?]?=", (root / "Makefile").read_text(), re.M))
    drop = makefile | {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"}
    return subprocess.run(["make", "-n", *args], cwd=root, capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in os.environ.items() if k not in drop})


def one_line_refusal(done, starts: str) -> None:
    """The command refused in one line on stderr, `nnlab: <starts>...`, exit 1, no traceback."""
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and done.stderr.startswith(f"nnlab: {starts}"), \
        done.stderr[-2000:]
