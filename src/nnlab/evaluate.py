"""Re-score a checkpoint on its test set with plain PyTorch, as a check on what the run reported.

    python -m nnlab.evaluate runs/<overrides>/<time>/checkpoints/last.ckpt   (make evaluate ARGS=...)

Loads the checkpoint with torch.load(weights_only=True), rebuilds the bare nn.Module from the run
config saved inside it, and counts correct test predictions without Lightning or the Classifier.
A checkpoint is input like any other: its config passes the same gate as a run's (nnlab/config.py),
and only the data and the model are built from the checked copy.
"""
import argparse
from pathlib import Path

import torch
from hydra.utils import instantiate

from nnlab.checkpoint import UnreadableCheckpoint, read_checkpoint
from nnlab.config import ConfigError, gate
from nnlab.errors import NnlabError, command
from nnlab.runs import read_metrics


def load(ckpt_path: Path) -> tuple[dict, dict]:
    """(the checked data and model configs, the network's weights) of a checkpoint; ConfigError if
    the file is not a whole nnlab checkpoint."""
    try:
        ckpt = read_checkpoint(ckpt_path)
        stored = ckpt["hyper_parameters"]["config"]
        weights = {k.removeprefix("net."): v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
        stored = {"data": stored["data"], "model": stored["model"]}
    except (UnreadableCheckpoint, KeyError, TypeError, AttributeError) as e:  # not whole, or not one of nnlab's
        why = str(e).removeprefix(f"{ckpt_path} is not a readable checkpoint ").strip("()") or type(e).__name__
        raise ConfigError(f"{ckpt_path} is not a readable nnlab checkpoint ({why}): give a run's "
                          "checkpoints/last.ckpt") from None
    return gate(stored), weights


@torch.no_grad()
def evaluate(ckpt_path: Path) -> float:
    cfg, weights = load(ckpt_path)
    data = instantiate(cfg.data)
    data.prepare_data()
    data.setup("test")
    net = instantiate(cfg.model, in_shape=data.in_shape, num_classes=data.num_classes).eval()
    net.load_state_dict(weights)
    correct = total = 0
    for x, y in data.test_dataloader():
        correct += (net(x).argmax(dim=1) == y).sum().item()
        total += len(y)
    return correct / total


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m nnlab.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="RUN_FOLDER/checkpoints/last.ckpt")
    ckpt = parser.parse_args(argv).checkpoint
    if not ckpt.is_file():
        raise NnlabError(f"no such checkpoint: {ckpt} (a run's is RUN_FOLDER/checkpoints/last.ckpt)")
    acc = evaluate(ckpt)
    metrics = read_metrics(ckpt.parent.parent, unusable={}) or {}  # unusable: nothing reported can be read
    reported = (f"the run reported {metrics['test/acc']:.4f}" if "test/acc" in metrics else  # a failed or
                f"the run reported no test/acc: status {metrics.get('status', 'unknown')}")  # interrupted run
    print(f"test accuracy recomputed from {ckpt}: {acc:.4f} ({reported})")


if __name__ == "__main__":
    command(main)
