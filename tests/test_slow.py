"""The experiments at full length, against the bands the notebook's results set. Minutes each and
they need real MNIST (fetched on first use): `make test-slow`, never in `make test`/CI."""
import pytest

from nnlab.train import train

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name,key,low,high", [
    ("spiral_linear", "train/loss", 0.72, 0.77),
    ("spiral_mlp", "train/loss", 0.23, 0.27),
    ("seed_mnist_cnn", "test/acc", 0.9045, 0.9185),
    ("mnist_cnn_fast", "test/acc", 0.990, 1.0),
])
def test_experiment_lands_in_its_band(make_cfg, name, key, low, high):
    metrics = train(make_cfg(f"experiment={name}"))
    assert metrics["status"] == "ok" and low <= metrics[key] <= high, metrics


def test_default_run_reaches_the_foundation_bar(make_cfg):
    metrics = train(make_cfg())
    assert metrics["test/acc"] >= 0.895
