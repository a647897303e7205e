"""Run and sweep folders: their names, claims and locks, what a run records in them, and how files are written.

What a run records: metrics.json with its status, TensorBoard's HPARAMS row, the printed summary. How
nnlab writes any file: whole, or not at all.

A run's metrics.json holds its status, one of STATUSES. FINISHED ones are results: a resumed sweep
skips them, `resume=` refuses them, and a sweep's report does not list them as failures. Every file
nnlab writes goes through `write_atomic`; every metrics.json is read by `read_metrics`.
"""
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import yaml
from omegaconf import DictConfig, OmegaConf

from nnlab.errors import NnlabError

OK, DIVERGED, PRUNED = "ok", "diverged", "pruned"  # diverged: the loss stopped being finite; pruned: stopped early by a sweeper
INTERRUPTED, FAILED, INVALID_CONFIG = "interrupted", "failed", "invalid_config"
STATUSES = (OK, DIVERGED, PRUNED, INTERRUPTED, FAILED, INVALID_CONFIG)
FINISHED = (OK, DIVERGED, PRUNED)
SWEEPS = Path("runs/sweeps")  # where make sweep puts its folders (conf/train.yaml: hydra.sweep.dir)
NAME_BYTES = 200  # a folder name may be 255 bytes on most filesystems: room for claim_dir's _2, _3...
UNUSABLE = object()  # read_metrics's default: a file it cannot use raises


class MetricsError(NnlabError, ValueError):
    """A metrics.json nnlab cannot use: cut short (runs write it whole, so something else did), or made
    elsewhere with values of the wrong kind. The message names the file and what is wrong."""


class RunFolderError(NnlabError):
    """A run or sweep folder made elsewhere that nnlab will not read or write into: a symbolic link in it,
    or a file of the wrong kind. The message names the file and what is wrong."""


class FolderBusy(NnlabError):
    """Another process is writing this run folder."""


# -- what a run records -----------------------------------------------------------------------------

def metrics_problem(metrics) -> str | None:
    """What makes a metrics.json's content unusable, or None: an object whose status is one of STATUSES,
    whose metrics (keys with a /) are numbers, accuracies in [0, 1] (a loss may be NaN or inf: a diverged
    run's), and whose counts are whole numbers >= 0."""
    if not isinstance(metrics, dict):
        return f"a {type(metrics).__name__}, not an object"
    if "status" in metrics and metrics["status"] not in STATUSES:
        return f"status {metrics['status']!r} is not one of {', '.join(STATUSES)}"
    for key, value in metrics.items():
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if "/" in key and not number:
            return f"{key} is {value!r}, not a number"
        if key.endswith("/acc") and not 0 <= value <= 1:
            return f"{key} is {value!r}, not an accuracy in [0, 1]"
        if key in ("epochs", "steps", "test/n", "classes") and not (type(value) is int and value >= 0):
            return f"{key} is {value!r}, not a whole number >= 0"
    return None


def read_metrics(run_dir: Path, unusable=UNUSABLE) -> dict | None:
    """The one reader of a run's metrics.json: its content, or None when the run has none. A file nnlab
    cannot use (not whole JSON, a link, values of the wrong kind: metrics_problem) raises MetricsError
    naming it, or gives `unusable` where the caller says what such a file means to it (a run to train
    again, a trial without a result...)."""
    path = Path(run_dir) / "metrics.json"
    try:
        if path.is_symlink():
            raise ValueError("a symbolic link, which nnlab does not follow")
        metrics = json.loads(path.read_text())
        if problem := metrics_problem(metrics):
            raise ValueError(problem)
    except FileNotFoundError:
        return None
    except ValueError as e:  # JSONDecodeError included
        if unusable is not UNUSABLE:
            return unusable
        raise MetricsError(f"{path} is not usable ({e})") from None
    return metrics


def run_status(run_dir: Path) -> str | None:
    """The status its metrics.json records ("?" if none, or if the file cannot be used: the run counts
    as unfinished), or None when it has no metrics.json."""
    metrics = read_metrics(run_dir, unusable={})
    return None if metrics is None else metrics.get("status", "?")


def refuse_links(folder: Path) -> None:
    """Raise RunFolderError naming the first symbolic link at or below `folder`: a folder made elsewhere
    may point out of itself (its .lock, train.log or checkpoint at a file anywhere), and nnlab would read
    or write there."""
    folder = Path(folder)
    links = [folder] if folder.is_symlink() else []
    for root, dirs, names in os.walk(folder):  # links to folders are listed, never entered
        links += [Path(root, n) for n in (*dirs, *names) if Path(root, n).is_symlink()]
    if links:
        raise RunFolderError(f"{links[0]} is a symbolic link: nnlab follows no link in a run or sweep folder; "
                             "remove it, or copy the folder without links")


class RunYaml(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """YAML read by OmegaConf.load's rules, on libyaml's parser where PyYAML has it: a duplicate key is
    refused, `1e-5` is a float, a date stays a string. OmegaConf.load, then to_container, built a
    DictConfig only to turn it back into dicts: 12 ms for a run's hydra.yaml, 0.5 ms here, most of
    make compare's time on a 72-run sweep. tests/test_compare.py checks these rules against OmegaConf's
    on the same documents, so a change of OmegaConf's fails there."""

    def construct_mapping(self, node, deep: bool = False):
        keys = [k.value for k, _ in node.value if k.tag == yaml.resolver.BaseResolver.DEFAULT_SCALAR_TAG]
        if dup := next((k for i, k in enumerate(keys) if k in keys[:i]), None):
            raise yaml.constructor.ConstructorError("while constructing a mapping", node.start_mark,
                                                    f"found duplicate key {dup}", node.start_mark)
        return super().construct_mapping(node, deep=deep)


RunYaml.yaml_implicit_resolvers = {first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
                                   for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
RunYaml.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"""^(?:
     [-+]?[0-9]+(?:_[0-9]+)*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9]+(?:_[0-9]+)*(?:[eE][-+]?[0-9]+)
    |\.[0-9]+(?:_[0-9]+)*(?:[eE][-+][0-9]+)?
    |[-+]?[0-9]+(?:_[0-9]+)*(?::[0-5]?[0-9])+\.[0-9_]*
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X), list("-+0123456789."))
RunYaml.add_constructor("tag:yaml.org,2002:python/object/apply:pathlib.Path",
                        lambda loader, node: Path(*loader.construct_sequence(node)))


def read_yaml(path: Path):
    """The content of a YAML file in a run folder (.hydra/*.yaml), as plain lists and dicts (RunYaml);
    RunFolderError naming it where it is missing, a link, or not YAML."""
    path = Path(path)
    if path.is_symlink():
        raise RunFolderError(f"{path} is a symbolic link, which nnlab does not follow")
    try:
        return yaml.load(path.read_bytes(), Loader=RunYaml)
    except FileNotFoundError:
        raise RunFolderError(f"{path} is missing") from None
    except (ValueError, yaml.YAMLError) as e:  # UnicodeDecodeError is a ValueError
        why = getattr(e, "problem", None) or str(e).splitlines()[0]  # a YAML error's problem, not its context
        raise RunFolderError(f"{path} is not YAML nnlab can read ({why[:100]})") from None


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


def shown(path: Path) -> Path:
    """A folder as the person should type it: relative to where they are, where it is below it."""
    path = Path(path)
    return path.relative_to(Path.cwd()) if path.is_absolute() and path.is_relative_to(Path.cwd()) else path


def summary(run_dir: Path, metrics: dict, note: str = "") -> str:
    """The lines a finished run prints: its folder, status, final metrics and seconds."""
    numbers = "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items() if "/" in k)
    return f"\nrun folder: {shown(run_dir)}\nstatus: {metrics['status']}  {numbers}  ({metrics['seconds']} s{note})"


def resume_line(folder: Path, sweep: bool) -> str:
    """How an interrupted run or sweep ends: the command that continues it exactly."""
    if sweep:
        return (f"interrupted; finish the sweep with: make sweep RESUME={shown(folder)} (and the same SWEEP/ARGS): "
                "its interrupted runs continue from where they stopped, to the numbers of a sweep never interrupted")
    return f"interrupted; continue exactly where it stopped with: make train RESUME={shown(folder)}"


# Flat hyperparameters for TensorBoard's HPARAMS tab: (name, key in the resolved run config).
HPARAMS = [("lr", "optimizer.lr"), ("momentum", "optimizer.momentum"), ("gamma", "scheduler.gamma"),
           ("max_lr", "scheduler.max_lr"), ("batch_size", "data.batch_size"), ("epochs", "trainer.max_epochs"),
           ("seed", "seed"), ("l2", "l2"), ("hidden", "model.hidden"), ("init_std", "model.init_std")]


def hparams(loggers: list, cfg: DictConfig, metrics: dict, step: int) -> None:
    """Give every logger the run's flat hyperparameters and its final hp/val_acc, hp/test_acc and
    hp/val_loss (at the run's last step): TensorBoard's HPARAMS tab, MLflow's params and metrics, the
    CSV logger's hparams.yaml tabulate the runs of a sweep side by side."""
    from lightning.pytorch.loggers import TensorBoardLogger  # on use: reading a folder needs no Lightning
    names = {"model": cfg.model._target_, "data": cfg.data._target_, "optimizer": cfg.optimizer._target_,
             "scheduler": (cfg.get("scheduler") or {}).get("_target_", "none")}
    params = {k: v.rsplit(".", 1)[-1].removesuffix("DataModule").lower() for k, v in names.items()}
    for name, key in HPARAMS:
        value = OmegaConf.select(cfg, key, default="absent")
        if value != "absent":  # null means something here: full batch, PyTorch's default init...
            params[name] = ("full" if name == "batch_size" else "null") if value is None else value
    final = {k: v for k, v in {"hp/val_acc": metrics.get("val/acc"), "hp/test_acc": metrics.get("test/acc"),
                               "hp/val_loss": metrics.get("val/loss")}.items() if v is not None}
    for logger in loggers:
        logger.log_hyperparams(params)  # TensorBoard: hparams.yaml only (default_hp_metric off: no events)
        logger.log_metrics(final, step)
        if isinstance(logger, TensorBoardLogger):
            # TensorBoard's session_start_info and session_end_info records, without the experiment
            # summary Lightning's log_hyperparams adds: with one in every run, TensorBoard shows the first
            # run's, whose columns are sorted by name (the constants batch_size, data, epochs first).
            # Without, it builds the experiment from all the runs and puts the hparams that differ first.
            from torch.utils.tensorboard.summary import hparams as hparams_summaries
            _, start, end = hparams_summaries(params, final)
            for summary in (start, end):
                logger.experiment.file_writer.add_summary(summary, step)
        logger.save()


# -- folders: named, claimed, locked ----------------------------------------------------------------

def dirname(overrides: str) -> str:
    """Hydra resolver: a run folder's name from its overrides (`a=1,b=2`), one path part that stays
    where it is put: `/` in a value becomes %2F (and % %25), so `+tag=../../x` cannot climb out of
    runs/; a name over NAME_BYTES keeps its start and ends in a hash of the whole; none is `default`."""
    name = overrides.replace("%", "%25").replace("/", "%2F") or "default"
    if len(name.encode()) > NAME_BYTES:
        digest = hashlib.sha256(name.encode()).hexdigest()[:12]
        name = name.encode()[:NAME_BYTES - 13].decode(errors="ignore") + "~" + digest
    return name


CLAIMED: dict[str, Path] = {}  # folder claimed by this process -> the topmost folder its mkdir created


def claim_dir(resume: str | None, base: str) -> str:
    """Hydra resolver: `resume` when given, else `base`, or `base_2`, `base_3`... whichever mkdir
    creates first. Hydra names folders by the second: two sweeps started in the same second would
    otherwise write into one folder. Registered with use_cache, so every job of a sweep (Hydra copies
    the resolver cache into each job's config) sees the one folder claimed."""
    if resume:
        return resume
    path, n = Path(base), 1
    while True:
        top = next((p for p in [*reversed(path.parents), path] if not p.exists()), path)
        try:
            path.mkdir(parents=True)
            CLAIMED[str(path.resolve())] = top.resolve()
            return str(path)
        except FileExistsError:
            n += 1
            path = Path(f"{base}_{n}")


def register_resolvers() -> None:
    """The resolvers conf/train.yaml names for its folders."""
    OmegaConf.register_new_resolver("nnlab.dirname", dirname, replace=True)
    OmegaConf.register_new_resolver("nnlab.claim", claim_dir, replace=True, use_cache=True)
    OmegaConf.register_new_resolver("nnlab.subdir", lambda resume: ".hydra/resumed" if resume else ".hydra",
                                    replace=True)


@contextlib.contextmanager
def planning():
    """Within it, `${nnlab.claim:...}` gives the folder it would claim and creates nothing: a config
    resolved here says where a command would write before any folder is made."""
    OmegaConf.register_new_resolver("nnlab.claim", lambda resume, base: resume or base, replace=True)
    try:
        yield
    finally:
        OmegaConf.register_new_resolver("nnlab.claim", claim_dir, replace=True, use_cache=True)


def unclaim(run_dir: Path) -> None:
    """Remove a folder this process claimed and every folder its claim created (a refused command
    leaves nothing behind); any other folder is left alone."""
    top = CLAIMED.pop(str(Path(run_dir).resolve()), None)
    if top is None:
        return
    root = logging.getLogger()
    for handler in list(root.handlers):  # Hydra's train.log handler would make the file again
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).is_relative_to(top):
            root.removeHandler(handler)
            handler.close()
    shutil.rmtree(top, ignore_errors=True)


@contextlib.contextmanager
def hold_sweep(folder: Path):
    """One process sweeping a sweep folder at a time (a RESUME= while another runs would report the
    other's unfinished runs as failures): its lock held for the sweep, after a check that nothing in the
    folder links out of it. Raises FolderBusy naming the PID of the process holding it."""
    refuse_links(folder)
    try:
        with hold(folder):
            yield
    except FolderBusy:
        raise FolderBusy(f"the sweep folder {folder} is being swept by process {holder(folder)}: wait for it to end, "
                         "or stop it first") from None


@contextlib.contextmanager
def hold(run_dir: Path):
    """One writer per run folder: an exclusive flock on `run_dir`/.lock, held while the run trains
    (the kernel drops it when the process dies, however it dies), with the holder's PID written in
    it. Raises FolderBusy naming that PID when another process holds it."""
    fd = os.open(run_dir / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)  # a link: OSError, not followed
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise FolderBusy(f"{run_dir} is being written by process {pid} (its lock: {run_dir / '.lock'}); "
                         "wait for it to end, or stop it first") from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def holder(run_dir: Path) -> str | None:
    """The PID holding `run_dir`'s lock, or None when no process does; reads, never writes."""
    try:
        fd = os.open(run_dir / ".lock", os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None
    except BlockingIOError:
        return os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
    finally:
        os.close(fd)


def set_aside(run_dir: Path) -> None:
    """A failed or cut-off attempt's outputs, moved into attempt-<n>/ (never overwritten) so that the
    run starts over in its folder; its .hydra/, train.log and lock stay."""
    leftovers = [p for p in run_dir.iterdir()
                 if p.name not in (".hydra", "train.log", ".lock") and not p.name.startswith("attempt-")]
    if leftovers:
        old = run_dir / f"attempt-{1 + sum(1 for _ in run_dir.glob('attempt-*'))}"
        old.mkdir()
        for item in leftovers:
            shutil.move(item, old / item.name)


def latest_sweep(root: Path = SWEEPS) -> Path:
    """The sweep folder started last: a folder holding multirun.yaml, which a sweep writes as it starts
    (summaries written into runs/sweeps/ itself or into an older sweep do not make it the latest)."""
    sweeps = sorted(Path(root).glob("*/multirun.yaml"), key=lambda p: p.stat().st_mtime)
    if not sweeps:
        raise NnlabError(f"no sweep folder under {root}: run one first (make sweep), or give DIR=<folder>")
    return sweeps[-1].parent


def sweep_folder(folder: Path | None) -> Path:
    """A tool's folder argument: the one given, which must exist, or the latest sweep."""
    if folder is None:
        return latest_sweep()
    if not Path(folder).is_dir():
        raise NnlabError(f"no such folder: {folder} (sweeps land in {SWEEPS}/<time>)")
    return Path(folder)
