"""What a run's config may hold, checked before any work: one line per problem, naming the key,
the value and what is allowed.

The schema is typed code, not a second copy of it: top-level settings are the `Settings` dataclass,
and each `_target_` node (model, data, optimizer, scheduler, trainer, callbacks, logger) may only
hold the typed arguments of its class's `__init__`. Only classes of nnlab, torch.nn, torch.optim and
lightning.pytorch may be instantiated: Hydra would otherwise import and call any `_target_` given on
the command line (`+model._target_=builtins.open` truncates a file under plain Hydra).

One gate, `gate()`, stands before everything nnlab instantiates: a run's composed config, a resumed
run's saved config, a checkpoint's stored config. It resolves every interpolation first (so a node
made by `${oc.create:...}` is seen) and checks every `_target_` at every depth, `_args_` and lists
included; callers build only from the resolved, checked copy it returns. Hydra builds its own
callbacks, launcher, sweeper and logging before nnlab's code runs: `check_argv` guards what reaches
them from the command line, and `check_hydra` composes the config as Hydra will (config files from
`--config-dir`, `--config-name` and `hydra.searchpath` included) and checks those nodes before Hydra
starts.
"""
import argparse
import dataclasses
import difflib
import inspect
import math
import os
import re
import types
import typing
from importlib import resources
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import OverrideType
from hydra.errors import HydraException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from nnlab import CONF_DIR

ALLOWED_TARGETS = ("nnlab.", "torch.nn.", "torch.optim.", "lightning.pytorch.", "lightning.Trainer")
# Where an allowed name's class must be defined: a module imports other classes too
# (lightning.pytorch.strategies.launchers.subprocess_script.subprocess.Popen is a path to Popen).
ALLOWED_MODULES = ("nnlab.", "torch.", "lightning.")
GROUPS = ("model", "data", "optimizer", "scheduler", "trainer", "experiment", "sweep")
HYDRA_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}
# nnlab's own keys inside a group's `_target_` node: settings of how nnlab uses the object, taken out
# before the class is built (scheduler_parts). scheduler.interval: when the schedule steps.
NNLAB_KEYS = {"scheduler": {"interval"}}


class ConfigError(ValueError):
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
          ("data.noise", lambda v: v is None or _number(v) and v >= 0, "a number >= 0"),
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
        cls = get_class(target)
    except Exception:
        raise ConfigError(f"{key}={target!r} is not a class nnlab can find: check the spelling") from None
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
    except Exception:  # annotations that do not evaluate here: check names only
        hints = {}
    for name in node:
        if name in HYDRA_KEYS or name in NNLAB_KEYS.get(prefix, ()):
            continue
        if name not in params and not takes_any:
            known = ", ".join(n for n in params if n not in ("self", "args", "kwargs", "params", "optimizer"))
            raise ConfigError(f"{prefix}.{name} is not an option of {node['_target_']}: its options are {known}")
        value = node[name]
        if name in hints and not OmegaConf.is_config(value):
            _check_type(f"{prefix}.{name}", value, hints[name])


def _walk(prefix: str, node) -> None:
    """Every node below, `_args_` included: a positional argument can be a `_target_` node too."""
    if isinstance(node, DictConfig):
        if "_target_" in node:
            _check_node(prefix, node)
        for k in node:
            if k != "_target_":
                _walk(f"{prefix}.{k}" if prefix else str(k), node[k])
    elif isinstance(node, ListConfig):
        for i, item in enumerate(node):
            _walk(f"{prefix}[{i}]", item)
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
    except Exception as e:  # unknown resolver, missing key, a value OmegaConf cannot hold...
        raise ConfigError(f"{prefix or 'the config'} does not resolve: {str(e).splitlines()[0]}") from None


def gate(cfg, prefix: str = "") -> DictConfig:
    """The resolved copy of `cfg` (a config or plain dict), every `_target_` in it checked at every
    depth. Build only from what this returns: its interpolations cannot resolve to anything else later."""
    resolved = _resolved(cfg, prefix)
    _walk(prefix, resolved)
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
    for key, ok, want in RANGES:
        value = OmegaConf.select(cfg, key, default=None)
        if not ok(value):
            raise ConfigError(f"{key}={value!r} is invalid: it must be {want}")
    _walk("", cfg)
    return cfg


def _leaves(key: str, value):
    """(dotted path, leaf) for every leaf of an override's value, dicts and lists at any depth."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(f"{key}.{k}", v)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _leaves(f"{key}[{i}]", v)
    else:
        yield key, value


# Hydra itself builds these from its config before any nnlab code runs: callbacks (instantiate),
# the launcher and sweeper (plugins instantiated with their nested nodes) and logging
# (logging.config.dictConfig, whose `()` and `class` keys import and call any name).
HYDRA_BUILT = ("hydra.callbacks", "hydra.launcher", "hydra.sweeper", "hydra.job_logging", "hydra.hydra_logging")
# Resolvers a command-line value may call. Others are refused: one that turns text into config nodes
# (oc.create, oc.decode) would make a `_target_` the text check cannot see, inside a node Hydra builds
# before the gate runs (hydra.callbacks, or a launcher key that interpolates a task key).
CLI_RESOLVERS = ("oc.env", "oc.select", "now", "hydra", "nnlab.claim", "nnlab.dirname", "nnlab.subdir")  # all give strings
RESOLVER_CALL = re.compile(r"\$\{\s*([A-Za-z_][\w.-]*)\s*:")


def _check_leaf(path: str, leaf) -> None:
    if path.split(".")[-1] == "_target_":
        check_target(path, leaf)
    if not isinstance(leaf, str):
        return
    for name in RESOLVER_CALL.findall(leaf):
        if name not in CLI_RESOLVERS:
            raise ConfigError(f"{path}: ${{{name}:...}} is not allowed on the command line: only plain ${{key}} "
                              f"references and {', '.join(CLI_RESOLVERS)} (a resolver that makes config nodes "
                              "could hide a _target_ from the check)")
    if path.startswith(("hydra.job_logging", "hydra.hydra_logging")):
        last = path.split(".")[-1]
        if last == "()" or last == "class" and not leaf.startswith("logging."):
            raise ConfigError(f"{path}={leaf!r} is not allowed: Hydra's logging may only use classes of logging")
        # A file handler opens its file before any run starts (mode w truncates it): only a file inside
        # the run's own folder (_check_hydra_nodes resolves that folder to OUTPUT_DIR).
        if last == "filename" and (not leaf.startswith("OUTPUT_DIR/") or ".." in Path(leaf).parts):
            raise ConfigError(f"{path}={leaf!r} is not allowed: a log file must be inside the run folder "
                              "(${hydra.runtime.output_dir}/<name>.log)")


def _known_keys(src: "Sources", group_choices: list[str]) -> list[str]:
    """Every dotted key of a value in the primary config composed with the given group choices."""
    def walk(prefix, node):
        for k, v in node.items():
            if isinstance(v, dict):
                yield from walk(f"{prefix}{k}.", v)
            elif k != "hydra" and not str(k).startswith("_"):
                yield f"{prefix}{k}"
    return list(walk("", OmegaConf.to_container(compose_as_hydra(src, group_choices), resolve=False)))


@dataclasses.dataclass
class Sources:
    """Where Hydra will read configs from, as the command line sets it."""
    main_dir: Path           # conf/, or --config-path
    name: str                # train, or --config-name
    searchpath: list[str]    # --config-dir first, then hydra.searchpath's entries
    overrides: list[str]     # the command line's overrides, hydra.searchpath's left out
    multirun: bool

    def dirs(self) -> list[Path]:
        """The folders configs come from, in Hydra's order. A pkg:// entry's is its package's folder,
        found as Hydra finds it (importing the package, as composing does anyway); one Hydra cannot
        import, or a package inside a zip file, adds none."""
        found = [self.main_dir]
        for entry in self.searchpath:
            if entry.startswith("pkg://"):
                try:
                    folder = resources.files(entry.removeprefix("pkg://").replace("/", ".").rstrip("."))
                except (ValueError, ModuleNotFoundError, TypeError):
                    continue
                if isinstance(folder, Path):
                    found.append(folder)
            elif "://" not in entry or entry.startswith("file://"):
                found.append(Path(entry.removeprefix("file://")))
        return found


# Hydra's command line (its parser in hydra/_internal/utils.py), read the same way: which configs
# (--config-*), multirun or not, the overrides; its other flags only so that their values are theirs.
FLAGS = argparse.ArgumentParser(add_help=False)
FLAGS.add_argument("overrides", nargs="*")
FLAGS.add_argument("--config-path", "-cp")
FLAGS.add_argument("--config-name", "-cn")
FLAGS.add_argument("--config-dir", "-cd")
FLAGS.add_argument("--multirun", "-m", action="store_true")
for flag in (["--help", "-h"], ["--hydra-help"], ["--version"], ["--resolve"], ["--run", "-r"],
             ["--shell-completion", "-sc"]):
    FLAGS.add_argument(*flag, action="store_true")
for flag in (["--cfg", "-c"], ["--package", "-p"], ["--experimental-rerun"]):
    FLAGS.add_argument(*flag)
FLAGS.add_argument("--info", "-i", nargs="?", const="all")


def sources(argv: list[str]) -> Sources:
    flags, extra = FLAGS.parse_known_args(argv)
    if extra:  # Hydra refuses them too, with its usage text
        raise ConfigError(f"{' '.join(extra)}: not a flag, or an override after a flag that followed overrides: "
                          "give the flags first, e.g. python -m nnlab.train --multirun model=linear,mlp seed=0,1")
    overrides = list(flags.overrides)
    main_dir = CONF_DIR if flags.config_path is None else Path(__file__).parent / flags.config_path
    name = flags.config_name or "train"
    given = [a for a in overrides if a.split("=", 1)[0] == "hydra.searchpath"]
    searchpath = []
    if given:
        (override,) = OverridesParser.create().parse_overrides(given[-1:])
        searchpath = list(override.value() or [])
    elif flags.config_dir:  # hydra.searchpath from the primary config, which --config-dir may hold
        for folder in (main_dir, Path(flags.config_dir)):
            if (folder / f"{name}.yaml").is_file():
                searchpath = list(OmegaConf.select(OmegaConf.load(folder / f"{name}.yaml"), "hydra.searchpath") or [])
                break
    if flags.config_dir:  # Hydra puts it before hydra.searchpath's entries
        searchpath = [f"file://{Path(flags.config_dir).resolve()}", *searchpath]
        if not (main_dir / f"{name}.yaml").is_file():  # the primary config is --config-dir's: compose from
            searchpath[0], main_dir = f"file://{main_dir.resolve()}", Path(flags.config_dir)  # there, conf/ after
    return Sources(main_dir.resolve(), name, searchpath, [a for a in overrides if a not in given], flags.multirun)


def compose_as_hydra(src: Sources, overrides: list[str]) -> DictConfig:
    """The config Hydra composes for `overrides` from `src`'s configs, its hydra node included."""
    if src.searchpath:
        overrides = [*overrides, "hydra.searchpath=[" + ",".join(
            "'" + p.replace("\\", "\\\\").replace("'", "\\'") + "'" for p in src.searchpath) + "]"]
    try:
        with initialize_config_dir(str(src.main_dir), version_base="1.3"):
            return compose(src.name, overrides=overrides, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as e:  # Hydra's message: a headline, then its cause
        raise ConfigError("the config does not compose: " +
                          " ".join(line.strip() for line in str(e).strip().splitlines()[:2])) from None


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


OPTIONAL_GROUPS = ("scheduler", "experiment", "sweep")  # a run without one is a run: a constant lr, no overlay


def drop_group(group: str, sweep: bool) -> str:
    """`scheduler=null` as Hydra spells it, `~scheduler`: Hydra itself refuses a null group choice with
    a traceback. Refused in one line where the run cannot go without the group, or in a sweep (one
    job cannot drop what the others choose)."""
    if group not in OPTIONAL_GROUPS:
        raise ConfigError(f"{group}=null: a run needs a {group}; {group} is one of "
                          f"{', '.join(sorted(p.stem for p in (Path(CONF_DIR) / group).glob('*.yaml')))}")
    if sweep:
        raise ConfigError(f"{group}=null cannot be one value of a sweep: sweep scheduler=none for a constant lr"
                          if group == "scheduler" else f"{group}=null cannot be one value of a sweep")
    return f"~{group}"


def _variants(src: Sources) -> list[list[str]]:
    """The overrides of each distinct set of config files a command composes: one run, or a sweep's
    jobs that differ in a group choice (model=linear,mlp, on the command line or in its grid), each
    with the command line's other values (the first of a sweep's: check_argv has seen them all)."""
    first = {}  # key -> override
    for o in OverridesParser.create().parse_overrides(src.overrides):
        key = o.input_line.split("=", 1)[0]
        if not o.is_sweep_override():  # ~scheduler included
            first[key] = o.input_line
        elif o.is_discrete_sweep():  # a study's interval(...) is its sweeper's: the config's value stands
            first[key] = f"{key}={next(iter(o.sweep_string_iterator()))}"
    if not src.multirun:
        return [list(first.values())]
    master = compose_as_hydra(src, list(first.values()))
    if not str(master.hydra.sweeper.get("_target_", "")).endswith("BasicSweeper"):
        return [list(first.values())]
    from nnlab.sweep import jobs  # noqa: PLC0415  (nnlab.sweep imports Lightning's loggers)
    variants = {}
    for job in jobs(dict(master.hydra.sweeper.get("params") or {}), src.overrides):
        groups = {o.split("=", 1)[0]: o for o in job if "." not in o.split("=", 1)[0]}
        variants.setdefault(tuple(groups.values()), list({**first, **groups}.values()))
    return list(variants.values())


def _check_hydra_nodes(cfg: DictConfig) -> None:
    """Hydra builds these itself: its callbacks and the plugins' nested nodes with instantiate, its
    logging with logging.config.dictConfig. The plugin classes themselves Hydra takes only from the
    hydra_plugins package and its own core plugins."""
    from nnlab.sweep import planning  # noqa: PLC0415
    copy = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    OmegaConf.update(copy, "hydra.runtime.output_dir", "OUTPUT_DIR")  # Hydra sets it as a job starts
    for key in HYDRA_BUILT:
        try:
            with planning():
                node = OmegaConf.to_container(OmegaConf.select(copy, key, default={}) or {}, resolve=True)
        except Exception as e:
            raise ConfigError(f"{key} does not resolve: {str(e).splitlines()[0]}") from None
        if key == "hydra.callbacks":
            _walk(key, OmegaConf.create(node))
        elif key in ("hydra.launcher", "hydra.sweeper"):
            resolved = OmegaConf.create(node)
            for k in resolved:
                if k != "_target_":
                    _walk(f"{key}.{k}", resolved[k])
        else:
            for path, leaf in _leaves(key, node):
                _check_leaf(path, leaf)


def check_hydra(argv: list[str]) -> DictConfig:
    """Before Hydra starts: compose the config as Hydra will, config files of `--config-dir`,
    `--config-name` and `hydra.searchpath` included, and check what Hydra builds from it before any
    nnlab code runs. Returns the composed config (a sweep's first job), its hydra node included."""
    src = sources(argv)
    configs = [compose_as_hydra(src, variant) for variant in _variants(src)]
    for cfg in configs:
        _check_hydra_nodes(cfg)
    return configs[0]


def check_argv(argv: list[str]) -> list[str]:
    """Before Hydra sees the command line: keys that exist (a typo gets the closest keys, in one line,
    not Hydra's struct error), group choices that exist, no `_target_` outside the allow-list anywhere,
    no node-making resolver, and nothing Hydra's logging would import. Hydra instantiates hydra.*
    nodes (HYDRA_BUILT) before nnlab's gate runs: what reaches them from the command line is checked
    here. Each override is read by Hydra's own parser, so a value means here what it will mean to Hydra.
    Returns argv with `resume=<run folder>` quoted (run folders are named `a=1,b=2`, which Hydra's
    grammar would read as a sweep) and `scheduler=null` as `~scheduler` (drop_group)."""
    argv = [f"resume='{a.split('=', 1)[1]}'" if a.startswith("resume=") and "'" not in a else a for a in argv]
    src = sources(argv)
    parser = OverridesParser.create()
    plain_keys, choices = [], []
    for i, arg in enumerate(argv):
        if arg.startswith("-") or "=" not in arg:
            continue
        try:
            (override,) = parser.parse_overrides([arg])
            values = list(override.sweep_iterator()) if override.is_sweep_override() else [override.value()]
        except HydraException:  # unreadable: Hydra stops on it before building anything; glob(): existing names
            continue
        key = override.key_or_group
        if key == "hydra/launcher" and "submitit_local" in values:
            raise ConfigError("hydra/launcher=submitit_local starts every job of a sweep at once: use hydra/launcher=local, "
                              "which runs hydra.launcher.max_parallel jobs at a time (default: one per CPU core)")
        if key in GROUPS and None in values and override.type is OverrideType.CHANGE:
            argv[i] = drop_group(key, override.is_sweep_override())
            continue
        for value in values:
            if key == "hydra.launcher.max_parallel" and not (value is None or type(value) is int and value >= 1):
                raise ConfigError(f"{key}={value!r} is invalid: it must be a whole number >= 1, or null (one per CPU core)")
            for path, leaf in _leaves(key, value):
                _check_leaf(path, leaf)
            if key in GROUPS and value is not None:
                options = sorted({p.stem for folder in src.dirs() for p in (folder / key).glob("*.yaml")})
                if value not in options:
                    raise ConfigError(f"{key}={value} is not an option: {key} is one of {', '.join(options)}")
                choices.append(f"{key}={value}")
        if override.type is OverrideType.CHANGE and key not in GROUPS and not key.startswith("hydra"):
            plain_keys.append(key)
    if plain_keys:  # Hydra refuses these too, but in six lines with no list of keys
        by_group = {}
        for choice in choices:  # each choice of a swept group in turn: a key may exist in one option only
            by_group.setdefault(choice.split("=")[0], []).append(choice)
        known = set()
        for i in range(max((len(v) for v in by_group.values()), default=1)):
            known.update(_known_keys(src, [v[min(i, len(v) - 1)] for v in by_group.values()]))
        for key in plain_keys:
            if key not in known and not any(k.startswith(f"{key}.") for k in known):
                raise unknown_key(key, sorted(known), f" (a key the config lacks takes a +: +{key}=...)")
    return argv
