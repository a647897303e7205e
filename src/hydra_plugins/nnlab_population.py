"""nnlab's population launcher as Hydra sees it: hydra/launcher=population on the command line
(conf/hydra/launcher/population.yaml). Hydra 1.3.8 instantiates a launcher only from a class defined
in the `hydra_plugins` namespace package, which it scans (and imports on every run): so this stub
lives here and imports nothing heavy; grouping and training are nnlab/population.py."""
from hydra.plugins.launcher import Launcher


class PopulationLauncher(Launcher):
    def __init__(self, **settings) -> None:
        self.settings = settings  # conf/hydra/launcher/population.yaml, with the command line's values

    def setup(self, *, hydra_context, task_function, config) -> None:
        from nnlab.population import Population  # torch and Lightning: imported by population sweeps only
        self.population = Population(self.settings, hydra_context=hydra_context, task_function=task_function,
                                     config=config)

    def launch(self, job_overrides, initial_job_idx: int):
        return self.population.launch(job_overrides, initial_job_idx)
