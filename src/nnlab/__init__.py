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


def cores() -> int:
    """CPU cores this process may run on: its affinity (taskset, a SLURM allocation, a container's
    cpuset) where the OS tells it, else the machine's. What "one a core" means in nnlab's settings
    (a population's workers, the local launcher's jobs at once, a search's trials at once), as in
    nproc's and joblib's counts."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
