"""Which jobs of a sweep train together: pure functions over their overrides and composed configs.

Jobs are grouped by everything but their per-member numbers (MEMBER_KEYS with a number for a value):
two jobs that differ in the model, hidden size, data, batch size, epochs, optimizer or scheduler
class, or any other key, are in different groups. A group trains as a population when `supported`
(an allow-list of classes and capabilities) says so; each member's config is derived from the
group's one composition (`derive`: equal to Hydra's own composition of the job, tested)."""
import copy
import dataclasses

import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, MLFlowLogger, TensorBoardLogger, WandbLogger
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from nnlab import cores
from nnlab.app import sweeper_class
from nnlab.callbacks import EpochLog, Figures
from nnlab.checkpoint import Interrupt, RNGState
from nnlab.compat import hydra_basic
from nnlab.config import ConfigError, check_target, gate
from nnlab.data.loader import TensorDataModule

# Keys whose numbers a population's members may differ in (a key with a prefix, +k=1, adds a key:
# structural); any key under optimizer. and scheduler. (lr, momentum, weight_decay, betas, gamma...).
MEMBER_KEYS = ("seed", "l2", "model.init_std")
MEMBER_PREFIXES = ("optimizer.", "scheduler.")
FIGURES = ("none", "best", "all")
# How a population steps its members: vmap (one vectorised forward and backward for all) or loop
# (each member's own forward in turn, one backward). auto: what the model class says of itself
# (its `vmap_on_cpu`): on this 2-core CPU vmapped convolutions are slower than the members' own
# (8 CNN members: 0.62x; docs/population-evidence.md). On a GPU auto is vmap for every model: one kernel launch
# for all members where the loop launches one a member.
VECTORIZE = ("auto", "vmap", "loop")
LOGGERS = (TensorBoardLogger, CSVLogger, MLFlowLogger, WandbLogger)  # conf/logger/'s: a member writes to each as a run does
# conf/train.yaml's callbacks (any may be left out): what the population does in their place
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


def device_of(cfg: DictConfig) -> torch.device | None:
    """The device a population of this (composed) config trains on, as Lightning would choose it for
    one of its runs (`trainer.accelerator`: cpu, gpu or cuda, or auto: the GPU where there is one),
    or None for an accelerator the population does not use (mps, tpu...)."""
    accelerator = OmegaConf.select(cfg, "trainer.accelerator", default=None)
    if accelerator in ("gpu", "cuda") or accelerator == "auto" and torch.cuda.is_available():
        return torch.device("cuda", 0)  # devices: 1, Lightning's first GPU
    return torch.device("cpu") if accelerator in ("cpu", "auto") else None


def supported(cfg: DictConfig) -> str | None:
    """Why the population cannot train this (composed) config, or None when it can. An allow-list of
    classes and capabilities: anything not named here, and any app that is not an nnlab run (no
    trainer, model or data), takes the basic launcher's path."""
    if not all(OmegaConf.select(cfg, k, default=None) is not None for k in ("model", "data", "trainer", "callbacks")):
        return "the population trains nnlab runs only (a config with model, data, trainer and callbacks)"
    trainer, sweeper = cfg.trainer, sweeper_class(OmegaConf.select(cfg, "hydra.sweeper"))
    device = device_of(cfg)
    gpu = device is not None and device.type == "cuda"
    data = built_class(cfg, "data")
    checks = [
        (data is not None and issubclass(data, TensorDataModule), "data other than tensors in memory (TensorDataModule)"),
        (stackable(cfg), "models whose class is not stackable, or with buffers (batch norm)"),
        (cfg.get("fused") and not cfg.get("compile") and not cfg.get("channels_last") and cfg.get("resume") is None,
         "fused=false, compile, channels_last or resume"),
        (set(trainer) <= TRAINER_KEYS and trainer.get("devices") == 1 and device is not None
         and str(trainer.get("precision")) in (("32-true", "32", "bf16-mixed") if gpu else ("32-true", "32"))
         and trainer.get("deterministic") and trainer.get("num_sanity_val_steps") == 0,
         "trainer settings other than conf/trainer/default.yaml's (bf16-mixed too on a GPU)"),
        (not gpu or OmegaConf.select(cfg, "hydra.launcher.gpu", default=False) is True,
         "on a GPU unless hydra.launcher.gpu=true (docs/population.md)"),
        (all(built_class(cfg, f"callbacks.{k}") is CALLBACKS.get(k) for k in cfg.callbacks),
         "callbacks other than conf/train.yaml's"),
        (all(built_class(cfg, f"logger.{k}") in LOGGERS for k in cfg.get("logger") or {}),
         "loggers other than conf/logger/'s"),
        (sweeper is None or hydra_basic("sweeper", sweeper) or getattr(sweeper, "one_process", False),
         "sweepers other than the basic one, nnlab's study and PBT")]
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
    if type(settings.get("gpu", False)) is not bool:
        raise ConfigError(f"hydra.launcher.gpu={settings.get('gpu')} is not an option: true (populations on a GPU) "
                          "or false (a GPU's jobs one after another)")
    return figures, vectorize, workers, every


def vectorized(cfg: DictConfig, setting: str = "auto") -> str:
    """vmap or loop (see VECTORIZE) for a group of this config, `setting` being the launcher's."""
    if setting != "auto":
        return setting
    on_cpu = getattr(device_of(cfg), "type", "cpu") == "cpu"
    return "vmap" if not on_cpu or getattr(built_class(cfg, "model"), "vmap_on_cpu", False) else "loop"


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
