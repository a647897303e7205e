"""Train and test one model; everything it makes lands in its own run folder.

    python -m nnlab.train [overrides]          # or: make train ARGS="..."
    python -m nnlab.train model=mlp data=spiral optimizer.lr=1.0 scheduler=none trainer.max_epochs=2000

Leaves runs/<overrides>/<start time>/ holding .hydra/config.yaml (the resolved config),
tensorboard/ (events), checkpoints/last.ckpt, train.log and metrics.json (final metrics, status).
"""
import json
import math
import sys
import time
import warnings
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from nnlab import CONF_DIR, ddp  # ddp: DDP child processes that work in a multirun (see ddp.py)
from nnlab.classifier import Classifier

OmegaConf.register_new_resolver("nnlab.or", lambda value, default: value or default, replace=True)
# Data sits in memory as tensors: loader workers would only add inter-process copies.
warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*LeafSpec.*is deprecated")  # Lightning 2.6 on torch 2.14, harmless


class ConfigError(ValueError):
    """A config value that would fail or mislead the run; the message names the key and a fix."""


def check(cfg: DictConfig) -> None:
    """Ranges that plain YAML cannot express, checked before anything is built or trained."""
    number = lambda v: isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)  # noqa: E731
    rules = [("optimizer.lr", lambda v: number(v) and v > 0, "a positive number, e.g. optimizer.lr=0.01"),
             ("scheduler.gamma", lambda v: v is None or number(v) and 0 < v <= 1, "in (0, 1], e.g. 0.95"),
             ("trainer.max_epochs", lambda v: isinstance(v, int) and v >= 1, "a whole number >= 1"),
             ("data.batch_size", lambda v: v is None or isinstance(v, int) and v >= 1, "a whole number >= 1"),
             ("l2", lambda v: number(v) and v >= 0, "a number >= 0, e.g. l2=0.001"),
             ("seed", lambda v: isinstance(v, int) and not isinstance(v, bool), "a whole number, e.g. seed=1")]
    for key, ok, want in rules:
        value = OmegaConf.select(cfg, key)
        if not ok(value):
            raise ConfigError(f"{key}={value!r} is invalid: it must be {want}")


def build(cfg: DictConfig) -> tuple[L.LightningDataModule, Classifier, L.Trainer]:
    """Instantiate everything (cheap: no data is read); bad values raise ConfigError here."""
    try:
        data = instantiate(cfg.data)
        net = instantiate(cfg.model, in_shape=data.in_shape, num_classes=data.num_classes)
        module = Classifier(net, data.num_classes, instantiate(cfg.optimizer), instantiate(cfg.scheduler),
                            l2=cfg.l2, scheduler_interval=cfg.scheduler_interval,
                            config=OmegaConf.to_container(cfg, resolve=True))
        trainer = instantiate(cfg.trainer, logger=instantiate(cfg.logger),
                              callbacks=[instantiate(c) for c in cfg.callbacks.values()])
    except InstantiationException as e:  # Hydra's multi-line wrapper: keep the cause's one line
        raise ConfigError(str(e.__cause__ or e).splitlines()[0]) from e
    return data, module, trainer


def train(cfg: DictConfig) -> dict:
    check(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)  # before build: init draws from it
    data, module, trainer = build(cfg)
    run_dir, start = Path(cfg.run_dir), time.perf_counter()
    metrics: dict = {"status": "failed"}
    try:
        trainer.fit(module, datamodule=data)
        metrics.update({k: v.item() for k, v in trainer.callback_metrics.items()})
        metrics.update(trainer.test(module, datamodule=data, verbose=False)[0])
        metrics["status"] = "diverged" if module.diverged else "interrupted" if trainer.interrupted else "ok"
        if module.diverged:
            metrics["error"] = f"{module.diverged}: lower optimizer.lr"
    except BaseException as e:
        metrics["status"] = "interrupted" if isinstance(e, KeyboardInterrupt | SystemExit) else "failed"
        metrics["error"] = repr(e)
        raise
    finally:
        metrics.update(epochs=trainer.current_epoch, steps=trainer.global_step,
                       seconds=round(time.perf_counter() - start, 2), device=str(module.device),
                       threads=torch.get_num_threads(), torch=torch.__version__)
        if trainer.is_global_zero:  # DDP: every rank holds the same synced metrics; one file
            write_json(run_dir / "metrics.json", metrics)
    return metrics


def write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    tmp.replace(path)  # readers never see half a file


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        with ddp.job_scope():  # the next job of a multirun in this process starts clean
            metrics = train(cfg)
    except ConfigError as e:
        write_json(Path(cfg.run_dir) / "metrics.json", {"status": "invalid_config", "error": str(e)})
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # one bad job must not end the sweep (SystemExit would)
        sys.exit(f"nnlab: {e}")
    if rank_zero_only.rank != 0:  # DDP ranks > 0: rank 0 reports
        return
    shown = "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if "/" in k)
    run_dir = Path(cfg.run_dir)
    run_dir = run_dir.relative_to(Path.cwd()) if run_dir.is_relative_to(Path.cwd()) else run_dir
    print(f"\nrun folder: {run_dir}\nstatus: {metrics['status']}  {shown}  ({metrics['seconds']} s)")
    if metrics["status"] == "interrupted":  # Lightning swallows Ctrl-C/SIGTERM and would exit 0
        sys.exit("nnlab: interrupted; the run folder holds what was done so far")
    if metrics["status"] == "diverged":  # a result, not a crash: a sweep goes on past it
        print(f"nnlab: {metrics['error']}", file=sys.stderr)


if __name__ == "__main__":
    main()
