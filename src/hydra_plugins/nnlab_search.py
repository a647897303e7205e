"""nnlab's Optuna sweeper as Hydra sees it: `defaults: - override /hydra/sweeper: optuna` in a sweep
file selects it (conf/hydra/sweeper/optuna.yaml). Hydra 1.3.8 instantiates a sweeper only from a
class defined in the `hydra_plugins` namespace package, which it finds by scanning (and imports on
every run): so this stub lives here and imports nothing heavy; the study itself is nnlab/search.py."""
from hydra.plugins.sweeper import Sweeper


class OptunaSweeper(Sweeper):
    study = True  # its jobs are the trials of a study: each finds its trial (nnlab.search.job_trial) and reports to it

    def __init__(self, **settings) -> None:
        self.settings = settings  # conf/hydra/sweeper/optuna.yaml, with the sweep file's values

    def setup(self, *, hydra_context, task_function, config) -> None:
        from nnlab.search import Search  # Optuna is imported only by the sweeps that use it
        self.search = Search(self.settings, hydra_context=hydra_context, task_function=task_function,
                             config=config)

    def sweep(self, arguments: list[str]):
        return self.search.run(arguments)
