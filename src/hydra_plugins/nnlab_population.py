"""nnlab's grid sweeper and population launcher, as Hydra finds them.

They are hydra/sweeper=grouped (every grid's sweeper: nnlab.app swaps Hydra's basic one for it;
conf/hydra/sweeper/grouped.yaml) and hydra/launcher=population (conf/hydra/launcher/population.yaml). Hydra 1.3.8 instantiates a launcher or sweeper only from a class defined in the
`hydra_plugins` namespace package, which it scans (and imports on every run): so these stubs live here
and import nothing heavy; grouping and training are the package nnlab/population/."""
from pathlib import Path

# Hydra's default sweeper: Hydra exports no other class to extend for it. Imported here, not through
# nnlab.compat: Hydra's plugin scan executes this module and its own again, in place, and the subclass
# must extend the BasicSweeper of the same scan (its __init__ names the class through the module's
# globals). tests/test_compat.py checks the class and the hook overridden below.
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.errors import HydraException
from hydra.plugins.launcher import Launcher
from omegaconf.errors import OmegaConfBaseException


class PopulationLauncher(Launcher):
    def __init__(self, **settings) -> None:
        self.settings = settings  # conf/hydra/launcher/population.yaml, with the command line's values
        self.composed: dict = {}  # a job's overrides -> its config, composed by GroupedBasicSweeper's check

    def setup(self, *, hydra_context, task_function, config) -> None:
        from nnlab.population.launcher import Population  # torch and Lightning: imported by population sweeps only
        self.population = Population(self.settings, hydra_context=hydra_context, task_function=task_function,
                                     config=config, composed=self.composed)

    def launch(self, job_overrides, initial_job_idx: int):
        return self.population.launch(job_overrides, initial_job_idx)


class GroupedBasicSweeper(BasicSweeper):
    """Hydra's basic sweeper, whose check of a batch (composing its jobs before any starts) also checks
    what Hydra builds from each job's composition, its logging (nnlab.cli.check_hydra_nodes); a refused
    batch takes the sweep folder its claim made with it. One process sweeps a folder at a time (its lock),
    showing its progress (nnlab.progress). For the population launcher a batch is checked
    by composing one job of each group (~0.2 s a composition) rather than every job: the group's other
    jobs differ from it only in the numbers of keys it has (seed, optimizer.lr...), and the population
    derives their configs from that composition, which it is handed, checking each (a bad value:
    invalid_config)."""

    def sweep(self, arguments):
        from nnlab import progress
        from nnlab.runs import hold_sweep
        from nnlab.sweep import jobs
        mine = jobs(dict(self.config.hydra.sweeper.get("params") or {}), arguments)  # none: refused here
        folder = Path(self.config.hydra.sweep.dir)  # resolving it claims a new sweep's folder
        folder.mkdir(parents=True, exist_ok=True)  # as Hydra's sweep makes it, before its first batch
        with hold_sweep(folder), progress.shown(folder, len(mine), mine):
            return super().sweep(arguments)

    def validate_batch_is_legal(self, batch) -> None:
        from nnlab.cli import check_hydra_nodes
        from nnlab.config import ConfigError
        from nnlab.runs import unclaim
        grouped = isinstance(self.launcher, PopulationLauncher)
        if grouped:
            from nnlab.population.grouping import group_jobs, job_of
            batch = [group[0].overrides for group in group_jobs([job_of(i, list(o)) for i, o in enumerate(batch)])]
        try:
            for overrides in batch:
                try:
                    cfg = self.hydra_context.config_loader.load_sweep_config(master_config=self.config,
                                                                             sweep_overrides=list(overrides))
                except (HydraException, OmegaConfBaseException) as e:
                    raise ConfigError(f"the config does not compose: {' '.join(str(e).strip().splitlines()[:2])} "
                                      f"(the job {' '.join(overrides)})") from None
                check_hydra_nodes(cfg)
                if grouped:
                    self.launcher.composed[tuple(overrides)] = cfg
        except ConfigError:
            unclaim(Path(self.config.hydra.sweep.dir))
            raise
