"""Run the command line as Hydra's own main runs it, but composed once and checked first.

Hydra's main composes a command's config two or three times, and builds its callbacks, launcher,
sweeper and logging from it before an app's code runs: a `_target_` or a logging class on the command
line would be imported and called unchecked. Here the config is composed once, by Hydra's config
loader (its public ConfigLoader.load_configuration); what Hydra would build from it is checked
(nnlab.cli.check_hydra_nodes), and so is the folder it would write into; then come the very steps
of Hydra's run and multirun (hydra/_internal/hydra.py): its logging, the callbacks, `run_job` for one
run, the configured sweeper (and through it the launcher) for a sweep. A sweep's jobs are composed by
the sweeper, which checks each composition before any job starts (hydra_plugins/nnlab_population.py).
The flags that print instead of running (--help, --cfg, --info, --shell-completion...) go to Hydra's
own main unchanged: they build nothing.
"""
import contextlib
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from hydra.core.utils import configure_log, run_job
from hydra.errors import HydraException
from hydra.types import HydraContext, RunMode
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import OmegaConfBaseException

from nnlab.cli import Sources, check_hydra_nodes, composition_error, searchpath_overrides, sources
from nnlab.compat import hydra_basic
from nnlab.config import ConfigError
from nnlab.errors import NnlabError
from nnlab.runs import planning, register_resolvers

HYDRA_PRINTS = ("--help", "-h", "--hydra-help", "--version", "--cfg", "-c", "--info", "-i", "--shell-completion",
                "-sc")
JOB_NAME = "train"  # hydra.job.name: the run's log file is train.log, as under `python -m nnlab.train`
GRID_SWEEPER = "hydra_plugins.nnlab_population.GroupedBasicSweeper"  # conf/hydra/sweeper/grouped.yaml


class Callbacks:
    """hydra.callbacks, built and called as Hydra's main does (hydra/_internal/callbacks.py): start events
    in order, end events in reverse. An NnlabError raised by one (the sweep report's) ends the command;
    any other is a warning, as under Hydra."""

    def __init__(self, cfg: DictConfig):
        self.callbacks = [instantiate(node) for node in (OmegaConf.select(cfg, "hydra.callbacks") or {}).values()]

    def notify(self, event: str, reverse: bool = False, **kwargs) -> None:
        for callback in reversed(self.callbacks) if reverse else self.callbacks:
            try:
                getattr(callback, event)(**kwargs)
            except NnlabError:
                raise
            except Exception as e:
                warnings.warn(f"Callback {type(callback).__name__}.{event} raised {type(e).__name__}: {e}", stacklevel=2)

    def on_run_start(self, config, **kw):
        self.notify("on_run_start", config=config, **kw)

    def on_run_end(self, config, **kw):
        self.notify("on_run_end", True, config=config, **kw)

    def on_multirun_start(self, config, **kw):
        self.notify("on_multirun_start", config=config, **kw)

    def on_multirun_end(self, config, **kw):
        self.notify("on_multirun_end", True, config=config, **kw)

    def on_job_start(self, config, **kw):
        self.notify("on_job_start", config=config, **kw)

    def on_job_end(self, config, **kw):
        self.notify("on_job_end", True, config=config, **kw)


def sweeper_class(node: DictConfig | None) -> type | None:
    """The class a `hydra.sweeper` node names (Hydra's own choice, built by Hydra already: not a class
    nnlab's allow-list builds), or None."""
    target = OmegaConf.select(node, "_target_", default=None) if node is not None else None
    try:
        return get_class(target) if target else None
    except (ImportError, ValueError):
        return None


def sweeper_says(node: DictConfig | None, capability: str) -> bool:
    """Whether the sweeper of a sweep (its `hydra.sweeper` node) declares `capability` on its class:
    `study` (its jobs are an Optuna study's trials, nnlab.search), `pbt` (population-based training,
    nnlab.pbt) or `one_process` (it judges its jobs against each other as they train, so their
    population trains in one process, in job order). The one place nnlab asks what a sweep is."""
    return bool(getattr(sweeper_class(node), capability, False))


def compose(src: Sources, mode: RunMode) -> DictConfig:
    """The command's config, its hydra node included, as Hydra's main composes it for `mode`."""
    overrides = [*src.overrides, *searchpath_overrides(src), f"hydra.mode={mode.name}"]
    try:
        return GlobalHydra.instance().config_loader().load_configuration(
            config_name=src.name, overrides=overrides, run_mode=mode, from_shell=True)
    except (HydraException, OmegaConfBaseException) as e:
        raise composition_error(src, e) from None


def check_output(cfg: DictConfig, multirun: bool) -> None:
    """The folder the command writes into (a run's, a sweep's, a resumed run's) can be written: else one
    line naming it and the fix, instead of a traceback from mkdir. Nothing is created to find out."""
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    try:
        with planning():
            target = Path(str(OmegaConf.select(cfg, key))).absolute()
    except OmegaConfBaseException as e:  # the folder is named by the overrides, an interpolation's too
        raise ConfigError(f"{key} does not resolve ({str(e).splitlines()[0]}): a ${{...}} in an override must "
                          "name a key of the config") from None
    existing = next(p for p in [target, *target.parents] if p.exists())
    if existing.is_dir() and os.access(existing, os.W_OK | os.X_OK):
        return
    below = "" if existing == target else f" (this {'sweep' if multirun else 'run'} writes into {target})"
    fix = (f"make it writable (chmod -R u+w {existing})" if cfg.get("resume") else
           f"run from a folder you can write to, or name one with {key}=<folder>")
    raise ConfigError(f"{existing} is not writable{below}: {fix}")


@contextlib.contextmanager
def composed(argv: list[str]) -> Iterator[tuple[str, RunMode, DictConfig]]:
    """Within it: the command's config name, run mode and config, composed once and checked (what Hydra
    builds from it, the folder it writes into); Hydra's config loader stays set up for the run."""
    register_resolvers()
    src = sources(argv)
    with initialize_config_dir(str(src.main_dir), job_name=JOB_NAME, version_base="1.3"):
        mode = RunMode.MULTIRUN if src.multirun else RunMode.RUN
        cfg = compose(src, mode)
        if mode is RunMode.RUN and cfg.hydra.mode == RunMode.MULTIRUN:  # a config file asks for a sweep
            mode, cfg = RunMode.MULTIRUN, compose(src, RunMode.MULTIRUN)
        check_hydra_nodes(cfg)
        check_output(cfg, multirun=mode is RunMode.MULTIRUN)
        yield src.name, mode, cfg


def run(argv: list[str], task: Callable[[DictConfig], object]):
    """One run (returns what `task` returned) or a sweep (returns the sweeper's results) of the command
    line `argv`, already through nnlab.cli.check_argv."""
    if any(a in HYDRA_PRINTS or a.startswith(("--cfg=", "--info=")) for a in argv):
        return hydra_main(argv, task)
    with composed(argv) as (name, mode, cfg):
        configure_log(cfg.hydra.hydra_logging, cfg.hydra.verbose)
        callbacks = Callbacks(cfg)
        context = HydraContext(config_loader=GlobalHydra.instance().config_loader(), callbacks=callbacks)
        if mode is RunMode.MULTIRUN:
            return sweep(cfg, name, task, context)
        outcome = {}

        def job(task_cfg: DictConfig) -> None:  # what the task raised, raised by the command as such
            try:  # (run_job would keep it, and print a line of its own when it is read)
                outcome["value"] = task(task_cfg)
            except Exception as e:
                outcome["error"] = e
        callbacks.on_run_start(config=cfg, config_name=name)
        ret = run_job(hydra_context=context, task_function=job, config=cfg, job_dir_key="hydra.run.dir",
                      job_subdir_key=None)
        callbacks.on_run_end(config=cfg, config_name=name, job_return=ret)
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]


def sweep(cfg: DictConfig, name: str, task: Callable[[DictConfig], object], context: HydraContext):
    """Hydra's multirun: the configured sweeper, its jobs through the configured launcher. Hydra's own
    basic sweeper is swapped for nnlab's grid sweeper, the same but for its check of every job's
    composition before any job starts (hydra_plugins/nnlab_population.py)."""
    if hydra_basic("sweeper", get_class(cfg.hydra.sweeper._target_), exactly=True):
        with read_write(cfg.hydra.sweeper), open_dict(cfg.hydra.sweeper):
            cfg.hydra.sweeper._target_ = GRID_SWEEPER
    context.callbacks.on_multirun_start(config=cfg, config_name=name)
    sweeper = Plugins.instance().instantiate_sweeper(config=cfg, hydra_context=context, task_function=task)
    returns = sweeper.sweep(arguments=list(cfg.hydra.overrides.task))
    context.callbacks.on_multirun_end(config=cfg, config_name=name)
    return returns


def hydra_main(argv: list[str], task: Callable[[DictConfig], object]) -> None:
    """Hydra's own main on `argv`, for the flags that only print (help, config, info, completion)."""
    import hydra

    from nnlab import CONF_DIR
    register_resolvers()
    main = hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")(task)
    saved = sys.argv
    # run as the executable nnlab-train, Hydra's completion script names it (its job name stays JOB_NAME)
    sys.argv = [saved[0] if Path(saved[0]).name == "nnlab-train" else JOB_NAME, *argv]
    try:
        main()
    except SystemExit as e:  # Hydra ends its help with sys.exit(0); a failure with 1 and its message printed
        if e.code not in (0, None):
            raise NnlabError(f"python -m nnlab.train {' '.join(argv)} failed (Hydra's message is above)") from None
    finally:
        sys.argv = saved
        HydraConfig.instance().cfg = None  # Hydra leaves its config set: the next command in this process starts clean
