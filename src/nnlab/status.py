"""What a run records of itself, and how nnlab writes any file: whole, or not at all.

A run's metrics.json holds its status, one of STATUSES. FINISHED ones are results: a resumed sweep
skips them, `resume=` refuses them, and a sweep's report does not list them as failures.
"""
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

OK, DIVERGED, PRUNED = "ok", "diverged", "pruned"  # diverged: the loss stopped being finite; pruned: stopped early by a sweeper
INTERRUPTED, FAILED, INVALID_CONFIG = "interrupted", "failed", "invalid_config"
STATUSES = (OK, DIVERGED, PRUNED, INTERRUPTED, FAILED, INVALID_CONFIG)
FINISHED = (OK, DIVERGED, PRUNED)


class MetricsError(ValueError):
    """A metrics.json that is not whole JSON: runs write it atomically, so something else cut it short."""


def read_metrics(run_dir: Path) -> dict | None:
    """The one reader of a run's metrics.json: its content, or None when the run has none. A file
    that is not a whole JSON object raises MetricsError, one line naming it."""
    path = Path(run_dir) / "metrics.json"
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        metrics = json.loads(text)
    except ValueError as e:
        raise MetricsError(f"{path} is not whole JSON ({e})") from None
    if not isinstance(metrics, dict):
        raise MetricsError(f"{path} is not whole JSON (a {type(metrics).__name__}, not an object)")
    return metrics


def run_status(run_dir: Path) -> str | None:
    """The status its metrics.json records ("?" if none, or if the file is not whole JSON: the run
    counts as unfinished), or None when it has no metrics.json."""
    try:
        metrics = read_metrics(run_dir)
    except MetricsError:
        return "?"
    return None if metrics is None else metrics.get("status", "?")


def write_atomic(path: Path, data: bytes | Callable[[BinaryIO], None]) -> None:
    """Write `data` (bytes, or a function writing into the open file) to a temp file beside `path`
    (the same filesystem), fsync it, and rename it over `path`: a full disk or a kill mid-write leaves
    the old file whole (or none), never half a file, and no temp file behind. OSError propagates."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            data(f) if callable(data) else f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fd = os.open(path.parent, os.O_RDONLY)  # make the rename itself durable
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path: Path, obj: dict) -> None:
    write_atomic(path, (json.dumps(obj, indent=2) + "\n").encode())
