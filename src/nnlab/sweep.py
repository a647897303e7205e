"""What sweeps need beyond Hydra's multirun: folders that never collide, resumable jobs, a report
of what failed, and each run's hyperparameters in TensorBoard's HPARAMS tab.

    make sweep SWEEP=spiral_grid [JOBS=2] [RESUME=runs/sweeps/<time>]   then   make compare
"""
import contextlib
import fcntl
import hashlib
import itertools
import logging
import os
import shutil
import sys
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from nnlab import CONF_DIR
from nnlab.checkpoint import checkpoint_problem
from nnlab.status import FINISHED, INTERRUPTED, run_status

NAME_BYTES = 200  # a folder name may be 255 bytes on most filesystems: room for claim_dir's _2, _3...


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


@contextlib.contextmanager
def planning():
    """Within it, `${nnlab.claim:...}` gives the folder it would claim and creates nothing: a config
    resolved here says where a command would write before Hydra has made any folder."""
    OmegaConf.register_new_resolver("nnlab.claim", lambda resume, base: resume or base, replace=True)
    try:
        yield
    finally:
        OmegaConf.register_new_resolver("nnlab.claim", claim_dir, replace=True, use_cache=True)


def unclaim(run_dir: Path) -> None:
    """Remove a folder this process claimed and every folder its claim created (a refused command
    leaves nothing behind); any other folder is left alone."""
    top = CLAIMED.pop(str(run_dir.resolve()), None)
    if top is None:
        return
    root = logging.getLogger()
    for handler in list(root.handlers):  # Hydra's train.log handler would make the file again
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).is_relative_to(top):
            root.removeHandler(handler)
            handler.close()
    shutil.rmtree(top, ignore_errors=True)


class FolderBusy(RuntimeError):
    """Another process is writing this run folder."""


@contextlib.contextmanager
def hold(run_dir: Path):
    """One writer per run folder: an exclusive flock on `run_dir`/.lock, held while the run trains
    (the kernel drops it when the process dies, however it dies), with the holder's PID written in
    it. Raises FolderBusy naming that PID when another process holds it."""
    fd = os.open(run_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise FolderBusy(f"{run_dir} is being written by process {holder} (its lock: {run_dir / '.lock'}); "
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


def prepare_job(run_dir: Path) -> tuple[str | None, str | None]:
    """A sweep job whose folder has been used before (RESUME=): (status, checkpoint to resume from).

    Finished runs are skipped by the caller; an interrupted run continues from its last.ckpt (a step
    boundary, so exactly); anything else starts over, its old outputs moved into attempt-<n>/."""
    status, ckpt = run_status(run_dir), run_dir / "checkpoints" / "last.ckpt"
    if status in FINISHED:
        return status, None
    if status == INTERRUPTED and ckpt.exists() and checkpoint_problem(ckpt) is None:
        return status, str(ckpt)
    leftovers = [p for p in run_dir.iterdir()
                 if p.name not in (".hydra", "train.log", ".lock") and not p.name.startswith("attempt-")]
    if leftovers:  # a failed or cut-off attempt: kept beside, never overwritten
        old = run_dir / f"attempt-{1 + sum(1 for _ in run_dir.glob('attempt-*'))}"
        old.mkdir()
        for item in leftovers:
            shutil.move(item, old / item.name)
    return status, None


# Flat hyperparameters for TensorBoard's HPARAMS tab: (name, key in the resolved run config).
HPARAMS = [("lr", "optimizer.lr"), ("momentum", "optimizer.momentum"), ("gamma", "scheduler.gamma"),
           ("max_lr", "scheduler.max_lr"), ("batch_size", "data.batch_size"), ("epochs", "trainer.max_epochs"),
           ("seed", "seed"), ("l2", "l2"), ("hidden", "model.hidden"), ("init_std", "model.init_std")]


def hparams(logger, cfg: DictConfig, metrics: dict, step: int) -> None:
    """Write the run's flat hyperparameters with its final hp/val_acc, hp/test_acc and hp/val_loss (at
    the run's last step), so that TensorBoard's HPARAMS tab tabulates the runs of a sweep side by side.
    Only a TensorBoardLogger has the tab (fast_dev_run swaps in Lightning's DummyLogger)."""
    if not isinstance(logger, TensorBoardLogger):
        return
    names = {"model": cfg.model._target_, "data": cfg.data._target_, "optimizer": cfg.optimizer._target_,
             "scheduler": (cfg.get("scheduler") or {}).get("_target_", "none")}
    params = {k: v.rsplit(".", 1)[-1].removesuffix("DataModule").lower() for k, v in names.items()}
    for name, key in HPARAMS:
        value = OmegaConf.select(cfg, key, default="absent")
        if value != "absent":  # null means something here: full batch, PyTorch's default init...
            params[name] = ("full" if name == "batch_size" else "null") if value is None else value
    final = {"hp/val_acc": metrics.get("val/acc"), "hp/test_acc": metrics.get("test/acc"),
             "hp/val_loss": metrics.get("val/loss")}
    logger.log_hyperparams(params, {k: v for k, v in final.items() if v is not None}, step=step)
    logger.save()


def jobs(params: dict, overrides: list[str]) -> list[list[str]]:
    """The jobs of a multirun as Hydra's basic sweeper expands them: every combination of a grid's
    `hydra.sweeper.params` and the command line's overrides, a key on the command line replacing the
    grid's (`make sweep SWEEP=spiral_grid ARGS="seed=0"`: 24 jobs, not 72)."""
    axes = {}
    for o in OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()] + list(overrides)):
        key = o.get_key_element()
        values = o.sweep_string_iterator() if o.is_sweep_override() else [o.get_value_element_as_str()]
        axes[key] = [f"{key}={v}" for v in values]
    return [list(job) for job in itertools.product(*axes.values())]


def check_grid(grid: str | None, experiment: str | None, params: dict) -> None:
    """A grid may not sweep a key that the experiment sets (its own settings would be replaced without
    a word): refuse, naming both. `seed` is the exception, a sweep axis by nature. Keys the grid only
    fixes are no conflict: the experiment comes after the grid in conf/train.yaml's defaults, so it wins."""
    if not experiment or not params:
        return
    recipe = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "experiment" / f"{experiment}.yaml"))
    keys = {next(iter(d)).split("/")[-1] for d in recipe.pop("defaults", []) if isinstance(d, dict)}  # override /model: mlp

    def walk(node: dict, prefix: str = "") -> None:
        for k, v in node.items():
            keys.add(prefix + k)
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
    walk(recipe)
    clash = [k for k in params if k != "seed" and any(k == e or e.startswith(k + ".") or k.startswith(e + ".")
                                                      for e in keys)]
    if clash:
        sys.exit(f"nnlab: sweep={grid} sweeps {', '.join(clash)}, which experiment={experiment} sets: sweep what you "
                 f"want in ARGS alone, e.g. make sweep ARGS=\"experiment={experiment} {clash[-1]}=...\"")


class SweepReport(Callback):
    """Hydra callback: before a multirun, refuse a grid that would replace an experiment's settings and
    say how many jobs it launches and from what; after it, list the runs that failed (crashed, bad
    config, interrupted) and exit non-zero when there are any. Finished runs (ok, diverged, pruned)
    are results, not failures."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        params = dict(config.hydra.sweeper.get("params") or {})
        overrides = list(config.hydra.overrides.task)
        choices = config.hydra.runtime.choices
        check_grid(choices.get("sweep"), choices.get("experiment"), params)
        given = " ".join(overrides)
        if "_target_" in config.hydra.sweeper and config.hydra.sweeper._target_.endswith("BasicSweeper"):
            grid = " ".join(f"{k}={v}" for k, v in params.items())
            print(f"sweep: {len(jobs(params, overrides))} jobs from {given}" + (f" (grid: {grid})" if grid else ""),
                  flush=True)
        else:
            print(f"sweep: {config.hydra.sweeper._target_} over {given}", flush=True)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep = Path(config.hydra.sweep.dir)
        runs = sorted(d for d in sweep.iterdir() if (d / ".hydra").is_dir())
        status = {r: run_status(r) or "no metrics.json" for r in runs}
        failed = {r: s for r, s in status.items() if s not in FINISHED}
        counts = ", ".join(f"{sum(1 for s in status.values() if s == k)} {k}" for k in sorted(set(status.values())))
        print(f"\nsweep folder: {sweep}  ({len(runs)} runs: {counts})")
        if failed:
            for run, s in failed.items():
                print(f"  {s}: {run.name}  (see {run / 'train.log'})", file=sys.stderr)
            sys.exit(f"nnlab: {len(failed)} of {len(runs)} runs did not finish; rerun only those with: "
                     f"make sweep RESUME={sweep} (and the same SWEEP/ARGS)")
