"""nnlab's `hydra/launcher=local` as Hydra sees it (conf/hydra/launcher/local.yaml): the submitit
plugin's local launcher, with at most `max_parallel` jobs of a sweep running at once.

submitit's local executor starts every job it is given at once and ignores array_parallelism: a
72-job grid started 72 processes that import torch and Lightning (about 0.5 GB each). Here each job
is handed to the plugin's own launch() alone, from a pool of `max_parallel` threads, so a job starts
when one of the running ones ends. Hydra instantiates launchers only from classes defined in the
`hydra_plugins` namespace package and imports this module on every run: it imports nothing heavy."""
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher

from nnlab import cores


class CappedLocalLauncher(LocalLauncher):
    def __init__(self, max_parallel: int | None = None, **params: Any) -> None:
        super().__init__(**params)
        # null: one job per core this process may run on
        self.max_parallel = max_parallel or cores()

    def launch(self, job_overrides, initial_job_idx: int):
        def one(i: int):  # the plugin's launch() for a single job: submits it and waits for its result
            (result,) = super(CappedLocalLauncher, self).launch([job_overrides[i]], initial_job_idx + i)
            return result
        with ThreadPoolExecutor(max_workers=self.max_parallel) as pool:
            return list(pool.map(one, range(len(job_overrides))))
