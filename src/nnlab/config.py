"""What a run's config may hold, checked before any work: one line per problem, naming the key,
the value and what is allowed.

The schema is typed code, not a second copy of it: top-level settings are the `Settings` dataclass,
and each `_target_` node (model, data, optimizer, scheduler, trainer, callbacks, logger) may only
hold the typed arguments of its class's `__init__`. Only classes of nnlab, torch.nn, torch.optim and
lightning.pytorch may be instantiated: Hydra would otherwise import and call any `_target_` given on
the command line (`+model._target_=builtins.open` truncates a file under plain Hydra).

One gate, `gate()`, stands before everything nnlab instantiates: a run's composed config, a resumed
run's saved config, a checkpoint's stored config, the nodes Hydra itself builds (nnlab.app checks
them with it before Hydra starts). It resolves every interpolation first (so a node made by
`${oc.create:...}` is seen) and checks every `_target_` at every depth, `_args_` and lists included;
callers build only from the resolved, checked copy it returns.
"""
import dataclasses
import difflib
import inspect
import math
import os
import pydoc
import types
import typing
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from nnlab.errors import NnlabError

ALLOWED_TARGETS = ("nnlab.", "torch.nn.", "torch.optim.", "lightning.pytorch.", "lightning.Trainer")
# Where an allowed name's class must be defined: a module imports other classes too
# (lightning.pytorch.strategies.launchers.subprocess_script.subprocess.Popen is a path to Popen).
ALLOWED_MODULES = ("nnlab.", "torch.", "lightning.")
# Hydra's own keys in a `_target_` node, and what instantiate takes for each
HYDRA_KEYS = {"_target_": (lambda v: isinstance(v, str), "a class's name"),
              "_partial_": (lambda v: isinstance(v, bool), "true or false"),
              "_recursive_": (lambda v: isinstance(v, bool), "true or false"),
              "_convert_": (lambda v: v in ("none", "partial", "object", "all"), "none, partial, object or all"),
              "_args_": (lambda v: isinstance(v, ListConfig), "a list")}
# nnlab's own keys inside a group's `_target_` node: settings of how nnlab uses the object, taken out
# before the class is built (scheduler_parts). scheduler.interval: when the schedule steps.
NNLAB_KEYS = {"scheduler": {"interval"}}


class ConfigError(NnlabError, ValueError):
    """A config value that would fail or mislead the run; the message names the key and a fix."""


@dataclasses.dataclass
class Settings:
    """The types of conf/train.yaml's top-level keys besides the groups (values and comments: there)."""
    seed: int
    l2: float
    log_interval: int
    run_dir: str
    threads: int | None
    resume: str | None
    channels_last: bool
    compile: bool | str | None
    fused: bool


def _number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")  # torch.compile's

# Ranges that types cannot say: (key, test, what is allowed).
RANGES = [("seed", lambda v: isinstance(v, int) and 0 <= v < 2**32, "a whole number in [0, 2**32), e.g. seed=0"),
          ("optimizer.lr", lambda v: _number(v) and v > 0, "a positive number, e.g. optimizer.lr=0.01"),
          ("optimizer.momentum", lambda v: v is None or _number(v) and v >= 0, "a number >= 0, e.g. 0.9"),
          ("optimizer.weight_decay", lambda v: v is None or _number(v) and v >= 0, "a number >= 0, e.g. 0.0005"),
          ("model.init_std", lambda v: v is None or _number(v) and v > 0, "a positive number, or null"),
          ("data.noise", lambda v: v is None or _number(v) and 0 <= v <= 100, "a number in [0, 100] (radians)"),
          ("data.n", lambda v: v is None or isinstance(v, int) and 1 <= v <= 10**7, "a whole number in [1, 10**7]"),
          ("data.k", lambda v: v is None or isinstance(v, int) and 2 <= v <= 1000, "a whole number in [2, 1000]"),
          ("trainer.gradient_clip_val", lambda v: v is None or _number(v) and v >= 0, "a number >= 0, or null"),
          ("data.steps_per_epoch", lambda v: v is None or isinstance(v, int) and v >= 1, "a whole number >= 1"),
          ("scheduler.gamma", lambda v: v is None or _number(v) and 0 < v <= 1, "in (0, 1], e.g. 0.95"),
          ("scheduler.max_lr", lambda v: v is None or _number(v) and v > 0, "a positive number"),
          ("trainer.max_epochs", lambda v: isinstance(v, int) and v >= 1, "a whole number >= 1"),
          ("data.batch_size", lambda v: v is None or isinstance(v, int) and v >= 1, "a whole number >= 1"),
          ("l2", lambda v: _number(v) and v >= 0, "a number >= 0, e.g. l2=0.001"),
          ("log_interval", lambda v: isinstance(v, int) and v >= 1, "a whole number >= 1"),
          ("threads", lambda v: v is None or isinstance(v, int) and v >= 1, "a whole number >= 1, or null"),
          ("scheduler.interval", lambda v: v in (None, "epoch", "step"), "epoch (after every epoch) or step "
           "(after every optimizer step), e.g. scheduler.interval=step"),
          ("compile", lambda v: v in (None, False, True, *COMPILE_MODES), f"null or a torch.compile mode: {', '.join(COMPILE_MODES)}")]


def _fits(value, hint) -> bool | None:
    """Does a plain config value fit a type hint? None when the hint is too rich to judge."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is typing.Any or isinstance(hint, typing.TypeVar):
        return None
    if origin in (typing.Union, types.UnionType):
        verdicts = [_fits(value, a) for a in args]
        return True if True in verdicts else None if None in verdicts else False
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (tuple, list) or hint in (tuple, list):
        return isinstance(value, list | tuple | ListConfig)
    return None


def _check_type(key: str, value, hint) -> None:
    if _fits(value, hint) is False:
        shown = getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
        raise ConfigError(f"{key}={value!r} is invalid: it must be of type {shown}")


def check_target(key: str, target) -> type:
    """The class a `_target_` names, if it is one nnlab may build; imported only after the name passed."""
    if not isinstance(target, str) or not target.startswith(ALLOWED_TARGETS):
        raise ConfigError(f"{key}={target!r} is not allowed: only classes from {', '.join(ALLOWED_TARGETS)} "
                          "can be instantiated")
    try:
        cls = pydoc.locate(target)  # None where nothing has that name (Hydra's get_class would log it too)
    except pydoc.ErrorDuringImport as e:
        raise ConfigError(f"{key}={target!r}: its module fails to import ({e.exc.__name__})") from None
    if not isinstance(cls, type):
        raise ConfigError(f"{key}={target!r} is not a class nnlab can find: check the spelling")
    if not cls.__module__.startswith(ALLOWED_MODULES):
        raise ConfigError(f"{key}={target!r} is not allowed: it names {cls.__module__}.{cls.__qualname__}, a class "
                          f"from outside {', '.join(ALLOWED_TARGETS)}")
    return cls


def _check_node(prefix: str, node: DictConfig) -> None:
    """A `_target_` node: an allowed class, and only its typed __init__ arguments."""
    cls = check_target(f"{prefix}._target_", node["_target_"])
    params = inspect.signature(cls.__init__).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    try:
        hints = typing.get_type_hints(cls.__init__)
    except (NameError, TypeError):  # annotations that do not evaluate here: check names only
        hints = {}
    for name in node:
        if name in HYDRA_KEYS:
            ok, want = HYDRA_KEYS[name]
            if not ok(node[name]):
                raise ConfigError(f"{prefix}.{name}={node[name]!r} is invalid: it must be {want}")
            continue
        if name in NNLAB_KEYS.get(prefix, ()):
            continue
        if name not in params and not takes_any:
            known = ", ".join(n for n in params if n not in ("self", "args", "kwargs", "params", "optimizer"))
            raise ConfigError(f"{prefix}.{name} is not an option of {node['_target_']}: its options are {known}")
        value = node[name]
        if name in hints and not (isinstance(value, DictConfig) and "_target_" in value):  # an object: checked below
            _check_type(f"{prefix}.{name}", value, hints[name])


def check_tree(prefix: str, node) -> None:
    """Every node below, `_args_` included: a positional argument can be a `_target_` node too."""
    if isinstance(node, DictConfig):
        if "_target_" in node:
            _check_node(prefix, node)
        for k in node:
            if k != "_target_":
                check_tree(f"{prefix}.{k}" if prefix else str(k), node[k])
    elif isinstance(node, ListConfig):
        for i, item in enumerate(node):
            check_tree(f"{prefix}[{i}]", item)
    elif isinstance(node, float) and not math.isfinite(node):
        raise ConfigError(f"{prefix}={node} is invalid: every number must be finite")


def scheduler_parts(node: DictConfig | None) -> tuple[DictConfig | None, str]:
    """A checked scheduler node split in two: the partial's config, without nnlab's `interval`, and
    that interval ("epoch" where unset, as Lightning's default). A null scheduler: (None, "epoch")."""
    if node is None:
        return None, "epoch"
    interval = node.get("interval") or "epoch"
    return OmegaConf.create({k: v for k, v in node.items() if k != "interval"}), interval


def check_size(model: DictConfig, in_shape: tuple[int, ...], num_classes: int) -> None:
    """A model whose training cannot fit in this machine's memory, refused with its size. Counted on
    the meta device: shapes only, nothing allocated and no random number drawn."""
    with torch.device("meta"):
        n = sum(p.numel() for p in instantiate(model, in_shape=in_shape, num_classes=num_classes).parameters())
    need = 3 * 4 * n  # float32 weights, their gradients and at least one optimizer state (momentum)
    have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > have:
        args = ", ".join(f"model.{k}={v}" for k, v in model.items() if not str(k).startswith("_"))
        raise ConfigError(f"{model._target_} ({args}) has {n:.3g} parameters: training needs over {need / 1e9:.0f} GB "
                          f"(weights, gradients, optimizer state), more than this machine's {have / 1e9:.0f} GB")


def _resolved(cfg, prefix: str = "") -> DictConfig:
    try:
        return OmegaConf.create(OmegaConf.to_container(OmegaConf.create(cfg) if isinstance(cfg, dict) else cfg,
                                                       resolve=True))
    except (OmegaConfBaseException, ValueError) as e:  # unknown resolver, missing key, a value it cannot hold...
        raise ConfigError(f"{prefix or 'the config'} does not resolve: {str(e).splitlines()[0]}") from None


def gate(cfg, prefix: str = "") -> DictConfig:
    """The resolved copy of `cfg` (a config or plain dict), every `_target_` in it checked at every
    depth. Build only from what this returns: its interpolations cannot resolve to anything else later."""
    resolved = _resolved(cfg, prefix)
    check_tree(prefix, resolved)
    return resolved


def check(cfg: DictConfig) -> DictConfig:
    """The resolved, checked copy of a run's config to build from; any problem found raises
    ConfigError with one line."""
    cfg = _resolved(cfg)  # then checked as gate() checks: ranges first, for their plainer messages
    hints = typing.get_type_hints(Settings)
    groups = {"model", "data", "optimizer", "scheduler", "trainer", "callbacks", "logger", "hydra"}
    for key in cfg:
        if key not in hints and key not in groups:
            raise unknown_key(key, [*hints, *sorted(groups - {"hydra"})])
        if key in hints:
            _check_type(key, cfg[key], hints[key])
    for key in ("callbacks", "logger"):  # each a node of _target_ nodes (an empty one, or null: none)
        node = cfg.get(key)
        bad = node if not isinstance(node, DictConfig | None) else next(
            (k for k, v in (node or {}).items() if not (isinstance(v, DictConfig) and "_target_" in v)), None)
        if bad is not None:
            where = f"{key}={bad!r}" if not isinstance(node, DictConfig) else f"{key}.{bad}={node[bad]!r}"
            raise ConfigError(f"{where} is invalid: each of {key} is a node with a _target_ (conf/train.yaml); "
                              f"~{key}.<name> removes one")
    for key, ok, want in RANGES:
        value = OmegaConf.select(cfg, key, default=None)
        if not ok(value):
            raise ConfigError(f"{key}={value!r} is invalid: it must be {want}")
    check_devices(OmegaConf.select(cfg, "trainer.accelerator", default="auto"),
                  OmegaConf.select(cfg, "trainer.devices", default=1))
    check_writes(cfg)
    check_tree("", cfg)
    return cfg


# Where a run writes, besides what Hydra writes into the run folder itself (conf/train.yaml), and in
# each logger's node (conf/logger/) the keys that name a folder or a file store
WRITES = ("callbacks.checkpoint.dirpath", "callbacks.interrupt.dirpath", "callbacks.figures.run_dir")
LOGGER_WRITES = ("save_dir", "dir", "artifact_location", "tracking_uri")  # dir: W&B's save_dir, by its own name


def writes(cfg: DictConfig) -> list[tuple[str, str]]:
    """(key, path) of every folder or file a run's callbacks and loggers write into. A tracking URI is
    a path where it names a file store (sqlite:///path, file:path); a server's URL is no folder."""
    found = [(key, str(v)) for key in WRITES if (v := OmegaConf.select(cfg, key, default=None)) is not None]
    for name, node in (cfg.get("logger") or {}).items():
        for key in LOGGER_WRITES:
            value = str(node.get(key)) if isinstance(node, DictConfig) and node.get(key) is not None else None
            if key == "tracking_uri" and value is not None:
                value = next((value[len(s):] for s in ("sqlite:///", "file://", "file:") if value.startswith(s)), None)
            if value is not None:
                found.append((f"logger.{name}.{key}", value))
    return found


def check_writes(cfg: DictConfig) -> None:
    """A run writes into its own run folder only: run_dir is the folder Hydra made for it (where it runs
    under Hydra), and every folder a callback or the logger writes into lies inside run_dir."""
    run_dir = Path(str(cfg.run_dir)).absolute()
    made = OmegaConf.select(HydraConfig.get(), "runtime.output_dir", default=None) if HydraConfig.initialized() else None
    if made is not None and run_dir != Path(made).absolute():
        raise ConfigError(f"run_dir={cfg.run_dir!r} is not the run folder Hydra made: name the folder with "
                          "hydra.run.dir=<folder> (a sweep's: hydra.sweep.dir=<folder>), not run_dir")
    for key, value in writes(cfg):
        if not Path(value).absolute().resolve().is_relative_to(run_dir.resolve()):
            raise ConfigError(f"{key}={value!r} is outside the run folder ({run_dir}): a run writes into its own folder")


def check_devices(accelerator, devices) -> None:
    """More devices than this machine has would hang in DDP's set-up (it waits for ranks that never
    come): refused with the count. On the CPU a device is a process, one a core; on a GPU, a visible GPU."""
    gpu = accelerator in ("gpu", "cuda") or accelerator == "auto" and torch.cuda.is_available()
    have, what = (torch.cuda.device_count(), "visible GPUs") if gpu else (len(os.sched_getaffinity(0)), "CPU cores")
    wanted = len(devices) if isinstance(devices, list | ListConfig) else devices
    if type(wanted) is int and wanted > have:
        raise ConfigError(f"trainer.devices={devices} asks for more devices than this machine has ({have} {what}): "
                          f"use trainer.devices={have} or fewer")


def unknown_key(key: str, known: list[str], fix: str = "") -> ConfigError:
    """`lrr is not a key: did you mean l2, optimizer.lr?`, by difflib on the whole key and its last part."""
    last = {k.split(".")[-1]: k for k in known}
    close = difflib.get_close_matches(key, known, n=3) + \
        [last[k] for k in difflib.get_close_matches(key.split(".")[-1], list(last), n=3)]
    close = list(dict.fromkeys(close))[:4]
    group = key.rsplit(".", 1)[0] if "." in key else None
    near = [k for k in known if group and k.startswith(f"{group}.")] or [k for k in known if "." not in k]
    hint = f"did you mean {', '.join(close)}?" if close else f"the keys there are {', '.join(near)}"
    return ConfigError(f"{key} is not a key: {hint}{fix}")
