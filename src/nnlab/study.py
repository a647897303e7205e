"""A study's parts: its search space from Hydra's sweep syntax, its settings, sampler, pruner and storage.

nnlab.search runs the study; this module holds what the study is made of, each refused in one line
before a sweep folder is made."""
from pathlib import Path

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from sqlalchemy.exc import SQLAlchemyError

from nnlab.config import ConfigError
from nnlab.errors import NnlabError
from nnlab.runs import RunFolderError

SAMPLERS = ("tpe", "random", "qmc", "grid")
PRUNERS = ("none", "median", "successive_halving", "hyperband")
# What the Classifier logs after every validation, and which way is better; never test/*: test
# numbers are reported, not chosen on.
METRICS = {"val/acc": "maximize", "val/loss": "minimize"}
STUDY = "nnlab"  # one study a sweep folder
FILES = ("study.db", "study.journal")
optuna.logging.set_verbosity(optuna.logging.WARNING)  # the sweep prints one line a trial itself


def distribution(override: Override) -> BaseDistribution:
    """One searched key's Optuna distribution, from Hydra's parse of its sweep:
        tag(log, interval(0.03, 30))   log-uniform (floats; ints if both ends are ints)
        interval(0.5, 1.0)             uniform
        range(1, 5)                    the ints 1..4 (Hydra's range excludes its end)
        choice(sgd, adam), sgd,adam    categorical"""
    key, value = override.get_key_element(), override.value()
    shown = override.input_line or key
    if override.is_interval_sweep():
        low, high, log = value.start, value.end, "log" in value.tags
        if not low < high:
            raise ConfigError(f"{shown} is an empty interval: write interval(low, high) with low < high")
        if log and low <= 0:
            raise ConfigError(f"{shown} is a log interval that includes 0: its low end must be above 0, "
                              "e.g. tag(log, interval(1e-5, 1e-2))")
        kind = IntDistribution if isinstance(low, int) and isinstance(high, int) else FloatDistribution
        return kind(low, high, log=log)
    if override.is_range_sweep() and not value.shuffle:
        values = list(override.sweep_iterator())
        if not values:
            raise ConfigError(f"{shown} is an empty range: range(start, stop) needs start < stop")
        if all(isinstance(v, int) for v in values):
            return IntDistribution(min(values), max(values), step=abs(int(value.step)))
    # Numbers and bools keep their types (choice(1, 2) asks the ints 1 and 2, written back as 1 and 2);
    # anything else as Hydra writes it back (quoted where needed): a valid override value.
    values = [v if isinstance(v, bool | int | float) else text
              for v, text in zip(override.sweep_iterator(), override.sweep_string_iterator())]
    if not values:
        raise ConfigError(f"{shown} offers no choice: give at least one value")
    return CategoricalDistribution(values)


def search_space(params: dict | None, arguments: list[str]) -> tuple[list[str], dict[str, BaseDistribution]]:
    """(the overrides every trial shares, {key: distribution}) from the sweep file's
    hydra.sweeper.params and the command line (later wins), each read by Hydra's own parser."""
    parser = OverridesParser.create()
    fixed, space = {}, {}
    for line in [f"{k}={v}" for k, v in (params or {}).items()] + list(arguments):
        try:
            (override,) = parser.parse_overrides([line])
        except HydraException as e:
            raise ConfigError(f"{line} is not a valid override ({str(e).splitlines()[0]}): "
                              "write e.g. optimizer.lr='tag(log, interval(0.01, 10))'") from None
        key = override.get_key_element()
        fixed.pop(key, None)
        space.pop(key, None)
        if override.is_sweep_override():
            space[key] = distribution(override)
        else:
            fixed[key] = f"{key}={override.get_value_element_as_str()}"
    return list(fixed.values()), space


def study_settings(s: DictConfig, cfg: DictConfig) -> None:
    """The refusals that need no search space; each one line, before anything is written."""
    if s.sampler not in SAMPLERS:
        raise ConfigError(f"hydra.sweeper.sampler={s.sampler} is not a sampler: use one of {', '.join(SAMPLERS)}")
    if s.pruner not in PRUNERS:
        raise ConfigError(f"hydra.sweeper.pruner={s.pruner} is not a pruner: use one of {', '.join(PRUNERS)}")
    if not isinstance(s.n_trials, int) or isinstance(s.n_trials, bool) or s.n_trials < 1:
        raise ConfigError(f"hydra.sweeper.n_trials={s.n_trials} is invalid: it must be a whole number >= 1")
    if not isinstance(s.bootstrap, int) or isinstance(s.bootstrap, bool) or s.bootstrap < 0:
        raise ConfigError(f"hydra.sweeper.bootstrap={s.bootstrap} is invalid: trials that set a rung's bar, "
                          "a whole number >= 0")
    if not isinstance(s.batch, int) or isinstance(s.batch, bool) or s.batch == 0:
        raise ConfigError(f"hydra.sweeper.batch={s.batch} is invalid: trials run at once, a whole number >= 1")
    if s.metric not in METRICS:
        raise ConfigError(f"hydra.sweeper.metric={s.metric} is never logged after a validation: "
                          f"use one of {', '.join(METRICS)}")
    if s.direction not in (None, "maximize", "minimize"):
        raise ConfigError(f"hydra.sweeper.direction={s.direction} is invalid: maximize, minimize or null "
                          f"(null: {', '.join(f'{k} {v}' for k, v in METRICS.items())})")
    every = OmegaConf.select(cfg, "trainer.check_val_every_n_epoch", default=1)
    limit = OmegaConf.select(cfg, "trainer.limit_val_batches", default=None)
    if s.pruner != "none" and (every != 1 or limit == 0):
        raise ConfigError(f"hydra.sweeper.pruner={s.pruner} needs {s.metric} after every epoch, but validation "
                          f"runs {'never' if limit == 0 else f'every {every} epochs'}: use pruner=none, "
                          "or validate every epoch")


class Grid(optuna.samplers.GridSampler):
    """Optuna's grid sampler, told that the study's loop is not Optuna's: its after_trial stops the study
    once every point is tried, which raises outside study.optimize (nnlab asks and tells). The sweep
    ends the study itself when every point has been asked (Search.study)."""

    def after_trial(self, study, trial, state, values) -> None:
        pass


def grid_of(space: dict[str, BaseDistribution]) -> dict[str, list]:
    """sampler=grid: every key's values (an interval is refused: it has no points to list)."""
    continuous = [k for k, d in space.items() if isinstance(d, FloatDistribution)]
    if continuous:
        raise ConfigError(f"hydra.sweeper.sampler=grid cannot search an interval ({', '.join(continuous)}): "
                          "give those keys a choice or a range, or use sampler=tpe")
    return {k: list(d.choices) if isinstance(d, CategoricalDistribution) else list(range(d.low, d.high + 1, d.step))
            for k, d in space.items()}


def make_sampler(name: str, seed: int, space: dict[str, BaseDistribution]) -> optuna.samplers.BaseSampler:
    if name == "grid":
        return Grid(grid_of(space), seed=seed)
    kind = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler,
            "qmc": optuna.samplers.QMCSampler}[name]
    return kind(seed=seed)


def make_pruner(name: str, epochs: int, bootstrap: int = 0) -> optuna.pruners.BasePruner:
    """Rungs count epochs (a trial reports its metric after each, val/acc with ties broken by val/loss:
    callbacks.Pruning): successive halving goes on with the best quarter of the trials at epochs 1, 4,
    16... (with thirds, at epochs 1, 3, 9, spiral_search spent a third more steps); hyperband runs
    brackets of thirds; median stops a trial below the median of the earlier trials at the same
    epoch, once 5 have run. `bootstrap` (Optuna's bootstrap_count, successive halving and hyperband):
    the first trials to reach a rung stop there and set its bar. Without it a rung that holds fewer
    values than the reduction factor has no best fraction, and Optuna promotes each new best so far,
    which the first trials of a study, and those of a sampler that is improving, mostly are."""
    return {"none": optuna.pruners.NopPruner,
            "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1),
            "successive_halving": lambda: optuna.pruners.SuccessiveHalvingPruner(
                min_resource=1, reduction_factor=4, bootstrap_count=bootstrap),
            "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs,
                                                                reduction_factor=3, bootstrap_count=bootstrap)}[name]()


def storage_file(folder: Path) -> Path | None:
    """The study file of a sweep folder, if it holds one."""
    return next((folder / f for f in FILES if (folder / f).exists()), None)


def open_storage(path: Path, read_only: bool = False) -> optuna.storages.BaseStorage:
    """study.journal: Optuna's journal file, appended to under a file lock, so joblib workers and
    SLURM array tasks write one study safely; study.db: sqlite, for one process at a time (`read_only`:
    opened so, as a folder from elsewhere is read: Optuna would otherwise add its tables to any sqlite
    file). A file that is a link, or does not read as a study, raises RunFolderError naming it: never
    read as empty."""
    if path.is_symlink():
        raise RunFolderError(f"{path} is a symbolic link, which nnlab does not follow")
    try:
        if path.suffix == ".journal":
            storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
        else:
            uri = f"file:{path.resolve()}?mode=ro&uri=true" if read_only else str(path.resolve())
            storage = optuna.storages.RDBStorage(f"sqlite:///{uri}")
        storage.get_all_studies()  # reads it whole: a journal replays every line
    except (SQLAlchemyError, KeyError, ValueError, TypeError, AttributeError) as e:
        why = str(e).strip().splitlines()[0][:100] if str(e).strip() else type(e).__name__
        raise RunFolderError(f"{path} does not read as an Optuna study ({why}): remove it, or give the sweep "
                             "folder the study was made in") from None
    return storage


def open_study(folder: Path, **kwargs) -> optuna.Study:
    """The study of a study's sweep folder (make sweep SWEEP=spiral_search), with Optuna's `kwargs`;
    NnlabError where the folder holds none, RunFolderError where its file does not read as one."""
    path = storage_file(folder)
    storage = open_storage(path, read_only=True) if path is not None else None
    if storage is None or STUDY not in [s.study_name for s in storage.get_all_studies()]:
        raise NnlabError(f"{folder} holds no study: give a sweep folder of make sweep SWEEP=spiral_search, "
                         "e.g. make dashboard DIR=runs/sweeps/<time>")
    return optuna.load_study(study_name=STUDY, storage=storage, **kwargs)
