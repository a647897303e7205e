"""nnlab: train, sweep and compare the classic first neural networks on MNIST and the spiral."""
import os
from pathlib import Path

# conf/ sits at the repository's top level, beside src/ (the package is installed editable).
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def run(overrides: list[str]) -> dict:
    """One training, as `python -m nnlab.train *overrides` runs it; returns metrics.json's content
    plus "run_dir". nnlab.run(["experiment=spiral_linear"])["train/loss"] -> 0.7579"""
    from nnlab.train import run  # on use: importing nnlab itself stays light (no torch, no Lightning)
    return run(overrides)


def train_command() -> None:
    """The executable nnlab-train: `python -m nnlab.train` under a name of its own, the form Hydra's shell
    completion completes (it cannot complete `python -m`): eval "$(nnlab-train -sc install=bash)"."""
    import runpy
    runpy.run_module("nnlab.train", run_name="__main__")  # as python -m runs it; argv[0] stays nnlab-train


def cores() -> int:
    """CPU cores this process may run on: its affinity (taskset, a SLURM allocation, a container's
    cpuset) where the OS tells it, else the machine's. What "one a core" means in nnlab's settings
    (a population's workers, the local launcher's jobs at once, a search's trials at once), as in
    nproc's and joblib's counts."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
