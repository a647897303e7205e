"""What Lightning's DDP needs from a Hydra app, so `trainer=ddp` works in a run and in a multirun.

    python -m nnlab.train trainer=ddp trainer.accelerator=cpu trainer.devices=2 data=spiral model=mlp

Lightning 2.6.6 starts ranks 1..N-1 of a node by running the script again (`_hydra_subprocess_cmd`
in lightning/fabric/strategies/launchers/subprocess_script.py): `sys.argv` plus
`hydra.run.dir=<hydra.run.dir>`. That is right for a single run but not in a multirun, where
(measured, `--multirun ... seed=0,1`) each child ran `--multirun` again: the whole sweep, into a
second sweep folder of its own. And the launching process keeps
the process group open and LOCAL_RANK, WORLD_SIZE, MASTER_PORT, OMP_NUM_THREADS (1 thread a rank on
2 cores) set after the job: the sweep's next job in that process then took itself for an externally
launched rank 0, started no rank 1 and reused the old group, whose rank 1 had exited (measured: gloo
"Connection closed by peer"). `child_command` and `job_scope` fix both. On SLURM
(hydra/launcher=slurm) srun starts every rank itself and `child_command` is not used.
"""
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from hydra.core.hydra_config import HydraConfig

from nnlab import compat

# os.environ keys Lightning's launcher and process group set in the launching process.
DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", "OMP_NUM_THREADS")


def child_command(local_rank: int) -> tuple[Sequence[str], str]:
    """(argv, cwd) of the process that becomes local rank `local_rank` of this Hydra job: a single
    run of this job's own overrides (never `--multirun` or the sweep's lists), writing into this
    job's run folder, from the folder the app was started in. Works whatever launched the job
    (the basic launcher, joblib, local), since it does not read `sys.argv`."""
    hydra = HydraConfig.get()
    argv = [sys.executable, "-m", "nnlab.train", *hydra.overrides.task,
            f'hydra.run.dir="{hydra.runtime.output_dir}"',  # quoted: run folders contain ',' and '='
            "hydra.output_subdir=null",  # rank 0 alone writes .hydra/
            f"hydra.job.name=train_ddp_process_{local_rank}"]  # its log: train_ddp_process_<r>.log
    return argv, hydra.runtime.cwd


compat.launch_ranks_with(child_command)  # before any Trainer is built


@contextmanager
def job_scope() -> Iterator[None]:
    """Run one job so that the next job in this process starts from the same state: the DDP
    environment variables and torch's thread count as they were, and no process group left open."""
    env, threads = {k: os.environ.get(k) for k in DDP_ENV}, torch.get_num_threads()
    try:
        yield
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        torch.set_num_threads(threads)
