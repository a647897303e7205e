"""Every config file composes and passes nnlab's check; every model runs a step on every dataset."""
import pytest
from omegaconf import OmegaConf

from nnlab import CONF_DIR
from nnlab.config import ConfigError, check
from nnlab.train import train

GROUPS = ("model", "data", "optimizer", "scheduler", "trainer", "experiment", "sweep")
CONFIGS = [(group, p.stem) for group in GROUPS for p in sorted((CONF_DIR / group).glob("*.yaml"))]
MODELS = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))
DATA = sorted(p.stem for p in (CONF_DIR / "data").glob("*.yaml"))


@pytest.mark.parametrize("group,name", CONFIGS, ids=[f"{g}={n}" for g, n in CONFIGS])
def test_every_config_composes_and_passes_the_check(group, name, make_cfg):
    overrides = [f"{group}={name}"]
    if group == "sweep":  # a grid's keys at their first values, as its first run (a search's ranges: defaults)
        params = OmegaConf.load(CONF_DIR / group / f"{name}.yaml").hydra.sweeper.params
        overrides += [f"{key}={str(values).split(',')[0]}" for key, values in params.items() if "(" not in str(values)]
    cfg = make_cfg(*overrides)
    check(cfg)
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("data", DATA)
def test_every_model_takes_a_step_on_every_dataset(model, data, make_cfg, tiny_mnist, tmp_path):
    args = [f"model={model}", f"data={data}", "+trainer.fast_dev_run=true"]
    args += [f"data.root={tiny_mnist}", "data.val_size=20"] if data == "mnist" else []
    if model == "cnn" and data == "spiral":  # points, not images: refused before any work, naming the fix
        with pytest.raises(ConfigError, match="model=cnn takes C x H x W images.*model=linear|mlp"):
            train(make_cfg(*args))
        return
    metrics = train(make_cfg(*args))
    assert metrics["status"] == "ok" and metrics["steps"] == 1 and 0 <= metrics["test/acc"] <= 1
    assert not (tmp_path / "run" / "checkpoints").exists()  # fast_dev_run writes no checkpoint
