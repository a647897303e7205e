"""A grid sweep's jobs, counted and checked before they start, and the report of its unfinished runs.

The report is a Hydra callback (hydra.callbacks.sweep_report in conf/train.yaml).

    make sweep SWEEP=spiral_grid [JOBS=2] [RESUME=runs/sweeps/<time>]   then   make compare
"""
import itertools
import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from nnlab import CONF_DIR
from nnlab.cli import sweep_parser
from nnlab.compat import hydra_basic
from nnlab.config import ConfigError
from nnlab.errors import NnlabError
from nnlab.runs import FINISHED, run_status, shown


class SweepFailed(NnlabError):
    """Runs of a sweep did not finish; the message says how to rerun only those."""


def jobs(params: dict, overrides: list[str]) -> list[list[str]]:
    """The jobs of a multirun as Hydra's basic sweeper expands them: every combination of a grid's
    `hydra.sweeper.params` and the command line's overrides, a key on the command line replacing the
    grid's (`make sweep SWEEP=spiral_grid ARGS="seed=0"`: 24 jobs, not 72). Within a Hydra command its
    config loader lists a group's options for `glob()` (`experiment='glob(spiral_*)'`), as Hydra's does."""
    axes = {}
    for o in sweep_parser().parse_overrides([f"{k}={v}" for k, v in params.items()] + list(overrides)):
        key = o.get_key_element()
        values = o.sweep_string_iterator() if o.is_sweep_override() else [o.get_value_element_as_str()]
        axes[key] = [f"{key}={v}" for v in values]
        if not axes[key]:  # Hydra would launch no job, into a new empty sweep folder
            raise ConfigError(f"{o.input_line} sweeps no value" + (f": it matches no option of {key}, which is one of "
                              f"{', '.join(o.config_loader.get_group_options(key))}" if o.config_loader and "glob(" in
                              o.input_line else ""))
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
        raise ConfigError(f"sweep={grid} sweeps {', '.join(clash)}, which experiment={experiment} sets: sweep what you "
                 f"want in ARGS alone, e.g. make sweep ARGS=\"experiment={experiment} {clash[-1]}=...\"")


class SweepReport(Callback):
    """Hydra callback: before a multirun, refuse a grid that would replace an experiment's settings and
    say how many jobs it launches and from what; after it, list the runs that failed (crashed, bad
    config, interrupted) and raise SweepFailed when there are any (the command exits non-zero).
    Finished runs (ok, diverged, pruned) are results, not failures."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        params = dict(config.hydra.sweeper.get("params") or {})
        overrides = list(config.hydra.overrides.task)
        choices = config.hydra.runtime.choices
        check_grid(choices.get("sweep"), choices.get("experiment"), params)
        given = " ".join(overrides)
        if hydra_basic("sweeper", get_class(config.hydra.sweeper._target_)):  # a grid: its jobs are known
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
            raise SweepFailed(f"{len(failed)} of {len(runs)} runs did not finish; rerun only those with: "
                              f"make sweep RESUME={shown(sweep)} (and the same SWEEP/ARGS)")
