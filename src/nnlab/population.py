"""Population sweeps: a sweep's runs that differ only in numbers train together, each still exactly its run.

    python -m nnlab.train --multirun hydra/launcher=population sweep=spiral_grid   # make sweep SWEEP=spiral_grid

They train in one process a core. Hydra's launcher for it is hydra_plugins/nnlab_population.py
(conf/hydra/launcher/population.yaml).
Jobs are grouped by everything but their per-member numbers (MEMBER_KEYS with a number for a value):
two jobs that differ in the model, hidden size, data, batch size, epochs, optimizer or scheduler
class, or any other key, are in different groups. The grouping is printed before anything trains.
A group of one, and a group of something the population does not train (`supported`: an allow-list),
runs through Hydra's own run_job, one job after another, exactly as hydra/launcher=basic runs it; so
does a resumed sweep's (make sweep RESUME=) finished run or run with a resumable Lightning checkpoint
(nnlab.train.main skips or continues it). SIGTERM or Ctrl-C stops a population at a step boundary:
its members are interrupted, each one's checkpoint holding what continues it (`checkpoint`: the
population's place, the member's RNG before that epoch's data order, its epoch sums, losses, logged
metrics and figure curves); a resumed sweep regroups them and continues from there (`restore`) to the
numbers of the sweep never interrupted. A member that cannot continue (`saved_state` says why) trains
again from its start.

A group composes one config (a Hydra composition took ~0.5 s on the loaded 2-core VM of
docs/population.md); each member's config is
that one with the member's numbers set, and the overrides, folder name and job number Hydra would
give it (tests/test_population.py: equal to Hydra's own composition of the job). Each member then
gets what Hydra's run_job gives a job (its folder, .hydra/ with the same bytes, Hydra's job callbacks),
less run_job's deep copies of the Hydra config and its logging setup a job, and is checked and
claimed; the group trains:

- each member seeded as nnlab.train seeds a run, its own init, data, torch.optim optimizer and LR
  schedule (an nnlab.classifier.Classifier around its net), its parameters views of its row of the
  population's Stack (one leaf a parameter, (members, ...));
- a step of all members is nnlab.steps.step, the step a fused run takes as a population of one
  (nnlab/fused.py): one vectorised forward, torch.func.vmap over members of functional_call of the
  one architecture on the stack (the CNN: each member's own forward in turn on its row, as vmapped
  convolutions are slower on the CPU; hydra.launcher.vectorize chooses); each member's loss
  (cross-entropy plus its own L2, what Classifier.step computes) outside vmap, one backward for all
  (each loss gradient 1); per member the epoch sums, the finiteness check of loss and
  gradients (a member going non-finite stops alone, status diverged, its weights the last finite
  ones), the optimizer's step (plain SGD's for all such members at once: Stack.sgd_step) and a
  per-step schedule's step;
- around the steps what Lightning's loop does around fused steps: train/loss and lr every
  log_interval steps, the epoch's schedule step and validation every epoch, test at the end.
- with hydra.launcher.workers > 1 (null: one a core), the group's config composed, the sweep's process
  forks that many workers, each setting up and training a share of its jobs as above
  (Population.train_shares), signals forwarded to them, the figures' best member chosen over all shares.

On the spiral on this CPU every number equals the member's separate run bit for bit: the vmapped
logits and their gradients are the same floats as one model's, and everything else is per member.
On MNIST the CNN's members (in turn) are bitwise their runs on the same thread count; the vmapped
linear and mlp members' batched matrix products may differ in the last bit (docs/population.md).
Members whose data configs resolve alike share one data module (MNIST: read once a population), and
each gathers its minibatch from the shared tensors when its step takes it.
Every member leaves a normal run folder (metrics.json plus a "population" entry, TensorBoard events
with the same tags and steps, train.log, checkpoints/last.ckpt for make evaluate); figures are drawn
for the `figures` setting's members (none | best: each group's best val/acc | all), as each costs
~0.5 s, more than a spiral member's training.
"""
import contextlib
import copy
import ctypes
import dataclasses
import itertools
import logging
import math
import multiprocessing
import multiprocessing.connection as mp_connection
import os
import signal
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import torch
import torch.nn.functional as F
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from hydra.core.utils import JobReturn, JobStatus, configure_log, env_override, run_job, setup_globals
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, MLFlowLogger, TensorBoardLogger
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from torch import Tensor, nn
from torch.func import functional_call, vmap

from nnlab import cores, runs, steps
from nnlab.callbacks import EpochLog, Figures, tensorboard
from nnlab.checkpoint import (
    AtomicCheckpointIO,
    Interrupt,
    RNGState,
    UnreadableCheckpoint,
    checkpoint_problem,
    read_checkpoint,
)
from nnlab.classifier import EpochSums
from nnlab.compat import hydra_basic
from nnlab.config import ConfigError, check, check_target, gate
from nnlab.data.loader import TensorDataModule, TensorLoader
from nnlab.errors import Interrupted, NnlabError
from nnlab.train import loggers as train_loggers
from nnlab.train import parts
from nnlab.train import threads as run_threads

log = logging.getLogger("nnlab")
# Keys whose numbers a population's members may differ in (a key with a prefix, +k=1, adds a key:
# structural); any key under optimizer. and scheduler. (lr, momentum, weight_decay, betas, gamma...).
MEMBER_KEYS = ("seed", "l2", "model.init_std")
MEMBER_PREFIXES = ("optimizer.", "scheduler.")
FIGURES = ("none", "best", "all")
# How a population steps its members: vmap (one vectorised forward and backward for all) or loop
# (each member's own forward in turn, one backward). auto: what the model class says of itself
# (its `vmap_on_cpu`): on this 2-core CPU vmapped convolutions are slower than the members' own
# (8 CNN members: 0.62x; docs/population.md).
VECTORIZE = ("auto", "vmap", "loop")
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt(3)'s parameters, from glibc's malloc.h
STATE_VERSION = 1  # of the "population" entry of an interrupted member's checkpoint
# conf/train.yaml's callbacks (any may be left out): what the population does in their place
LOGGERS = (TensorBoardLogger, CSVLogger, MLFlowLogger)  # conf/logger/'s: a member writes to each as a run does
CALLBACKS = {"checkpoint": ModelCheckpoint, "interrupt": Interrupt, "rng": RNGState, "epoch_log": EpochLog,
             "figures": Figures}
TRAINER_KEYS = {"_target_", "accelerator", "devices", "precision", "max_epochs", "deterministic",
                "log_every_n_steps", "enable_progress_bar", "enable_model_summary", "num_sanity_val_steps", "plugins"}


def member_number(o: Override) -> bool:
    """Whether an override sets a per-member number (not a group choice, not a string)."""
    value = o.value() if o.type is OverrideType.CHANGE and not o.is_sweep_override() else None
    return (o.type is OverrideType.CHANGE and o.package is None
            and (o.key_or_group in MEMBER_KEYS or o.key_or_group.startswith(MEMBER_PREFIXES))
            and isinstance(value, int | float) and not isinstance(value, bool))


@dataclasses.dataclass
class Job:
    idx: int
    overrides: list[str]
    numbers: dict  # key -> value of its per-member numbers
    structure: tuple  # everything else: equal within a group


def job_of(idx: int, overrides: list[str]) -> Job:
    """A sweep's job `idx`, its overrides read by Hydra's parser into numbers and structure."""
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    numbers = {o.key_or_group: o.value() for o in parsed if member_number(o)}
    rest = sorted(o.input_line for o in parsed if not member_number(o))
    return Job(idx, list(overrides), numbers, (tuple(rest), tuple(sorted(numbers))))


def group_jobs(jobs: list[Job]) -> list[list[Job]]:
    """Jobs with equal structure (all but their numbers, and which keys carry numbers), in order of
    their first job."""
    groups: dict[tuple, list[Job]] = {}
    for job in jobs:
        groups.setdefault(job.structure, []).append(job)
    return list(groups.values())


def built_class(cfg: DictConfig, key: str) -> type | None:
    """The class `key`'s node names, if it is one nnlab may build (nothing else is imported), else None."""
    target = OmegaConf.select(cfg, f"{key}._target_", default=None)
    try:
        return check_target(f"{key}._target_", target) if target else None
    except ConfigError:
        return None


def stackable(cfg: DictConfig) -> bool:
    """Whether this config's models can be members of one population: the model class says its forward
    is a function of its parameters alone (`stackable = True`: no randomness), and the model built
    (on the meta device: shapes only) has no buffers (a batch norm's running statistics)."""
    if not getattr(built_class(cfg, "model"), "stackable", False):
        return False
    try:
        data, model = gate(cfg.data, "data"), gate(cfg.model, "model")
        shape = instantiate(data)  # cheap: nothing is read
        with torch.device("meta"):
            net = instantiate(model, in_shape=shape.in_shape, num_classes=shape.num_classes)
    except (ConfigError, InstantiationException, ValueError):  # the job's own check says why, as its record
        return False
    return not any(True for _ in net.buffers())


def supported(cfg: DictConfig) -> str | None:
    """Why the population cannot train this (composed) config, or None when it can. An allow-list of
    classes and capabilities: anything not named here, and any app that is not an nnlab run (no
    trainer, model or data), takes the basic launcher's path."""
    if not all(OmegaConf.select(cfg, k, default=None) is not None for k in ("model", "data", "trainer", "callbacks")):
        return "the population trains nnlab runs only (a config with model, data, trainer and callbacks)"
    trainer, sweeper = cfg.trainer, built_class(cfg, "hydra.sweeper") if "hydra" in cfg else None
    data = built_class(cfg, "data")
    checks = [
        (data is not None and issubclass(data, TensorDataModule), "data other than tensors in memory (TensorDataModule)"),
        (stackable(cfg), "models whose class is not stackable, or with buffers (batch norm)"),
        (cfg.get("fused") and not cfg.get("compile") and not cfg.get("channels_last") and cfg.get("resume") is None,
         "fused=false, compile, channels_last or resume"),
        (set(trainer) <= TRAINER_KEYS and trainer.get("devices") == 1 and str(trainer.get("precision")) in ("32-true", "32")
         and trainer.get("deterministic") and trainer.get("num_sanity_val_steps") == 0
         and (trainer.get("accelerator") == "cpu" or trainer.get("accelerator") == "auto" and not torch.cuda.is_available()),
         "trainer settings other than conf/trainer/default.yaml's on the CPU"),
        (all(built_class(cfg, f"callbacks.{k}") is CALLBACKS.get(k) for k in cfg.callbacks),
         "callbacks other than conf/train.yaml's"),
        (all(built_class(cfg, f"logger.{k}") in LOGGERS for k in cfg.get("logger") or {}),
         "loggers other than conf/logger/'s"),
        (sweeper is None or hydra_basic("sweeper", sweeper), "sweepers other than the basic one")]
    return next((f"the population does not train {why}" for ok, why in checks if not ok), None)


def launcher_settings(settings) -> tuple[str, str, int, int]:
    """The launcher's figures, vectorize, workers and checkpoint_every settings (conf/hydra/launcher/
    population.yaml), or a ConfigError naming the bad one and its options (before any folder is made).
    workers null: one a core."""
    figures, vectorize = settings.get("figures", "best"), settings.get("vectorize", "auto")
    for key, value, options in (("figures", figures, FIGURES), ("vectorize", vectorize, VECTORIZE)):
        if value not in options:
            raise ConfigError(f"hydra.launcher.{key}={value} is not an option: one of {', '.join(options)}")
    workers = settings.get("workers")
    if workers is None:
        workers = cores()
    if type(workers) is not int or workers < 1:
        raise ConfigError(f"hydra.launcher.workers={workers} is not an option: a whole number of processes >= 1, "
                          "or null for one a core")
    every = settings.get("checkpoint_every", 1)
    if type(every) is not int or every < 0:
        raise ConfigError(f"hydra.launcher.checkpoint_every={every} is not an option: a whole number of epochs >= 0 "
                          "(0: only when a member ends or stops)")
    return figures, vectorize, workers, every


def vectorized(cfg: DictConfig, setting: str = "auto") -> str:
    """vmap or loop (see VECTORIZE) for a group of this config, `setting` being the launcher's."""
    if setting != "auto":
        return setting
    return "vmap" if getattr(built_class(cfg, "model"), "vmap_on_cpu", False) else "loop"


def derive(base: DictConfig, job: Job) -> DictConfig:
    """`job`'s config from its group's composed `base`: its numbers set, and what Hydra derives
    from the overrides (the task overrides, override_dirname, job number) put in."""
    cfg = copy.deepcopy(base)
    OmegaConf.copy_cache(from_config=base, to_config=cfg)
    for key, value in job.numbers.items():
        OmegaConf.update(cfg, key, value, merge=True)
    dirname = cfg.hydra.job.config.override_dirname
    parsed = OverridesParser.create().parse_overrides(job.overrides)
    lines = sorted(o.input_line for o in parsed if o.key_or_group not in dirname.exclude_keys)
    with read_write(cfg.hydra), open_dict(cfg.hydra):
        cfg.hydra.overrides.task = list(job.overrides)
        cfg.hydra.job.override_dirname = dirname.item_sep.join(lines).replace("=", dirname.kv_sep)
        cfg.hydra.job.id = cfg.hydra.job.num = job.idx
    return cfg


def file_handler(log_file: Path) -> logging.FileHandler:
    """A run's train.log, opened when first written, its lines as Hydra's job logging formats them."""
    handler = logging.FileHandler(log_file, delay=True)
    fmt = OmegaConf.select(HydraConfig.get(), "job_logging.formatters.timed.format", default="%(message)s")
    handler.setFormatter(logging.Formatter(fmt))
    return handler


class Member:
    """One run of a population: its config and folder, and once built, its data, Classifier (net,
    epoch sums, L2), optimizer and schedule, and what Lightning would have logged for it."""

    def __init__(self, job: Job, cfg: DictConfig, run_dir: Path, log_file: Path, saved: dict | None = None):
        self.job, self.cfg, self.run_dir = job, cfg, run_dir
        self.handler = file_handler(log_file)
        self.metrics: dict = {"status": runs.FAILED}
        self.stopped = False
        self.saved = saved  # the checkpoint it continues from (make sweep RESUME=), or None
        # (epoch, steps done in it) of the population where it starts: (0, 0), or where it stopped
        self.start = tuple(saved["population"]["place"]) if saved else (0, 0)
        self.boundary: tuple | None = None  # where fit stopped it cleanly: (epoch, steps done, its RNG there)
        self.logged = False  # its events file holds its first points (a member resumed after a stop)

    def note(self, message: str, error: bool = False) -> None:
        """A line in the member's train.log; `error`: with the traceback of the exception being handled."""
        level, info = (logging.ERROR, sys.exc_info()) if error else (logging.INFO, None)
        self.handler.handle(logging.LogRecord("nnlab", level, __file__, 0, message, None, info))

    def build(self, shared: dict) -> None:
        """What nnlab.train.train does before fit, in its order: seed, data, net (its init draws).
        Members whose data configs resolve alike share one data module, loaded once (MNIST: its split
        is fixed by data.split_seed, not by the run's seed; the spiral's data.seed is the run's)."""
        L.seed_everything(self.cfg.seed, workers=True, verbose=False)
        self.data, self.module = parts(self.cfg, shared_data(self.cfg, shared))
        self.rng = torch.get_rng_state()  # the data order draws from here (TensorLoader), per member
        self.data.setup("fit")  # loads the data once: a no-op for a member sharing another's
        self.params = dict(self.module.net.named_parameters())  # its own leaves
        self.step, self.epoch, self.loss, self.finite_loss, self.diverged = 0, 0, None, None, None
        self.callback_metrics: dict = {}
        self.points: list[tuple[dict, int]] = []  # TensorBoard scalars, written when the run ends
        self.figures = Figures(str(self.run_dir))
        self.first_batch: tuple | None = None  # (x, y) of its first step, for the log line and first_batch.png

    def configure(self, total_steps: int) -> None:
        module = self.module
        self.optimizer = module.make_optimizer(module.parameters())
        group = self.optimizer.param_groups
        # plain SGD's step is taken for all such members at once (Stack.sgd_step), not by the optimizer
        self.plain_sgd = (type(self.optimizer) is torch.optim.SGD and len(group) == 1 and group[0]["momentum"] == 0
                          and group[0]["weight_decay"] == 0 and not group[0]["maximize"]
                          and not group[0]["differentiable"] and not isinstance(group[0]["lr"], Tensor))
        self.scheduler, self.scheduled = None, False  # scheduled: its schedule has stepped (schedule)
        if module.make_scheduler is not None:
            per_step = module.hparams.scheduler_interval == "step"
            self.scheduler = module.make_scheduler(self.optimizer, **({"total_steps": total_steps} if per_step else {}))

    @contextlib.contextmanager
    def own_rng(self):
        """torch's global RNG as this member's run would have it: its loaders draw from it."""
        outer = torch.get_rng_state()
        torch.set_rng_state(self.rng)
        try:
            yield
        finally:
            self.rng = torch.get_rng_state()
            torch.set_rng_state(outer)

    def log_point(self, values: dict, step: int) -> None:
        self.points.append(({k: v.item() if isinstance(v, torch.Tensor) else v for k, v in values.items()}, step))


def shared_data(cfg: DictConfig, shared: dict):
    """The data module of this config, one for all members whose data configs resolve alike."""
    key = OmegaConf.to_yaml(cfg.data, resolve=True)
    if key not in shared:
        shared[key] = instantiate(cfg.data)
        shared[key].prepare_data()  # MNIST: its files checked (MD5), once a population
    return shared[key]


class Population:
    """hydra/launcher=population (hydra_plugins/nnlab_population.py holds the Launcher class)."""

    def __init__(self, settings: dict, *, hydra_context, task_function, config: DictConfig,
                 composed: dict | None = None):
        self.figures, self.vectorize, self.workers, self.every = launcher_settings(settings)
        self.hydra_context, self.task_function, self.config = hydra_context, task_function, config
        # a job's overrides -> its config, composed by the sweeper's check (hydra/sweeper=grouped)
        self.composed: dict[tuple, DictConfig] = {} if composed is None else composed

    # -- Hydra's side: compose, group, run jobs -------------------------------------------------
    def launch(self, job_overrides, initial_job_idx: int) -> list[JobReturn]:
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        jobs = [job_of(initial_job_idx + i, list(o)) for i, o in enumerate(job_overrides)]
        plan = []
        for group in group_jobs(jobs):
            base = self.compose(group[0])
            why = "a group of one" if len(group) == 1 else supported(base)
            plan.append((group, base, why))
        self.show(plan)
        returns: dict[int, JobReturn] = {}
        for n, (group, base, why) in enumerate(plan):
            if why:
                for job in group:
                    returns[job.idx] = self.run_alone(job, base if job is group[0] else self.compose(job))
            else:
                returns.update(self.run_group(n, group, base))
        return [returns[job.idx] for job in jobs]

    def show(self, plan) -> None:
        together = sum(len(g) for g, _, why in plan if not why)
        total = sum(len(g) for g, _, _ in plan)
        if not together:  # one line, not one a job (a study launches its trials a few at a time)
            reasons = sorted({why for _, _, why in plan})
            print(f"population: none of the {total} jobs trains in a population ({'; '.join(reasons)}): "
                  "one after another, as hydra/launcher=basic", flush=True)
            return
        groups = sum(1 for _, _, why in plan if not why)
        print(f"population: {total} jobs, {together} of them in {groups} population{'s' * (groups != 1)}",
              flush=True)
        for n, (group, base, why) in enumerate(plan):
            shared = " ".join(group[0].structure[0]) or "(no overrides)"
            numbers = ", ".join(k for k in group[0].structure[1]
                                if len({job.numbers[k] for job in group}) > 1) or "nothing"
            ids = f"#{group[0].idx}" + (f"..#{group[-1].idx}" if len(group) > 1 else "")
            how = {"vmap": "vmapped", "loop": "stepped in turn"}[vectorized(base, self.vectorize)] if not why else ""
            what = f"alone ({why})" if why else f"population {n}: {len(group)} runs differing in {numbers}, {how}"
            if not why and (k := processes(len(group), base, self.workers)) > 1:
                what += f", in {k} processes"
            print(f"  {ids} {shared}: {what}", flush=True)

    def compose(self, job: Job) -> DictConfig:
        cfg = self.composed.pop(tuple(job.overrides), None)  # the sweeper's check composed it (grouped.yaml)
        if cfg is None:
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, job.overrides)
        with open_dict(cfg):
            cfg.hydra.job.id = cfg.hydra.job.num = job.idx
        return cfg

    def run_alone(self, job: Job, cfg: DictConfig) -> JobReturn:
        """What Hydra's basic launcher does for a job."""
        ret = run_job(hydra_context=self.hydra_context, task_function=self.task_function, config=cfg,
                      job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return ret

    def run_group(self, n: int, group: list[Job], base: DictConfig) -> dict[int, JobReturn]:
        """Population n: its jobs set up and trained here, or in `processes` forked ones (train_shares)."""
        k = processes(len(group), base, self.workers)
        if k > 1:
            return self.train_shares(n, group, base, k)
        returns: dict[int, JobReturn] = {}
        self.run_share(n, group, base, Link(), returns)
        return returns

    def run_share(self, n: int, jobs: list[Job], base: DictConfig, link: "Link", returns: dict) -> None:
        """These jobs of population n (all of them, or a worker's share): each job's folder, .hydra/
        and check (start_group: a job's place, alone or a member), then the members' places in the
        population agreed with the other shares (`link`), then their training, one part after another."""
        members: list[Member] = []
        outer = HydraConfig.instance().cfg
        with contextlib.ExitStack() as locks:
            def enlist(job: Job, cfg: DictConfig, run_dir: Path, log_file: Path) -> None:
                """A member's task function: its folder and .hydra/ exist by now. A bad value is
                invalid_config; a good one joins the population."""
                try:
                    locks.enter_context(runs.hold(run_dir))
                except runs.FolderBusy as e:
                    log.info(f"{run_dir.name}: {e}, skipped")
                    return None
                status = runs.run_status(run_dir)  # an earlier attempt's, if any (make sweep RESUME=)
                try:
                    checked = check(cfg)
                except ConfigError as e:
                    if status is not None:
                        runs.set_aside(run_dir)  # the old outputs kept in attempt-<n>/
                    runs.write_json(run_dir / "metrics.json", {"status": runs.INVALID_CONFIG, "error": str(e)})
                    handler = file_handler(log_file)
                    handler.handle(logging.LogRecord("nnlab", logging.ERROR, __file__, 0, "nnlab: %s", (e,), None))
                    handler.close()
                    return None
                # interrupted, or killed (no metrics.json) after an epoch's checkpoint: it continues from there
                stopped = status == runs.INTERRUPTED or status is None and (run_dir / "checkpoints" / "last.ckpt").exists()
                saved, why = saved_state(run_dir, checked) if stopped else (None, None)
                if saved is None and status is not None:  # it starts over, the old outputs kept in attempt-<n>/
                    runs.set_aside(run_dir)
                member = Member(job, checked, run_dir, log_file, saved)
                if why:
                    why = f"{run_dir.name} trains again from its start, its earlier outputs kept in attempt-<n>/: {why}"
                    print(f"nnlab: {why}", flush=True)
                    member.note(f"nnlab: {why}")
                members.append(member)
            try:
                self.start_group(jobs, base, returns, enlist)
            finally:
                HydraConfig.instance().cfg = outer
            parts = link.parts([(m.job.idx, m.start, str(m.run_dir)) for m in members])
            for part, (_, index) in enumerate(parts):
                mine = [m for m in members if m.job.idx in index]  # in job order
                for m in mine:  # the whole part's size and the member's place in it, whichever process trains it
                    m.metrics["population"] = {"group": n, "size": len(index), "index": index[m.job.idx]}
                if resumed := [m for m in mine if m.saved is not None]:  # a resumed sweep's cut-short members
                    epoch, done = resumed[0].start  # one place for all: they stopped together
                    runs_go_on = "1 run continues" if len(resumed) == 1 else f"{len(resumed)} runs continue"
                    print(f"population {n}: {runs_go_on} from where they stopped (epoch {epoch + 1}, "
                          f"after {done} of its steps; each run's train.log says more)", flush=True)
                if mine:
                    train_population(mine, n, self.figures, vectorized(base, self.vectorize),
                                     lambda done, part=part: link.choose(part, done), link.shared, self.every)

    def train_shares(self, n: int, group: list[Job], base: DictConfig, k: int) -> dict[int, JobReturn]:
        """Population n in k processes forked from this one once its config is composed, each setting
        up and training a share of its jobs (every k-th: each share has some of every lr), so that
        the members' fixed costs (folders, configs, checks, outputs) are shared out as well as their
        steps, and nothing is imported or composed again. Members are independent, so a share's
        numbers are those of the whole population, and of the runs it replaces (tests/test_population.py
        compares them with hydra/launcher=basic's bit for bit). This process coordinates: the parts of
        the population by where its members start (a resumed sweep's interrupted members continue
        together, those starting afresh after them), and each part's best member, whose figures the
        worker holding it draws. Signals reach the workers through this process (each is its own
        process group): Ctrl-C or SIGTERM stops each at its step boundary, as one process stops."""
        # Data members share (MNIST: one split for every seed) is loaded here, once: the workers inherit
        # it, and its pages stay shared as nothing writes to them. The data's own generator draws it
        # (the spiral's, from data.seed), not the run's RNG, so loading it here changes nothing.
        shared: dict = {}
        try:
            data = lambda cfg: OmegaConf.to_yaml(cfg.data, resolve=True)  # noqa: E731
            if data(base) == data(derive(base, group[-1])):  # as the first job's, so the rest's (MNIST's)
                shared_data(base, shared).setup("fit")
        except (NnlabError, OSError, ValueError):  # the workers meet it again, and fail their members as one
            shared = {}                               # process does
        ctx = multiprocessing.get_context("fork")
        links = []
        for i in range(k):
            mine, theirs = ctx.Pipe()
            proc = ctx.Process(target=self.share_worker, args=(n, group[i::k], base, shared, theirs), daemon=False)
            links.append((proc, mine, group[i::k]))
        enlisted: dict[int, list] = {}  # pid -> its members' (job idx, start, run folder)
        parts, holders, asked, results, exits = None, {}, {}, {}, []
        with forward_signals([proc for proc, _, _ in links]):
            for proc, _, _ in links:
                proc.start()
            running = {proc.sentinel: (proc, conn) for proc, conn, _ in links}
            while running:
                ready = mp_connection.wait([*running, *(conn for _, conn in running.values())])
                for key, (proc, conn) in list(running.items()):
                    while (conn in ready or key in ready) and conn.poll():  # every message, before its exit
                        try:
                            kind, *value = conn.recv()
                        except EOFError:
                            break
                        if kind == "enlisted":
                            enlisted[proc.pid] = value[0]
                        elif kind == "best":  # (part, its candidates)
                            asked.setdefault(value[0], {})[proc.pid] = (conn, value[1])
                        elif kind == "done":  # job idx -> (completed, why not)
                            results.update(value[0])
                        else:  # interrupted: this process ends the sweep with the same line, once
                            exits.append(value[0])
                    if key in ready:
                        proc.join()
                        del running[key]
                alive = {proc.pid: conn for proc, conn in running.values()}
                if parts is None and set(alive) <= set(enlisted):  # every share set up: the parts, to all
                    parts = parts_of([e for share in enlisted.values() for e in share])
                    holders = {i: {pid for pid, share in enlisted.items() if any(e[0] in index for e in share)}
                               for i, (_, index) in enumerate(parts)}
                    for conn in alive.values():
                        conn.send(parts)
                for part, asks in list(asked.items()):
                    if set(alive) & holders[part] <= set(asks):  # all still running that hold some asked
                        candidates = [c for _, cands in asks.values() for c in cands]
                        # the first best in job order, as best() picks it in one process
                        chosen = max(sorted(candidates), key=lambda c: c[1])[0] if candidates else None
                        for conn, _ in asks.values():
                            with contextlib.suppress(OSError):  # one that died since
                                conn.send(chosen)
                        del asked[part]
        returns = {}
        for proc, _, jobs in links:
            members = {idx: Path(run_dir) for idx, _, run_dir in enlisted.get(proc.pid, [])}
            if proc.exitcode != 0:  # a worker that died (killed, out of memory): its unfinished members failed
                for run_dir in members.values():
                    if runs.run_status(run_dir) is None:
                        runs.write_json(run_dir / "metrics.json",
                                   {"status": runs.FAILED, "error": f"its worker process ended with code {proc.exitcode}"})
            for job in jobs:
                # a dead worker's members are runs like any other (their metrics.json says failed, and the
                # sweep's report lists them); a job it never set up is a failed job
                completed, why = results.get(job.idx, (job.idx in members, f"its worker process ended with code "
                                                                           f"{proc.exitcode} before setting the job up"))
                returns[job.idx] = JobReturn(overrides=list(job.overrides), working_dir=os.getcwd(),
                                             task_name=base.hydra.job.name,
                                             status=JobStatus.COMPLETED if completed else JobStatus.FAILED)
                returns[job.idx].return_value = None if completed else RuntimeError(why)
        if exits:
            raise Interrupted(exits[0])
        return returns

    def share_worker(self, n: int, jobs: list[Job], base: DictConfig, shared: dict, conn) -> None:
        """A worker process of train_shares: its share of the population's jobs, set up and trained."""
        os.setpgid(0, 0)  # Ctrl-C reaches the parent only, which forwards it once
        returns: dict[int, JobReturn] = {}
        try:
            # a signal forwarded while the share is set up ends it there (in training: at a step boundary)
            with signals_to(interrupt):
                self.run_share(n, jobs, base, Link(conn, shared), returns)
        except Interrupted as e:  # in training: train_population's line
            conn.send(("exit", str(e)))
        except KeyboardInterrupt:  # while it was set up
            conn.send(("exit", runs.resume_line(Path(str(OmegaConf.select(base, "hydra.sweep.dir"))), sweep=True)))
        finally:
            conn.send(("done", {idx: (r.status is JobStatus.COMPLETED, "its job failed in a worker process: see its "
                                      "train.log") for idx, r in returns.items()}))
            conn.close()

    def start_group(self, jobs: list[Job], base: DictConfig, returns: dict, enlist) -> None:
        """Each job's folder and .hydra/, and its place: alone (a resumed sweep's finished or resumable
        run) or enlisted into the population."""
        for job in jobs:
            cfg = base if job.idx == base.hydra.job.num else derive(base, job)  # base: the group's first job's
            run_dir = Path(str(OmegaConf.select(cfg, "hydra.sweep.dir")), str(OmegaConf.select(cfg, "hydra.sweep.subdir")))
            status, ckpt = runs.run_status(run_dir), run_dir / "checkpoints" / "last.ckpt"
            if status in runs.FINISHED or status == runs.INTERRUPTED and ckpt.exists() and checkpoint_problem(ckpt) is None:
                # make sweep RESUME=: skipped, or continued from its checkpoint, as nnlab.train.main does
                returns[job.idx] = self.run_alone(job, cfg)
                continue
            returns[job.idx] = self.start_job(cfg, run_dir, lambda c, f, job=job, d=run_dir: enlist(job, c, d, f))

    def start_job(self, cfg: DictConfig, run_dir: Path, task) -> JobReturn:
        """What Hydra's run_job (hydra/core/utils.py) does for a job, by the same public calls, less
        what a member does without: deep copies of its Hydra config, and a logging setup a job (a
        member's train.log gets its lines through its own handler). The .hydra/ files are the same
        bytes as run_job's (tests/test_population.py compares them with hydra/launcher=basic's)."""
        with read_write(cfg.hydra.runtime), open_dict(cfg.hydra.runtime):
            cfg.hydra.runtime.output_dir = os.path.abspath(run_dir)
        HydraConfig.instance().set_config(cfg)  # ${hydra:...} of the job's config resolve to its own
        task_cfg = copy.deepcopy(cfg)
        with read_write(task_cfg), open_dict(task_cfg):
            del task_cfg["hydra"]
        ret = JobReturn(overrides=list(cfg.hydra.overrides.task), cfg=task_cfg, hydra_cfg=HydraConfig.instance().cfg,
                        working_dir=os.getcwd(), task_name=cfg.hydra.job.name)
        run_dir.mkdir(parents=True, exist_ok=True)
        if cfg.hydra.output_subdir is not None:
            saved = run_dir / str(cfg.hydra.output_subdir)
            saved.mkdir(parents=True, exist_ok=True)
            for name, node in (("config.yaml", task_cfg), ("hydra.yaml", ret.hydra_cfg),
                               ("overrides.yaml", cfg.hydra.overrides.task)):
                (saved / name).write_text(OmegaConf.to_yaml(node), encoding="utf-8")
        self.hydra_context.callbacks.on_job_start(config=cfg, task_function=self.task_function)
        with env_override(cfg.hydra.job.env_set):
            log_file = run_dir / f"{cfg.hydra.job.name}.log"
            try:
                ret.return_value = task(task_cfg, log_file)
                ret.status = JobStatus.COMPLETED
            except Exception as e:  # as run_job: the job failed, not the sweep; its traceback in its train.log
                ret.return_value, ret.status = e, JobStatus.FAILED
                handler = file_handler(log_file)
                handler.handle(logging.LogRecord("nnlab", logging.ERROR, __file__, 0, "nnlab: %s could not be set up",
                                                 (run_dir.name,), sys.exc_info()))
                handler.close()
        self.hydra_context.callbacks.on_job_end(config=cfg, job_return=ret)
        return ret


# -- The training of a population ----------------------------------------------------------------
def processes(size: int, cfg: DictConfig, workers: int) -> int:
    """How many processes set up and train a population of `size` (Population.train_shares). One where
    forking cannot help or is not safe: a population of one, threads > 1 (a forked OpenMP pool), or
    not Linux (macOS forks badly under some of the libraries torch loads)."""
    return min(workers, size) if sys.platform == "linux" and (cfg.threads or 1) == 1 else 1


def parts_of(enlisted: list[tuple]) -> list[tuple[tuple, dict[int, int]]]:
    """The parts of a population from its members' (job idx, start, run folder): members continue
    together from the same place in training (a resumed population is its interrupted members; members
    starting afresh are another part, trained after it), each part in job order: [(start, {job idx:
    index in the part})]."""
    parts: dict[tuple, dict[int, int]] = {}
    for idx, start, _ in sorted(enlisted):
        part = parts.setdefault(tuple(start), {})
        part[idx] = len(part)
    return list(parts.items())


class Link:
    """A share's line to the others through the process that forked them (Population.train_shares):
    the population's parts, each part's best member. Without a connection the share is the whole
    population, in this process."""

    def __init__(self, conn=None, shared: dict | None = None):
        self.conn, self.shared = conn, shared  # shared: data loaded before the fork (shared_data)

    def parts(self, enlisted: list[tuple]) -> list[tuple[tuple, dict[int, int]]]:
        if self.conn is None:
            return parts_of(enlisted)
        self.conn.send(("enlisted", enlisted))
        return self.conn.recv()

    def choose(self, part: int, members: list[Member]) -> Member | None:
        if self.conn is None:
            return best(members)
        self.conn.send(("best", part, [(m.job.idx, m.metrics["val/acc"]) for m in finished(members)]))
        idx = self.conn.recv()
        return next((m for m in members if m.job.idx == idx), None)


def interrupt(signum, frame):
    raise KeyboardInterrupt


def forward_signals(procs: list):
    """SIGTERM and SIGINT to this process, passed on to the workers (in their own process groups)."""
    def handler(signum, frame):
        for proc in procs:
            if proc.pid is not None and proc.exitcode is None:
                os.kill(proc.pid, signum)
    return signals_to(handler)


@contextlib.contextmanager
def signals_to(handler):
    """SIGTERM and SIGINT go to `handler` within the block, to what they went to before after it.
    Outside the main thread signals are left alone."""
    previous = {}
    try:
        for s in (signal.SIGTERM, signal.SIGINT):
            previous[s] = signal.signal(s, handler)
    except ValueError:  # not the main thread
        pass
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def train_population(members: list[Member], group: int, figures: str, how: str = "vmap", choose=None,
                     shared: dict | None = None, checkpoint_every: int = 1) -> None:
    """Population `group` trained, tested and its members' outputs written; `checkpoint_every`: epochs
    between each member's checkpoints (0: only when it ends or stops)."""
    start, stop, threads = time.perf_counter(), {"signal": None}, torch.get_num_threads()
    try:
        cfg = members[0].cfg
        # One thread unless threads= says otherwise, as every sweep's run (nnlab.train.threads): a
        # population's ops are small, and a second thread woken for one spins on after it, taking the
        # core the next op needs (a step took 50x longer on a loaded 2-core VM).
        torch.set_num_threads(run_threads(cfg) or 1)
        keep_freed_memory()
        torch.use_deterministic_algorithms(cfg.trainer.deterministic)  # what the Trainer sets
        shared = {} if shared is None else shared  # data modules by their resolved config (shared_data)
        for m in members:  # their "population" entries are the whole population's (run_share)
            m.build(shared)
        with stop_signals(stop):
            fit(members, cfg, stop, how, checkpoint_every)
            for m in members:  # a signal now waits for the tests (short), then ends the sweep
                test_member(m)
    except BaseException as e:
        interrupted = isinstance(e, Stopped | KeyboardInterrupt | SystemExit)
        for m in members:
            if m.metrics["status"] not in (runs.OK, runs.DIVERGED):
                m.metrics["status"] = runs.INTERRUPTED if interrupted else runs.FAILED
                m.metrics["error"] = str(e) if isinstance(e, Stopped) else repr(e)
        if not interrupted:  # a bug or a resource, not the person's mistake: its traceback, in each train.log
            log.exception("nnlab: population %d failed; the sweep goes on", group)
            for m in members:
                m.note(f"nnlab: population {group} failed; the sweep goes on", error=True)
    finally:
        seconds = round(time.perf_counter() - start, 2)
        chosen = (choose or best)(members) if figures == "best" else None  # a worker asks its parent
        for m in members:
            draw = "figures" in m.cfg.callbacks and (figures == "all" or m is chosen)
            finish(m, seconds, draw)
        torch.set_num_threads(threads)  # as this process had it: the next job in it starts the same
    if stop["signal"] or any(m.metrics["status"] == runs.INTERRUPTED for m in members):
        raise Interrupted(runs.resume_line(members[0].run_dir.parent, sweep=True))


def continue_alone(cfg: DictConfig, run_dir: Path) -> dict:
    """make train RESUME=<an interrupted member's folder>: the member continues on its own, a population
    of one, from where it stopped to the numbers it would have reached in its sweep (a member's numbers
    do not depend on the members beside it). `cfg` is its saved config. Returns its metrics."""
    checked = check(cfg)
    saved, why = saved_state(run_dir, checked)
    if saved is None:  # it loaded whole (checkpoint_problem): another version's state, or another config
        raise ConfigError(f"resume={run_dir}: {why}; make sweep RESUME=<its sweep folder> trains it again "
                          "from its start")
    before = runs.read_metrics(run_dir, unusable={}) or {}
    member = Member(Job(0, [], {}, ()), checked, run_dir, run_dir / "train.log", saved)
    group = before.get("population", {}).get("group", 0)
    member.metrics["population"] = {"group": group, "size": 1, "index": 0}  # the part that ends it: itself
    train_population([member], group, "all", vectorized(checked))
    return member.metrics


def keep_freed_memory() -> None:
    """Have glibc's malloc keep what a step frees for the next step. A population's activations are
    MiBs ((members, 300, 100) float32 a hidden layer: 4 MiB for 36 spiral MLPs), above the sizes
    malloc hands back to the kernel as soon as they are freed (mmap'd blocks; the heap's top trimmed
    past 128 KiB), so every step faulted its pages in afresh: on the 2-core VM of docs/population.md
    spiral_grid's population sweep took 4-6 s of system time, 2 s with these settings (mallopt(3):
    blocks under 32 MiB come from the heap, which keeps up to 256 MiB of freed memory). Elsewhere
    (not glibc) nothing changes."""
    # the process's own symbols: the malloc it allocates with (a name lookup, no ldconfig run)
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None) if sys.platform == "linux" else None
    if mallopt is not None:
        mallopt(M_MMAP_THRESHOLD, 32 << 20)  # where glibc's own sliding threshold stops on 64-bit systems
        mallopt(M_TRIM_THRESHOLD, 256 << 20)


class Stopped(Exception):
    """SIGTERM or Ctrl-C reached a population: it stopped at the end of the step."""


def stop_signals(stop: dict):
    """SIGTERM and Ctrl-C set stop["signal"], which fit reads after every step (a step boundary:
    nothing half done); a second Ctrl-C stops at once."""
    def handler(signum, frame):
        if stop["signal"] is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop["signal"] = signal.Signals(signum).name
    return signals_to(handler)


def finished(members: list[Member]) -> list[Member]:
    """The members that may be the best one (figures=best): ended ok or diverged, with a val/acc."""
    return [m for m in members if m.metrics["status"] in (runs.OK, runs.DIVERGED) and "val/acc" in m.metrics]


def best(members: list[Member]) -> Member | None:
    return max(finished(members), key=lambda m: m.metrics["val/acc"], default=None)


def fit(members: list[Member], cfg: DictConfig, stop: dict, how: str = "vmap", checkpoint_every: int = 1) -> None:
    """Every member's fit, as Lightning's loop with fused steps takes it (nnlab/fused.py): steps in
    groups of k = gcd(steps an epoch, log interval), logging at group ends, validation and the
    epoch's schedule step at the epoch's end. `how`: vmap or loop (see VECTORIZE)."""
    per_epoch = steps_per_epoch(members[0])
    every, epochs = cfg.trainer.log_every_n_steps, cfg.trainer.max_epochs
    k = math.gcd(per_epoch, every or per_epoch)
    sums = EpochSums()  # every member's training sums of the epoch, one row each: (members, 2)
    sums.loss, sums.hits = sums.loss.repeat(len(members), 1), sums.hits.repeat(len(members), 1)
    for slot, m in enumerate(members):
        m.slot, m.sums = slot, sums
    stack = Stack(members)  # before the optimizers: they take the members' views of it
    for m in members:
        m.configure(epochs * per_epoch)
        if m.saved is not None:
            # its run's first batch for first_batch.png, drawn again from its RNG as build left it
            m.first_batch = next(epoch_batches(m))
            restore(m, per_epoch)  # into the stack's rows
        m.epoch_rng = m.rng  # before an epoch's draw of its data order (a stopped member's: its last)
    template = members[0].module.net  # the architecture; the stacked weights go in
    if how == "vmap":
        vmapped = vmap(lambda params, x: functional_call(template, params, (x,)))
        forward = lambda params, xs: vmapped(params, torch.stack(xs)).unbind(0)  # noqa: E731
    else:
        def forward(params: dict, xs: list[Tensor]) -> list[Tensor]:
            """Each member's own forward in turn, on its rows of the stack and its batch: the same ops
            as its run. The rows are views (unbind), whose backward stacks their gradients."""
            rows = zip(*(t.unbind(0) for t in params.values()))
            return [functional_call(template, dict(zip(params, row)), (x,)) for row, x in zip(rows, xs)]
    first, done = members[0].start  # every member's (a population continues from one place)
    for epoch in range(first, epochs):
        active = [m for m in members if not m.stopped]
        if not active:
            break
        for m in active:
            m.epoch_rng = m.rng  # before the epoch's draw: a run stopped within it draws it again
        start = done if epoch == first else 0
        batches = {id(m): epoch_batches(m, skip=start) for m in active}
        if start == 0:
            for m in active:
                m.finite_loss = None
        for i in range(start, per_epoch):
            going = [m for m in active if not m.stopped]
            if not going:
                break
            taken = [next(batches[id(m)]) for m in going]
            steps.step(going, taken, forward, stack, sums)
            for m, (_, y) in zip(going, taken):
                m.figures.seen += len(y)
            last = i == per_epoch - 1
            for m in going:
                if m.diverged or (i + 1) % k == 0 or last:  # a group's end (or where the member stopped)
                    end_group(m, every, last_group=i // k == (per_epoch - 1) // k)
                if m.diverged or last:
                    end_epoch(m, epochs)
                if last and checkpoint_every and not m.stopped and m.epoch % checkpoint_every == 0:  # as a run does:
                    save_member(m, (m.epoch, 0, m.rng), m.points)  # a kill loses the epoch at most
            if stop["signal"]:  # a step boundary: each member's checkpoint continues it from here
                for m in members:
                    m.boundary = (epoch + 1, 0, m.rng) if last else (epoch, i + 1, m.epoch_rng)
                raise Stopped(f"{stop['signal']} at step {going[0].step}")


def train_loader(m: Member) -> TensorLoader:
    """The member's training loader, as its run's data module serves it (not yet drawn from)."""
    x, y = m.data.train_set
    return TensorLoader(x, y, m.data.batch_size or len(y), shuffle=m.data.batch_size is not None,
                        repeat=m.data.train_repeat)


def steps_per_epoch(m: Member) -> int:
    return train_loader(m).minibatches()


def epoch_batches(m: Member, skip: int = 0):
    """The member's training batches of one epoch from its `skip`-th on, an iterator in its own data
    order. Each batch is gathered from the shared tensors when the step takes it (MNIST: an epoch's
    batches held at once would be a copy of the 172 MB training set per member). The pass's seed is
    drawn from the member's own RNG as its run draws it, at the first batch: the loader draws nothing
    more from it after that."""
    loader = train_loader(m)
    batches = iter(loader)
    with m.own_rng():
        first = next(batches)
    if skip:  # a member continued mid-epoch: the same pass (its seed), from where it stopped
        loader.resume(loader.seed, skip)
        return iter(loader)
    if m.first_batch is None and m.saved is None:  # what Figures prints and draws of a run's first batch
        m.first_batch = first
        m.note(Figures.describe(*first))
    return itertools.chain([first], batches)


class Stack:
    """The population's parameters as one leaf tensor a parameter, (members, *shape): the vectorised
    forward takes them as they are, and the backward leaves one gradient a parameter (where stacking
    the members' own leaves every step cost a stack and an unstack, and a gradient accumulation a
    member and parameter: ~40% of a step). Each member's parameters become views of its row
    (nn.Parameter on the same storage), so its own torch.optim optimizer updates the stack in place,
    and its .grad is a view of its row of `grads`, the gradient copied there every step."""

    def __init__(self, members: list[Member]):
        names, self.size = list(members[0].params), len(members)
        with torch.no_grad():
            self.leaves = {n: torch.stack([m.params[n] for m in members]).requires_grad_() for n in names}
        self.grads = {n: torch.zeros_like(t) for n, t in self.leaves.items()}
        for i, m in enumerate(members):
            for n in names:
                owner, _, attr = n.rpartition(".")
                view = nn.Parameter(self.leaves[n].detach()[i])
                setattr(m.module.net.get_submodule(owner), attr, view)
            m.module.list_parameters()
            m.params = dict(m.module.net.named_parameters())
            for n, p in m.params.items():
                p.grad = self.grads[n][i]
        # Classifier.l2_penalty's weights (2 or more dimensions a member), in its order
        self.weights = [n for n in names if self.leaves[n].ndim >= 3]

    @torch.no_grad()
    def sgd_step(self, plain: list[tuple[int, float]]) -> None:
        """torch.optim.SGD's step without momentum or weight decay, `p.add_(grad, alpha=-lr)`, for
        these (row, lr) members at once: `p.addcmul_(grad, lr, value=-1)`, the form torch.optim.SGD
        takes for a tensor lr, the same floats on this CPU (tests/test_population.py checks it
        against torch.optim.SGD). One op a parameter, where a step of each member's optimizer cost
        ~25 us a member."""
        rows = torch.tensor([r for r, _ in plain])
        lr = torch.tensor([v for _, v in plain])
        for n, t in self.leaves.items():
            shape = (-1,) + (1,) * (t.ndim - 1)
            if len(plain) == len(t):
                t.addcmul_(self.grads[n], lr.view(shape), value=-1)
            else:
                t.index_copy_(0, rows, t[rows].addcmul(self.grads[n][rows], lr.view(shape), value=-1))

    def zero(self) -> None:
        for t in self.leaves.values():
            t.grad = None

    def params(self, rows: Tensor | None) -> dict[str, Tensor]:
        return self.leaves if rows is None else {n: t[rows] for n, t in self.leaves.items()}

    def squares(self, params: dict[str, Tensor]) -> Tensor:
        """Each member's sum of its squared weights (Classifier.l2_penalty's, in its order): (members,)."""
        return sum(params[n].pow(2).sum(tuple(range(1, params[n].ndim))) for n in self.weights)

    def gradients(self) -> dict[str, Tensor]:
        for n, t in self.leaves.items():
            self.grads[n].copy_(t.grad)  # the members' .grad views see it
        return self.grads


def end_group(m: Member, every: int, last_group: bool) -> None:
    """Where Lightning ends a (fused) batch: the epoch's schedule step after its last group, then
    train/loss (and lr) as Classifier.on_train_batch_end logs them."""
    if m.scheduler is not None and m.module.hparams.scheduler_interval != "step" and last_group:
        steps.schedule(m)
    point = bool(every and m.step % every == 0 or m.diverged)
    if m.finite_loss is not None:
        m.callback_metrics["train/loss"] = m.finite_loss
        if point:
            m.log_point({"train/loss": m.finite_loss, "lr": m.optimizer.param_groups[0]["lr"]}, m.step)
    if every and m.step % every == 0 and math.isfinite(m.loss.item()):  # Figures.on_train_batch_end's curve
        m.figures.train_curve.append((m.figures.seen, m.loss.item()))


@torch.inference_mode()
def score(m: Member, stage: str) -> dict:
    """Validation or test of a member, as the Classifier's hooks log it."""
    data = m.data
    x, y = data.val_set if stage == "val" else data.test_set
    with m.own_rng():  # the loader's draw, as the run's own
        batches = list(TensorLoader(x, y, data.eval_batch_size))
    m.module.eval()
    for bx, by in batches:
        out = m.module.net(bx)
        m.module.sums[stage].update(F.cross_entropy(out, by), out, by)
    m.module.train()
    loss, acc = m.module.sums[stage].pop(lambda t: t)
    means = {f"{stage}/acc": acc, f"{stage}/loss": loss}
    m.callback_metrics.update(means)
    m.log_point(means, m.step)
    return means


def end_epoch(m: Member, epochs: int) -> None:
    score(m, "val")
    m.epoch += 1
    cb = m.cfg.callbacks
    if "epoch_log" in cb and (m.epoch % cb.epoch_log.every_n_epochs == 0 or m.epoch == epochs):
        shown = "  ".join(f"{k} {m.callback_metrics[k].item():.4f}" for k in ("train/loss", "val/loss", "val/acc")
                          if k in m.callback_metrics)
        m.note(f"epoch {m.epoch}/{epochs}  step {m.step}  {shown}")
    if "val/loss" in m.callback_metrics:
        m.figures.val_curve.append((m.figures.seen, m.callback_metrics["val/loss"].item()))
    own = m.module.sums["fit"]  # the member's row, popped as its run pops its sums
    own.load_state_dict({"loss": m.sums.loss[m.slot], "hits": m.sums.hits[m.slot]})
    m.sums.loss[m.slot], m.sums.hits[m.slot] = 0, 0
    loss, acc = own.pop(lambda t: t)
    means = {"train/acc": acc, "train/loss_epoch": loss}
    m.callback_metrics.update(means)
    m.log_point(means, m.step)
    if m.diverged or m.epoch == epochs:
        m.stopped = True


def test_member(m: Member) -> None:
    m.metrics.update({k: v.item() for k, v in m.callback_metrics.items()})
    m.metrics.update({k: v.item() for k, v in score(m, "test").items()})
    m.metrics["test/n"] = len(m.data.test_set[1])
    m.metrics["classes"] = m.data.num_classes
    m.metrics["status"] = runs.DIVERGED if m.diverged else runs.OK
    if m.diverged:
        m.metrics["error"] = f"{m.diverged}: lower optimizer.lr"


def finish(m: Member, seconds: float, draw: bool) -> None:
    """The member's outputs, as a run of its own leaves them: TensorBoard events, figures,
    checkpoint, metrics.json, train.log's last lines. A member interrupted other than at a step
    boundary (a second Ctrl-C) writes no events or checkpoint: the folder keeps the last boundary's."""
    try:
        if hasattr(m, "points") and (m.metrics["status"] != runs.INTERRUPTED or m.boundary is not None):
            # A resumed member's events file holds its points from where it continued: TensorBoard
            # reads the folder's files as one run, every step once.
            loggers = train_loggers(m.cfg)  # as a run alone makes them
            trainer = SimpleNamespace(is_global_zero=True, datamodule=m.data, loggers=loggers, global_step=m.step)
            for logger in loggers:
                logger.log_hyperparams(dict(m.module.hparams))  # what Lightning logs as fit starts
                for values, step in m.points:
                    logger.log_metrics(values, step)
            board = tensorboard(trainer)
            if board is not None and m.first_batch is not None and not m.logged:  # a resumed run's has it
                board.add_text("data/first_batch", Figures.describe(*m.first_batch))
            if m.metrics["status"] in (runs.OK, runs.DIVERGED):
                runs.hparams(loggers, m.cfg, m.metrics, m.step)
                if draw:
                    m.figures.on_fit_end(trainer, m.module)
                    if m.first_batch is not None:
                        m.figures.draw_batch(trainer, *m.first_batch)
            for logger in loggers:
                logger.finalize("success")
            if "checkpoint" in m.cfg.callbacks:
                save_member(m, m.boundary if m.metrics["status"] == runs.INTERRUPTED else None)
    finally:
        m.metrics.update(epochs=getattr(m, "epoch", 0), steps=getattr(m, "step", 0), seconds=seconds,
                         device="cpu", threads=torch.get_num_threads(), torch=torch.__version__)
        runs.write_json(m.run_dir / "metrics.json", m.metrics)
        lines = runs.summary(m.run_dir, m.metrics, ", the population's")
        m.note(lines)  # its train.log's, as a run in a sweep writes it (the console has the sweep's progress)
        if m.metrics["status"] == runs.DIVERGED:
            m.note(f"nnlab: {m.metrics['error']}")
        m.handler.close()


def save_member(m: Member, place: tuple | None = None, points: list | None = None) -> None:
    """checkpoints/last.ckpt with what make evaluate and a reader of Lightning checkpoints use, and at
    a step boundary `place` ((epoch, steps done in it, its RNG there): where it stopped, or an epoch's
    end), what the population needs to continue it exactly; `points`: its TensorBoard points not yet
    in its events file (an epoch's checkpoint: they are written when it ends)."""
    # clones: a member's parameters are views of the population's stack (Stack), and torch.save
    # writes a view's whole storage
    state = {k: v.clone() for k, v in m.module.state_dict().items()}
    ckpt = {"state_dict": state, "hyper_parameters": dict(m.module.hparams),
            "epoch": m.epoch, "global_step": m.step, "pytorch-lightning_version": L.__version__,
            "optimizer_states": [m.optimizer.state_dict()],
            "lr_schedulers": [m.scheduler.state_dict()] if m.scheduler is not None else []}
    if place is not None:
        epoch, done, rng = place
        ckpt["population"] = {
            "version": STATE_VERSION, "place": [epoch, done],  # the population's epoch, steps done in it
            "rng": rng,  # torch's RNG as the member's run had it before that epoch's data order was drawn
            "loss": m.loss, "finite_loss": m.finite_loss, "diverged": m.diverged, "stopped": m.stopped,
            "sums": {"loss": m.sums.loss[m.slot].clone(), "hits": m.sums.hits[m.slot].clone()},  # the epoch's so far
            "callback_metrics": dict(m.callback_metrics), "figures": m.figures.state_dict(),
            "points": list(points or []), "events": points is None}  # events: its earlier points are on disk
    AtomicCheckpointIO().save_checkpoint(ckpt, m.run_dir / "checkpoints" / "last.ckpt")


def saved_state(run_dir: Path, cfg: DictConfig) -> tuple[dict | None, str | None]:
    """An interrupted member's checkpoint when the population can continue it, else None and why not
    (one line)."""
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    if not ckpt.exists():
        return None, f"it was interrupted before it saved {ckpt.name}"
    try:
        saved = read_checkpoint(ckpt)
        state, config = saved.get("population"), saved["hyper_parameters"]["config"]
    except UnreadableCheckpoint as e:
        return None, str(e)
    except (KeyError, TypeError) as e:  # loads, but not a member's
        return None, f"{ckpt} is not a readable checkpoint (no {e})"
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        return None, f"{ckpt} holds no population state it can continue from (not stopped at a step boundary)"
    if config != OmegaConf.to_container(cfg, resolve=True):
        return None, f"{ckpt} was saved by a run of another config"
    return saved, None


def restore(m: Member, per_epoch: int) -> None:
    """The member as it was where it stopped: weights, optimizer, schedule, counters, the epoch's
    sums and losses so far, its RNG, what it had logged and drawn (its points so far are on disk)."""
    saved, state = m.saved, m.saved["population"]
    m.module.load_state_dict(saved["state_dict"])  # in place: m.params are these tensors
    m.optimizer.load_state_dict(saved["optimizer_states"][0])
    if m.scheduler is not None:
        m.scheduler.load_state_dict(saved["lr_schedulers"][0])
    m.step, m.epoch = saved["global_step"], saved["epoch"]
    m.rng, m.loss, m.finite_loss = state["rng"], state["loss"], state["finite_loss"]
    m.diverged, m.stopped, m.callback_metrics = state["diverged"], state["stopped"], dict(state["callback_metrics"])
    m.sums.loss[m.slot], m.sums.hits[m.slot] = state["sums"]["loss"], state["sums"]["hits"]
    m.figures.load_state_dict(state["figures"])
    m.points, m.logged = list(state.get("points", [])), state.get("events", True)  # killed: none on disk
    epoch, done = m.start
    line = f"continues from step {m.step} (epoch {epoch + 1}, after {done} of its {per_epoch} steps)"
    m.note(line)  # its train.log's; the population says once how many continue (run_share)
