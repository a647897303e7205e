"""nnlab: train, sweep and compare the classic first neural networks on MNIST and the spiral."""
from pathlib import Path

# conf/ sits at the repository's top level, beside src/ (the package is installed editable).
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
