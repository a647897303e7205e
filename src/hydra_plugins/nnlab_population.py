"""nnlab's population launcher as Hydra sees it: hydra/launcher=population on the command line
(conf/hydra/launcher/population.yaml), and the sweeper that goes with it (conf/hydra/sweeper/
grouped.yaml: nnlab.train selects it for a grid swept through the population). Hydra 1.3.8
instantiates a launcher or sweeper only from a class defined in the `hydra_plugins` namespace package,
which it scans (and imports on every run): so these stubs live here and import nothing heavy; grouping
and training are nnlab/population.py."""
# Hydra's default sweeper (hydra/sweeper/basic.yaml's _target_): Hydra exports no other class to extend
# for it, and validate_batch_is_legal is the public Sweeper hook its sweep calls on each batch
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.plugins.launcher import Launcher


class PopulationLauncher(Launcher):
    def __init__(self, **settings) -> None:
        self.settings = settings  # conf/hydra/launcher/population.yaml, with the command line's values
        self.composed: dict = {}  # a job's overrides -> its config, composed by GroupedBasicSweeper's check

    def setup(self, *, hydra_context, task_function, config) -> None:
        from nnlab.population import Population  # torch and Lightning: imported by population sweeps only
        self.population = Population(self.settings, hydra_context=hydra_context, task_function=task_function,
                                     config=config, composed=self.composed)

    def launch(self, job_overrides, initial_job_idx: int):
        return self.population.launch(job_overrides, initial_job_idx)


class GroupedBasicSweeper(BasicSweeper):
    """Hydra's basic sweeper, but a batch going to the population launcher is checked by composing one
    job of each group (~0.2 s a composition) rather than every job: the group's other jobs differ from
    it only in the numbers of keys it has (seed, optimizer.lr...), and the population derives their
    configs from that composition, which it is handed, checking each (a bad value: invalid_config)."""

    def validate_batch_is_legal(self, batch) -> None:
        if not isinstance(self.launcher, PopulationLauncher):
            return super().validate_batch_is_legal(batch)
        from nnlab.population import group_jobs, parse
        for group in group_jobs([parse(i, list(o)) for i, o in enumerate(batch)]):
            # what Sweeper.validate_batch_is_legal does for a job, its composition kept for the launcher
            cfg = self.hydra_context.config_loader.load_sweep_config(master_config=self.config,
                                                                     sweep_overrides=list(group[0].overrides))
            self.launcher.composed[tuple(group[0].overrides)] = cfg
