import json

import pytest
import torch

from nnlab.models import CNN, MLP, Linear

MNIST, SPIRAL = (1, 28, 28), (2,)


@pytest.mark.parametrize("make", [Linear, MLP, CNN])
def test_logits_shape_on_mnist(make):
    net = make(in_shape=MNIST, num_classes=10)
    assert net(torch.rand(5, *MNIST)).shape == (5, 10)


@pytest.mark.parametrize("make", [Linear, MLP])
def test_logits_shape_on_spiral(make):
    net = make(in_shape=SPIRAL, num_classes=3)
    assert net(torch.randn(7, *SPIRAL)).shape == (7, 3)


def test_cnn_refuses_non_image_data_naming_the_fix():
    with pytest.raises(ValueError, match="C x H x W images.*data=mnist"):
        CNN(in_shape=SPIRAL, num_classes=3)


@pytest.mark.parametrize("make,count", [(Linear, 7_850), (MLP, 79_510), (CNN, 8_490)])
def test_parameter_counts_match_the_notebook_architectures(make, count):
    assert sum(p.numel() for p in make().parameters()) == count


def test_cnn_is_the_notebooks_layer_stack():
    net = CNN()
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding) for c in convs] == [
        (1, 10, (5, 5), (1, 1), (0, 0)), (10, 20, (5, 5), (1, 1), (0, 0))]
    assert (net.fc.in_features, net.fc.out_features) == (320, 10)


@pytest.mark.parametrize("make", [Linear, MLP])
def test_notebook_init_is_small_gaussian_weights_and_zero_biases(make):
    torch.manual_seed(0)
    net = make(in_shape=(784,), num_classes=10, init_std=0.01)
    for name, p in net.named_parameters():
        if name.endswith("bias"):
            assert torch.all(p == 0)
        else:
            assert abs(p.std().item() - 0.01) < 0.001 and abs(p.mean().item()) < 0.001


# What a person adds to src/nnlab/models/ for a new architecture: one file (nnlab builds only classes
# defined in its own package), here a two-hidden-layer MLP that declares itself stackable.
DEEP = '''import math

from torch import Tensor, nn


class DeepMLP(nn.Module):
    stackable, vmap_on_cpu = True, True  # read by nnlab.population

    def __init__(self, in_shape: tuple[int, ...] = (1, 28, 28), num_classes: int = 10, hidden: int = 16):
        super().__init__()
        self.layers = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(in_shape), hidden), nn.ReLU(),
                                    nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)
'''


def test_a_model_added_as_one_class_and_one_yaml_runs_sweeps_trains_in_populations_and_compares(
        tmp_path, monkeypatch, cli):
    import nnlab.models
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "deep.py").write_text(DEEP)
    monkeypatch.setattr(nnlab.models, "__path__", [*nnlab.models.__path__, str(tmp_path / "pkg")])
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "model" / "deep.yaml").write_text("_target_: nnlab.models.deep.DeepMLP\nhidden: 16\n")
    args = [f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "data=spiral", "model=deep", "optimizer.lr=0.5",
            "scheduler=none", "data.steps_per_epoch=5", "trainer.max_epochs=2"]
    alone = cli("nnlab.train", *args, "seed=0", cwd=tmp_path)
    assert alone.returncode == 0 and "status: ok" in alone.stdout, alone.stderr[-2000:]
    population = cli("nnlab.train", "--multirun", "hydra/launcher=population", "hydra.launcher.workers=1", *args,
                     "seed=0,1", "model.hidden=8,16", f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert population.returncode == 0, population.stderr[-2000:]
    assert "population 0: 2 runs differing in seed, vmapped" in population.stdout  # hidden 8, 16: two
    basic = cli("nnlab.train", "--multirun", *args, "seed=0,1", "model.hidden=8,16",
                f"hydra.sweep.dir={tmp_path / 'basic'}", cwd=tmp_path)
    assert basic.returncode == 0, basic.stderr[-2000:]
    for member in (tmp_path / "sweep").glob("*/metrics.json"):  # each member is its separate run, bit for bit
        a, b = json.loads(member.read_text()), json.loads((tmp_path / "basic" / member.parent.name / "metrics.json").read_text())
        assert a["population"]["size"] == 2 and {k: v for k, v in a.items() if "/" in k} == \
            {k: v for k, v in b.items() if "/" in k}, member.parent.name
    compared = cli("nnlab.compare", str(tmp_path / "sweep"), cwd=tmp_path)
    assert compared.returncode == 0 and "| spiral | deep |" in compared.stdout, compared.stderr[-2000:]
