"""nnlab: train, sweep and compare the classic first neural networks on MNIST and the spiral."""
from pathlib import Path

# conf/ sits at the repository's top level, beside src/ (the package is installed editable).
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def run(overrides: list[str]) -> dict:
    """One training, as `python -m nnlab.train *overrides` runs it; returns metrics.json's content
    plus "run_dir". nnlab.run(["experiment=spiral_linear"])["train/loss"] -> 0.7579"""
    from nnlab.train import run  # on use: importing nnlab itself stays light (no torch, no Lightning)
    return run(overrides)
