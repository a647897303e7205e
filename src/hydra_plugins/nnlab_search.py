"""nnlab's Optuna and PBT sweepers as Hydra sees them: `defaults: - override /hydra/sweeper: optuna`
(or pbt) in a sweep file selects one (conf/hydra/sweeper/optuna.yaml, pbt.yaml). Hydra 1.3.8 instantiates a sweeper only from a
class defined in the `hydra_plugins` namespace package, which it finds by scanning (and imports on
every run): so these stubs live here and import nothing heavy; the work is nnlab/search.py and pbt.py."""
from hydra.plugins.sweeper import Sweeper


class OptunaSweeper(Sweeper):
    study = True  # its jobs are the trials of a study: each finds its trial (nnlab.search.job_trial) and reports to it
    one_process = True  # a population of its trials trains in one process: the pruner sees reports in job order

    def __init__(self, **settings) -> None:
        self.settings = settings  # conf/hydra/sweeper/optuna.yaml, with the sweep file's values

    def setup(self, *, hydra_context, task_function, config) -> None:
        from nnlab.search import Search  # Optuna is imported only by the sweeps that use it
        self.search = Search(self.settings, hydra_context=hydra_context, task_function=task_function,
                             config=config)

    def sweep(self, arguments: list[str]):
        return self.search.run(arguments)


class PBTSweeper(Sweeper):
    pbt = True  # its jobs are one population, whose weakest members copy the strongest (nnlab.pbt)
    one_process = True  # ranked against each other every interval: one process, in job order

    def __init__(self, **settings) -> None:
        self.settings = settings  # conf/hydra/sweeper/pbt.yaml, with the sweep file's values

    def setup(self, *, hydra_context, task_function, config) -> None:
        from nnlab.pbt import PBT
        self.run = PBT(self.settings, hydra_context=hydra_context, task_function=task_function, config=config).run

    def sweep(self, arguments: list[str]):
        return self.run(arguments)
