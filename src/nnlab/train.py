"""Train and test one model; everything it makes lands in its own run folder.

    python -m nnlab.train [overrides]          # or: make train ARGS="...", or nnlab.run([overrides])
    python -m nnlab.train model=mlp data=spiral optimizer.lr=1.0 scheduler=none trainer.max_epochs=2000
    python -m nnlab.train resume=runs/<overrides>/<time>     # continue an interrupted run exactly
    python -m nnlab.train --multirun sweep=spiral_grid       # or: make sweep SWEEP=spiral_grid

Leaves runs/<overrides>/<start time>/ holding .hydra/config.yaml (the composed config),
tensorboard/ (events), checkpoints/last.ckpt, train.log and metrics.json (final metrics, status).
"""
import contextlib
import gc
import logging
import sys
import time
import warnings
from pathlib import Path

# The command (python -m nnlab.train, not an import of it) keeps Python's garbage collector off its
# imports: the ~450k objects torch, Lightning (which imports torchmetrics, torchvision and scipy)
# and Hydra create live as long as the process, yet collecting while they loaded (~1,100 collections,
# 7 of them full) took ~1 s of a 4 s import on the 2-core VM of docs/population-evidence.md. gc.freeze() below
# then keeps them out of every later collection, the ones Python makes as it exits included (~1.5 s).
if __name__ == "__main__":
    gc.disable()
    from nnlab import busy  # before torch: OpenMP reads how idle threads wait as torch loads it
    busy.settle()
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.strategies import SingleDeviceStrategy
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from nnlab import app, busy, ddp  # ddp: DDP child processes that work in a multirun (see ddp.py)
from nnlab.callbacks import EpochLog, Figures, Pruning
from nnlab.checkpoint import Interrupt, RNGState, checkpoint_problem, is_member, resumable, stops_outside_fit
from nnlab.classifier import Classifier
from nnlab.cli import check_argv
from nnlab.config import ConfigError, check, check_size, scheduler_parts
from nnlab.errors import Interrupted, NnlabError
from nnlab.loggers import end_loggers, loggers
from nnlab.runs import (
    DIVERGED,
    FAILED,
    FINISHED,
    INTERRUPTED,
    INVALID_CONFIG,
    OK,
    PRUNED,
    FolderBusy,
    hold,
    holder,
    hparams,
    refuse_links,
    resume_line,
    run_status,
    summary,
    unclaim,
    write_json,
)

# Data sits in memory as tensors: loader workers would only add inter-process copies.
warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*LeafSpec.*is deprecated")  # Lightning 2.6 on torch 2.14, harmless
# It counts batches; fused steps (see fusable) make a batch many steps, and steps are what is logged
warnings.filterwarnings("ignore", ".*is smaller than the logging interval.*")
# A run folder is one run's: its checkpoints/ holds files only when that run continues (resume, a
# study's pruned leader), which is what the checkpoint is for
warnings.filterwarnings("ignore", "Checkpoint directory .* exists and is not empty")
log = logging.getLogger("nnlab")


def parts(cfg: DictConfig, data: L.LightningDataModule | None = None) -> tuple[L.LightningDataModule, Classifier]:
    """A run's data module and its Classifier around the net, the net's init drawn from torch's RNG as it
    stands; `data`: a data module to use instead of the config's (a population's members share one).
    The one place a run's parts are built: runs, population members and the bench's plain loop. Cheap:
    no data is read. A value that fails a class raises ConfigError."""
    try:
        data = instantiate(cfg.data) if data is None else data
        check_size(cfg.model, data.in_shape, data.num_classes)
        net = instantiate(cfg.model, in_shape=data.in_shape, num_classes=data.num_classes)
        if cfg.get("channels_last"):
            net = net.to(memory_format=torch.channels_last)
        if cfg.get("compile"):  # in place: the state dict's names stay net.*, checkpoints load into eager models
            net.compile(mode=None if cfg.compile is True else cfg.compile)
        scheduler, interval = scheduler_parts(cfg.get("scheduler"))
        scheduler = instantiate(scheduler)
        if check := getattr(getattr(scheduler, "func", None), "check", None):  # what it reads, before any work
            check(**scheduler.keywords)
        module = Classifier(net, instantiate(cfg.optimizer), scheduler, l2=cfg.l2,
                            scheduler_interval=interval, config=OmegaConf.to_container(cfg, resolve=True))
    except InstantiationException as e:  # Hydra's multi-line wrapper: keep the cause's one line
        raise ConfigError(str(e.__cause__ or e).splitlines()[0]) from e
    return data, module


def build(cfg: DictConfig) -> tuple[L.LightningDataModule, Classifier, L.Trainer]:
    """A run's data, module and Trainer (cheap: no data is read); bad values raise ConfigError here."""
    data, module = parts(cfg)
    try:
        trainer = instantiate(cfg.trainer, logger=loggers(cfg) or False,
                              callbacks=[instantiate(c) for c in cfg.callbacks.values()])
    except InstantiationException as e:
        raise ConfigError(str(e.__cause__ or e).splitlines()[0]) from e
    data.fused = module.fused = cfg.fused and fusable(module, trainer)
    return data, module, trainer


# What fused steps are known to handle, each tested bitwise against Lightning's loop: anything else
# (a strategy, precision, callback or setting not listed) takes Lightning's loop, a step a batch.
FUSABLE_PRECISION = ("32-true", "bf16-mixed")
FUSABLE_CALLBACKS = (ModelCheckpoint, Interrupt, RNGState, EpochLog, Figures)


def fusable(module: Classifier, trainer: L.Trainer) -> bool:
    """Whether the module may take the training steps itself, a group of minibatches per Lightning
    batch (nnlab/fused.py): a spiral step costs less than Lightning's work per batch. What Lightning
    does per optimizer step (DDP's gradient sync, clipping, accumulation, fp16 loss scaling) needs its
    automatic optimization, a step a batch; so do limits and validation intervals counted in batches
    (fused, a batch is many steps: only the float 1.0, "all of it", is fused; the integer 1 is one
    batch), and callbacks nnlab has not checked (they may act around each backward or step)."""
    whole = lambda v: type(v) is float and v == 1.0  # noqa: E731
    return (isinstance(trainer.strategy, SingleDeviceStrategy) and trainer.precision in FUSABLE_PRECISION
            and not trainer.gradient_clip_val and trainer.accumulate_grad_batches == 1
            and whole(trainer.limit_train_batches) and whole(trainer.val_check_interval)
            and not trainer.fast_dev_run and not trainer.overfit_batches
            and all(type(c) in FUSABLE_CALLBACKS for c in trainer.callbacks))


def threads(cfg: DictConfig) -> int | None:
    """A run's torch CPU threads: threads=, else one in a sweep (--multirun), else torch's default (one
    a core). A sweep's runs share the machine (a population's processes, JOBS=N), and a convolution's
    float sums depend on the thread count: one rule under every launcher keeps a launcher from changing
    a number (tests/test_population.py trains an MNIST grid through two launchers)."""
    if cfg.threads:
        return cfg.threads
    return 1 if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN else None


def train(cfg: DictConfig, ckpt_path: str | None = None, pruning: Pruning | None = None) -> dict:
    """One run; `pruning`: a study's trial, which may stop it after an epoch (status pruned)."""
    cfg = check(cfg)  # built from here on: the resolved copy whose every _target_ was checked
    if n := threads(cfg):
        torch.set_num_threads(n)
    if said := busy.line(torch.get_num_threads()):  # the machine was busy as this process started
        log.warning(said)
    L.seed_everything(cfg.seed, workers=True, verbose=False)  # before build: init draws from it
    data, module, trainer = build(cfg)
    if pruning:  # no per-step hooks: fusing stays as build decided
        trainer.callbacks.append(pruning)
    run_dir, start = Path(cfg.run_dir), time.perf_counter()
    metrics: dict = {"status": FAILED}
    try:
        with stops_outside_fit(trainer):  # SIGTERM and Ctrl-C stop the test pass and the figures too
            trainer.fit(module, datamodule=data, ckpt_path=ckpt_path, weights_only=True)
            if trainer.received_sigterm:  # as fit ended, after its last step: the test pass would forget it
                raise KeyboardInterrupt
            # Resumed after its last epoch (stopped while testing), fit has nothing left to do and reports
            # no val/* or train/*: the checkpoint's numbers stand for them.
            metrics.update(module.fit_metrics)
            metrics.update({k: v.item() for k, v in trainer.callback_metrics.items()})
            trainer.test(module, datamodule=data, verbose=False)
        metrics.update({k: v.item() for k, v in trainer.callback_metrics.items() if k.startswith("test/")})
        metrics["test/n"] = len(data.test_set[1])  # examples scored: compare's binomial SE of test/acc
        metrics["classes"] = data.num_classes  # chance is 1 / classes: compare flags a run no better
        metrics["status"] = DIVERGED if module.diverged else PRUNED if pruning and pruning.pruned_epoch else OK
        if metrics["status"] == PRUNED:
            metrics["pruned_epoch"] = pruning.pruned_epoch
        if module.diverged:
            metrics["error"] = f"{module.diverged}: lower optimizer.lr"
        if trainer.is_global_zero:
            hparams(trainer.loggers, cfg, metrics, trainer.global_step)
    except BaseException as e:  # SIGTERM / Ctrl-C arrive as SystemExit / KeyboardInterrupt
        metrics["status"] = INTERRUPTED if isinstance(e, KeyboardInterrupt | SystemExit) else FAILED
        metrics["error"] = repr(e)
        raise
    finally:
        metrics.update(epochs=trainer.current_epoch, steps=trainer.global_step,
                       seconds=round(time.perf_counter() - start, 2), device=str(module.device),
                       threads=torch.get_num_threads(), torch=torch.__version__)
        if trainer.is_global_zero:  # DDP: every rank holds the same synced metrics; one file
            record(run_dir, metrics)  # first: a logger that fails to end loses the run no number
            end_loggers(trainer.loggers, run_dir, metrics["status"] in FINISHED)
    return metrics


def record(run_dir: Path, metrics: dict) -> None:
    """metrics.json, whole or not at all. Where even that cannot be written (a full disk), one line says
    so: raised when the run had ended well (its numbers are lost, not its reason), logged beside the
    run's own error otherwise; a sweep's report then names the run as one without metrics.json."""
    try:
        write_json(run_dir / "metrics.json", metrics)
    except OSError as e:
        lost = NnlabError(f"{run_dir / 'metrics.json'} could not be written ({e.strerror or e}); the run's status was "
                          f"{metrics['status']}: free disk space and resume the run")
        if metrics["status"] in FINISHED:
            raise lost from e
        log.error("nnlab: %s", lost)


def resume_config(run: Path, others: list[str]) -> tuple[DictConfig, str]:
    """`resume=<run folder>`: that run's own saved config and its last checkpoint. Reads only: it
    runs before Hydra writes anything (a refused resume leaves the folder as it was) and again once
    the folder's lock is held."""
    saved, ckpt = run / ".hydra" / "config.yaml", run / "checkpoints" / "last.ckpt"
    if others:
        raise ConfigError(f"resume={run} takes no other overrides (got {' '.join(others)}): "
                          "the run continues with its saved config")
    if not saved.is_file() or not ckpt.is_file():
        raise ConfigError(f"resume={run} is not a run folder with a checkpoint: "
                          "give runs/<overrides>/<time> of a run that saved checkpoints/last.ckpt")
    status = run_status(run)
    if status in FINISHED:
        raise ConfigError(f"resume={run} finished already (status {status}): nothing to resume")
    if problem := checkpoint_problem(ckpt, member=True):  # a member's continues as a population of one
        raise ConfigError(f"{problem}: resume refused, nothing in {run} was changed")
    try:
        cfg = OmegaConf.load(saved)
    except (OSError, ValueError, OmegaConfBaseException) as e:  # yaml's errors are ValueErrors
        raise ConfigError(f"resume={run}: {saved} does not load ({str(e).splitlines()[0]})") from None
    # Runs saved by nnlab versions that kept the schedule's interval at the top level
    # (scheduler_interval: step) resume with it where it lives now, in the scheduler's node.
    if isinstance(cfg, DictConfig) and "scheduler_interval" in cfg:
        interval = cfg.pop("scheduler_interval")
        if cfg.get("scheduler") is not None:
            cfg.scheduler.interval = interval
    return cfg, str(ckpt)


def check_resume(argv: list[str]) -> None:
    """Before Hydra runs (it would create the folder and write into it): a `resume=` is resumable."""
    resume = [a.split("=", 1)[1].strip("'\"") for a in argv if a.startswith("resume=")]
    if resume:
        if {"--multirun", "-m"} & set(argv):
            raise ConfigError("resume= continues one run; a sweep continues with make sweep RESUME=<sweep folder>")
        run = Path(resume[0])
        if run.is_dir():
            refuse_links(run)  # a folder made elsewhere: nothing in it may point out of it
        resume_config(run, [a for a in argv if not a.startswith(("resume=", "-"))])
        if pid := holder(run):
            raise FolderBusy(f"resume={run}: the run is still being written by process {pid}; "
                             "resume it once that process has ended")




def lightning_logs_to_hydras() -> None:
    """Lightning's warnings go where nnlab's own lines go, Hydra's job logging: the console's stdout and
    the run's train.log. Imported before logging is set up, Lightning gives its loggers stderr handlers
    of their own; without them stderr holds only problems (one line each). Its notes (INFO: the devices
    it found, "Trainer.fit stopped", an advertisement for a logging service) are left out: a run's own
    lines say what happened."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if type(h) is logging.StreamHandler]:
            logger.removeHandler(handler)
        logger.propagate = True
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)


def task(cfg: DictConfig) -> dict | None:
    """One job as Hydra runs it, alone or in a sweep: the run folder's lock, a resume, a resumed
    sweep's finished run skipped, a study's trial; then `train`. Returns metrics.json's content plus
    "run_dir" (None for a job a sweep skips). In a sweep a bad config, a crash or a busy folder is the
    job's record, not the sweep's end; alone they raise. Ctrl-C or SIGTERM raise Interrupted, naming
    the command that continues the run or sweep."""
    lightning_logs_to_hydras()
    sweeping = HydraConfig.get().mode == RunMode.MULTIRUN
    if sweeping:  # a sweep's runs write their lines into their train.log; the console has the progress line
        for handler in [h for h in logging.root.handlers if type(h) is logging.StreamHandler]:
            logging.root.removeHandler(handler)
    run_dir = Path(HydraConfig.get().runtime.output_dir)  # the folder Hydra made (cfg.run_dir is checked against it)
    # DDP's other ranks run this too, in the same folder: rank 0 holds the lock for them
    lock = hold(run_dir) if rank_zero_only.rank == 0 else contextlib.nullcontext()
    try:
        with lock:  # one writer per run folder; a sweep resumed twice at once shares out its jobs
            metrics, member = job(cfg, run_dir, sweeping)
            if metrics is None:
                return None
    except FolderBusy as e:
        if not sweeping:
            raise
        print(f"{run_dir.name}: {e}, skipped", flush=True)  # another process trains it: on the console too
        return None
    except ConfigError as e:
        if not sweeping:
            if not cfg.resume:  # a refused command leaves nothing behind
                unclaim(run_dir)
            raise
        write_json(run_dir / "metrics.json", {"status": INVALID_CONFIG, "error": str(e)})  # the sweep's end lists it
        log.error("nnlab: %s", e)
        return None
    except (KeyboardInterrupt, SystemExit) as e:  # SIGTERM / Ctrl-C: last.ckpt is at a step boundary
        raise Interrupted(resume_line(run_dir.parent if sweeping else run_dir, sweep=sweeping)) from e
    except PermissionError as e:  # a folder or file made unwritable while the run went on
        if not sweeping:
            raise NnlabError(f"{e}: make it writable and resume the run") from e
        log.exception("nnlab: %s failed; the sweep goes on", run_dir.name)  # into the run's train.log
        return None
    except Exception:
        if not sweeping:
            raise
        log.exception("nnlab: %s failed; the sweep goes on", run_dir.name)  # into the run's train.log
        return None
    if rank_zero_only.rank == 0:  # DDP: one report, from rank 0
        report(run_dir, metrics, member, sweeping)
    return {**metrics, "run_dir": str(run_dir)}


def job(cfg: DictConfig, run_dir: Path, sweeping: bool) -> tuple[dict | None, bool]:
    """The run of a job, its folder's lock held: a resume (a population member's continues alone), a
    study's trial, a resumed sweep's finished run skipped (None), else `train`. Returns its metrics,
    and whether it was a population member's continued alone."""
    ckpt_path, pruning, go_on, resuming, member = None, None, False, cfg.resume, False
    if resuming:
        cfg, ckpt_path = resume_config(run_dir, [o for o in HydraConfig.get().overrides.task
                                                 if not o.startswith("resume=")])
        member = is_member(ckpt_path)  # an interrupted population member's: it continues alone
    sweeper = HydraConfig.get().sweeper
    if sweeping and app.sweeper_says(sweeper, "study"):  # a trial of a study
        from nnlab.search import FINISH, job_trial  # Optuna: imported by a study's jobs only
        pruning = Pruning(job_trial(cfg), sweeper.metric)
        go_on = FINISH in pruning.trial.user_attrs  # a pruned leader run on to the end (Search.leader)
    if sweeping and not resuming:  # a resumed sweep skips finished runs, continues interrupted ones
        status, ckpt_path = resumable(run_dir, go_on)
        if status in FINISHED and ckpt_path is None:
            log.info(f"{run_dir.name}: {status} already, skipped")
            return None, False
    with ddp.job_scope():  # the next job of a multirun in this process starts clean
        if member:
            from nnlab.population.module import continue_alone
            return continue_alone(cfg, run_dir), True
        return train(cfg, ckpt_path, pruning), False


def report(run_dir: Path, metrics: dict, member: bool, sweeping: bool) -> None:
    """The run's last lines: its summary, a divergence's advice, a continued member's failure."""
    if member:  # its train.log has the lines (nnlab.population.member.finish): the console's
        print(summary(run_dir, metrics, ", the population's"), flush=True)
    else:
        log.info(summary(run_dir, metrics))
    if metrics["status"] == DIVERGED and not sweeping:  # a result, not a crash (a sweep's report counts it)
        print(f"nnlab: {metrics['error']}", file=sys.stderr)
    elif member and metrics["status"] == FAILED:  # continue_alone logged why, into train.log too
        raise NnlabError(f"{run_dir.name} failed: {metrics['error']}")


def main(argv: list[str]):
    """The command `python -m nnlab.train [--multirun] [overrides]`: one run, or a sweep of runs (nnlab.app).
    A refused command raises ConfigError before anything is written; one run returns what `task` returns."""
    argv = check_argv(argv)
    check_resume(argv)
    return app.run(argv, task)


def run(overrides: list[str]) -> dict:
    """One training from Python, as `python -m nnlab.train *overrides` runs it: the same config check,
    run folder and outputs. Returns metrics.json's content plus "run_dir". A bad config raises
    ConfigError (one line); Ctrl-C raises Interrupted; any other error raises as such, after the run
    folder has recorded it."""
    if flags := [o for o in overrides if o.startswith("-")]:
        raise ConfigError(f"nnlab.run takes overrides only (got {' '.join(flags)}): "
                          "sweep with python -m nnlab.train --multirun or make sweep")
    return main(list(overrides))


if __name__ == "__main__":
    from nnlab.errors import command
    gc.freeze()  # the imports' objects (see the top of this file)
    gc.enable()
    try:
        command(main)
    finally:
        gc.freeze()  # and the run's: the process ends here, nothing left to collect
