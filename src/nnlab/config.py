"""What a run's config may hold, checked before any work: one line per problem, naming the key,
the value and what is allowed.

The schema is typed code, not a second copy of it: top-level settings are the `Settings` dataclass,
and each `_target_` node (model, data, optimizer, scheduler, trainer, callbacks, logger) may only
hold the typed arguments of its class's `__init__`. Only classes of nnlab, torch.nn, torch.optim and
lightning.pytorch may be instantiated: Hydra would otherwise import and call any `_target_` given on
the command line (`+model._target_=builtins.open` truncates a file under plain Hydra).
"""
import dataclasses
import inspect
import math
import types
import typing
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.utils import get_class
from omegaconf import DictConfig, ListConfig, OmegaConf

from nnlab import CONF_DIR

ALLOWED_TARGETS = ("nnlab.", "torch.nn.", "torch.optim.", "lightning.pytorch.", "lightning.Trainer")
GROUPS = ("model", "data", "optimizer", "scheduler", "trainer", "experiment", "sweep")
HYDRA_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}


class ConfigError(ValueError):
    """A config value that would fail or mislead the run; the message names the key and a fix."""


@dataclasses.dataclass
class Settings:
    """The types of conf/train.yaml's top-level keys besides the groups (values and comments: there)."""
    seed: int
    l2: float
    log_interval: int
    run_dir: str
    scheduler_interval: str
    threads: int | None
    resume: str | None
    channels_last: bool
    compile: bool | str | None
    fused: bool


def _number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")  # torch.compile's

# Ranges that types cannot say: (key, test, what is allowed).
RANGES = [("optimizer.lr", lambda v: _number(v) and v > 0, "a positive number, e.g. optimizer.lr=0.01"),
          ("scheduler.gamma", lambda v: v is None or _number(v) and 0 < v <= 1, "in (0, 1], e.g. 0.95"),
          ("scheduler.max_lr", lambda v: v is None or _number(v) and v > 0, "a positive number"),
          ("trainer.max_epochs", lambda v: isinstance(v, int) and v >= 1, "a whole number >= 1"),
          ("data.batch_size", lambda v: v is None or isinstance(v, int) and v >= 1, "a whole number >= 1"),
          ("l2", lambda v: _number(v) and v >= 0, "a number >= 0, e.g. l2=0.001"),
          ("log_interval", lambda v: isinstance(v, int) and v >= 1, "a whole number >= 1"),
          ("threads", lambda v: v is None or isinstance(v, int) and v >= 1, "a whole number >= 1, or null"),
          ("scheduler_interval", lambda v: v in ("epoch", "step"), "epoch or step"),
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
        cls = get_class(target)
    except Exception:
        raise ConfigError(f"{key}={target!r} is not a class nnlab can find: check the spelling") from None
    return cls


def _check_node(prefix: str, node: DictConfig) -> None:
    """A `_target_` node: an allowed class, and only its typed __init__ arguments."""
    cls = check_target(f"{prefix}._target_", node["_target_"])
    params = inspect.signature(cls.__init__).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # annotations that do not evaluate here: check names only
        hints = {}
    for name in node:
        if name in HYDRA_KEYS:
            continue
        if name not in params and not takes_any:
            known = ", ".join(n for n in params if n not in ("self", "args", "kwargs", "params", "optimizer"))
            raise ConfigError(f"{prefix}.{name} is not an option of {node['_target_']}: its options are {known}")
        value = node[name]
        if name in hints and not OmegaConf.is_config(value):
            _check_type(f"{prefix}.{name}", value, hints[name])


def _walk(prefix: str, node) -> None:
    if isinstance(node, DictConfig):
        if "_target_" in node:
            _check_node(prefix, node)
        for k in node:
            if k not in HYDRA_KEYS:
                _walk(f"{prefix}.{k}" if prefix else str(k), node[k])
    elif isinstance(node, ListConfig):
        for i, item in enumerate(node):
            _walk(f"{prefix}[{i}]", item)


def check(cfg: DictConfig) -> None:
    """Every problem found raises ConfigError with one line; silent when the config is sound."""
    hints = typing.get_type_hints(Settings)
    groups = {"model", "data", "optimizer", "scheduler", "trainer", "callbacks", "logger", "hydra"}
    for key in cfg:
        if key not in hints and key not in groups:
            raise ConfigError(f"{key} is not an nnlab setting: the settings are {', '.join(hints)} "
                              f"and the groups {', '.join(sorted(groups - {'hydra'}))}")
        if key in hints:
            _check_type(key, cfg[key], hints[key])
    for key, ok, want in RANGES:
        value = OmegaConf.select(cfg, key, default=None)
        if not ok(value):
            raise ConfigError(f"{key}={value!r} is invalid: it must be {want}")
    for key in cfg:
        if key in groups - {"hydra"}:
            _walk(str(key), cfg[key])


def _targets(key: str, value) -> None:
    """Every `_target_` inside an override's value (a dict, or a list of them, at any depth)."""
    if isinstance(value, dict):
        for k, v in value.items():
            (check_target if k == "_target_" else _targets)(f"{key}.{k}", v)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _targets(f"{key}[{i}]", v)


def check_argv(argv: list[str]) -> list[str]:
    """Before Hydra sees the command line: group choices that exist, and no `_target_` outside the
    allow-list anywhere (Hydra instantiates hydra.* targets, e.g. callbacks, before nnlab runs). Each
    override is read by Hydra's own parser, so a value means here what it will mean to Hydra.
    Returns argv with `resume=<run folder>` quoted: run folders are named `a=1,b=2`, which Hydra's
    grammar would read as a sweep."""
    argv = [f"resume='{a.split('=', 1)[1]}'" if a.startswith("resume=") and "'" not in a else a for a in argv]
    parser = OverridesParser.create()
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        try:
            (override,) = parser.parse_overrides([arg])
            values = list(override.sweep_iterator()) if override.is_sweep_override() else [override.value()]
        except HydraException:  # unreadable: Hydra stops on it before building anything; glob(): existing names
            continue
        key = override.key_or_group
        for value in values:
            if key.split(".")[-1] == "_target_":
                check_target(key, value)
            _targets(key, value)
            if key in GROUPS and value is not None:
                options = sorted(p.stem for p in (Path(CONF_DIR) / key).glob("*.yaml"))
                if value not in options:
                    raise ConfigError(f"{key}={value} is not an option: {key} is one of {', '.join(options)}")
    return argv
