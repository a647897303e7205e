"""The checks of a command line and of what Hydra builds from its config, before Hydra builds anything.

The command line is read as Hydra reads it: its flags, where configs come from, the overrides.

Hydra instantiates hydra.* nodes (HYDRA_BUILT: callbacks, launcher, sweeper, logging) before any
nnlab code runs; nnlab.app composes a command's config once and calls check_hydra_nodes on it first.
What reaches those nodes from the command line is refused earlier still, by check_argv: each override
read by Hydra's own parser, so a value means here what it will mean to Hydra.
"""
import argparse
import dataclasses
import logging
import pydoc
import re
from importlib import resources
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import OverrideType
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from nnlab import CONF_DIR
from nnlab.config import ConfigError, check_target, check_tree, unknown_key
from nnlab.runs import planning

GROUPS = ("model", "data", "optimizer", "scheduler", "trainer", "experiment", "sweep")


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


# What Hydra's logging (logging.config.dictConfig) may build from `class` and `()`: handlers, formatters
# and filters defined in these packages; and the one kind of `ext://` reference it needs.
LOG_PACKAGES = ("logging", "hydra", "nnlab")
LOG_STREAMS = ("ext://sys.stdout", "ext://sys.stderr")


def check_log_class(path: str, name: str) -> None:
    """A logging config's class: a handler, formatter or filter of the standard library, Hydra or nnlab.
    The name's package is checked before anything is imported; the class found, by what it is and where
    it is defined (logging.io.FileIO is a path to io.FileIO)."""
    allowed = f"{path}={name!r} is not allowed: Hydra's logging may only build handlers, formatters and " \
              f"filters of {', '.join(LOG_PACKAGES)}"
    if name.split(".")[0] not in LOG_PACKAGES:
        raise ConfigError(allowed)
    try:
        cls = pydoc.locate(name)
    except pydoc.ErrorDuringImport:
        cls = None
    if not (isinstance(cls, type) and issubclass(cls, logging.Handler | logging.Formatter | logging.Filter)
            and cls.__module__.split(".")[0] in LOG_PACKAGES):
        raise ConfigError(allowed)


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
        if last in ("class", "()"):
            check_log_class(path, leaf)
        if leaf.startswith(("ext://", "cfg://")) and leaf not in LOG_STREAMS:
            raise ConfigError(f"{path}={leaf!r} is not allowed: Hydra's logging may refer to {' and '.join(LOG_STREAMS)} "
                              "only (ext:// imports any module)")
        # A file handler opens its file before any run starts (mode w truncates it): only a file inside
        # the run's own folder (check_hydra_nodes resolves that folder to OUTPUT_DIR).
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
    overrides = [*group_choices, *searchpath_overrides(src)]
    try:
        if GlobalHydra.instance().is_initialized():  # nnlab.app's, on src's configs
            cfg = compose(src.name, overrides=overrides)
        else:
            with initialize_config_dir(str(src.main_dir), version_base="1.3"):
                cfg = compose(src.name, overrides=overrides)
    except (HydraException, OmegaConfBaseException):  # these choices do not compose: they name no key
        return []
    return list(walk("", OmegaConf.to_container(cfg, resolve=False)))


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
FLAGS = argparse.ArgumentParser(add_help=False, exit_on_error=False)
FLAGS.add_argument("overrides", nargs="*")
FLAGS.add_argument("--config-path", "-cp")
FLAGS.add_argument("--config-name", "-cn")
FLAGS.add_argument("--config-dir", "-cd")
FLAGS.add_argument("--multirun", "-m", action="store_true")
for flag in (["--help", "-h"], ["--hydra-help"], ["--version"], ["--resolve"], ["--run", "-r"],
             ["--shell-completion", "-sc"]):
    FLAGS.add_argument(*flag, action="store_true")
FLAGS.add_argument("--cfg", "-c", choices=["job", "hydra", "all"])
for flag in (["--package", "-p"], ["--experimental-rerun"]):
    FLAGS.add_argument(*flag)
FLAGS.add_argument("--info", "-i", nargs="?", const="all",
                   choices=["all", "config", "defaults", "defaults-tree", "plugins", "searchpath"])


def sources(argv: list[str]) -> Sources:
    try:
        flags, extra = FLAGS.parse_known_args(argv)
    except argparse.ArgumentError as e:  # a flag's value Hydra would refuse with its usage text
        raise ConfigError(f"{e}: python -m nnlab.train --help lists the flags") from None
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


def searchpath_overrides(src: Sources) -> list[str]:
    """hydra.searchpath as one override, --config-dir's folder first, as Hydra orders them."""
    if not src.searchpath:
        return []
    return ["hydra.searchpath=[" + ",".join("'" + p.replace("\\", "\\\\").replace("'", "\\'") + "'"
                                            for p in src.searchpath) + "]"]


def sweep_parser() -> OverridesParser:
    """Hydra's override parser with the running Hydra command's config loader, where there is one: the
    loader lists a group's options for glob() (experiment='glob(spiral_*)'), as Hydra's sweeper has it."""
    from hydra.core.global_hydra import GlobalHydra
    hydra = GlobalHydra.instance()
    return OverridesParser.create(config_loader=hydra.config_loader() if hydra.is_initialized() else None)


def composition_error(src: Sources, error: Exception) -> ConfigError:
    """Why the command's config does not compose, in one line. A key the config lacks (Hydra says so
    in six lines and lists no key) gets the closest keys there are: found by composing the config with
    each of the command line's group choices in turn (a key may exist in one option only)."""
    parser, choices, plain = sweep_parser(), {}, []
    for o in parser.parse_overrides([o for o in src.overrides if not o.startswith("~")]):
        key = o.key_or_group
        if key in GROUPS and o.type is OverrideType.CHANGE:
            values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
            choices[key] = [f"{key}={v}" for v in values]
        elif o.type is OverrideType.CHANGE and not key.startswith("hydra"):
            plain.append(key)
    if plain:
        combos = [[v[min(i, len(v) - 1)] for v in choices.values()]
                  for i in range(max((len(v) for v in choices.values()), default=1))]
        keysets = [(combo, set(_known_keys(src, combo))) for combo in combos]
        known = set().union(*(keys for _, keys in keysets))
        has = lambda keys, key: key in keys or any(k.startswith(f"{key}.") for k in keys)  # noqa: E731
        for key in plain if known else []:  # nothing composed: the error is elsewhere
            if not has(known, key):
                return unknown_key(key, sorted(known), f" (a key the config lacks takes a +: +{key}=...)")
            if lacking := [combo for combo, keys in keysets if keys and not has(keys, key)]:
                return ConfigError(f"{key} is a key of some of the sweep's jobs only: {' '.join(lacking[0])} has "
                                   f"none; sweep {key} in a sweep of the jobs that have it")
            if combos != [[]] and f"'{key}'" in str(error):
                # every job has it, but Hydra composes a multirun's base config first, without the swept
                # groups: the defaults' choices there may lack it
                return ConfigError(f"{key} is a key of every job, but not of the sweep's base config (Hydra composes "
                                   f"it first, with the swept groups' defaults): write ++{key}=..., which sets it where "
                                   "it is and adds it where it is not")
    return ConfigError("the config does not compose: " +
                       " ".join(line.strip() for line in str(error).strip().splitlines()[:2]))


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


def check_hydra_nodes(cfg: DictConfig) -> None:
    """What Hydra builds from a composed config, checked: its callbacks and the plugins' nested nodes
    (instantiate), its logging (logging.config.dictConfig). The plugin classes themselves Hydra takes
    only from the hydra_plugins package and its own core plugins."""
    copy = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    OmegaConf.update(copy, "hydra.runtime.output_dir", "OUTPUT_DIR")  # Hydra sets it as a job starts
    for key in HYDRA_BUILT:
        try:
            with planning():
                node = OmegaConf.to_container(OmegaConf.select(copy, key, default={}) or {}, resolve=True)
        except (OmegaConfBaseException, ValueError) as e:
            raise ConfigError(f"{key} does not resolve: {str(e).splitlines()[0]}") from None
        if key == "hydra.callbacks":
            check_tree(key, OmegaConf.create(node))
        elif key in ("hydra.launcher", "hydra.sweeper"):
            resolved = OmegaConf.create(node)
            for k in resolved:
                if k != "_target_":
                    check_tree(f"{key}.{k}", resolved[k])
        else:
            for path, leaf in _leaves(key, node):
                _check_leaf(path, leaf)


def check_argv(argv: list[str]) -> list[str]:
    """Before anything is composed: group choices that exist, no `_target_` outside the allow-list anywhere,
    no node-making resolver, and nothing Hydra's logging would import. Hydra instantiates hydra.*
    nodes (HYDRA_BUILT) before nnlab's gate runs: what reaches them from the command line is checked
    here. Each override is read by Hydra's own parser, so a value means here what it will mean to Hydra.
    Returns argv with `resume=<run folder>` quoted (run folders are named `a=1,b=2`, which Hydra's
    grammar would read as a sweep) and `scheduler=null` as `~scheduler` (drop_group)."""
    # +resume= and ++resume= are resume= too (the key exists): one spelling, quoted
    argv = [f"resume='{a.split('=', 1)[1]}'" if a.lstrip("+").startswith("resume=") and "'" not in a
            else "resume=" + a.split("=", 1)[1] if a.lstrip("+").startswith("resume=") else a for a in argv]
    src = sources(argv)
    parser = OverridesParser.create()
    for arg in src.overrides:
        if "=" not in arg and not arg.startswith("~"):
            raise ConfigError(f"{arg!r} is not an override (key=value) nor a flag: a value with spaces or a newline "
                              "goes in quotes, key='...'")
    for i, arg in enumerate(argv):
        if arg.startswith("-") or "=" not in arg:
            continue
        try:
            (override,) = parser.parse_overrides([arg])
        except HydraException as e:  # Hydra's message: a caret under the spot, over several lines
            why = str(e).strip().splitlines()[0][:120]
            raise ConfigError(f"{arg!r} is not an override Hydra can read ({why}): write key=value, "
                              "quoting a value of other characters: key='...'") from None
        try:
            values = list(override.sweep_iterator()) if override.is_sweep_override() else [override.value()]
        except HydraException:  # glob(): expanded against the options that exist, by Hydra
            continue
        key = override.key_or_group
        if override.is_delete() and not key:  # Hydra: a ValueError from deep in its defaults list
            raise ConfigError(f"{arg!r} deletes nothing: a deletion names what it deletes, ~key or ~key=value")
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
            if (key in GROUPS or key == "logger") and value is not None:
                options = sorted({p.stem for folder in src.dirs() for p in (folder / key).glob("*.yaml")})
                several = ", or several: logger=[tensorboard,csv]" if key == "logger" else ""
                if any(v not in options for v in (value if key == "logger" and isinstance(value, list) else [value])):
                    raise ConfigError(f"{key}={value} is not an option: {key} is one of {', '.join(options)}{several}")
    return argv
