"""A run's loggers, one a node of conf/logger/ (TensorBoard, CSV, MLflow, W&B), named by its run folder."""
import hashlib
import logging
import os
from pathlib import Path

from hydra.utils import get_class, instantiate
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from omegaconf import DictConfig

# logger=mlflow: MLflow and Lightning say how they set up each run folder's new store (its tables, the
# experiment "nnlab"), the same lines for every run; its warnings still show
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
logging.getLogger("lightning.pytorch.loggers.mlflow").addFilter(lambda r: "not found. Creating it" not in r.getMessage())
logging.getLogger("alembic").setLevel(logging.WARNING)


def loggers(cfg: DictConfig, tensorboard: bool | None = None, purge_step: int | None = None) -> list:
    """The run's loggers, one a node of the `logger` group (logger=[tensorboard,mlflow]: two); with
    `tensorboard` True only its TensorBoard ones, False all others. A `run_name: null` (MLflow's) or
    W&B's `name: null` is the run folder's name, what tells a sweep's runs apart; W&B's `id: null` is
    one id a run folder (a resumed run goes on in its own W&B run). `purge_step`: TensorBoard's
    SummaryWriter hides the folder's earlier events from that step on (a run that goes on from there)."""
    made, folder = [], Path(cfg.run_dir)
    for node in (cfg.get("logger") or {}).values():
        kind = get_class(node._target_)
        board = issubclass(kind, TensorBoardLogger)
        if tensorboard is not None and board != tensorboard:
            continue
        names = {"run_name": folder.name} if node.get("run_name", "") is None else {}
        if board and purge_step is not None:
            names["purge_step"] = purge_step
        if kind is WandbLogger:
            names.update(wandb_names(node, folder))
        made.append(instantiate(node, **names))
    return made


def wandb_names(node: DictConfig, folder: Path) -> dict:
    """W&B's name and id where the config leaves them null, with wandb set up quiet: its lines (a run's
    start, where it saved, how to sync) would be a dozen a run in a sweep, whose console has the
    progress line; docs/configuration.md says how to sync. Lightning passes wandb an `anonymous`
    setting wandb warns of once a process; set up silent, it does not."""
    import wandb  # logger=wandb only: ~1 s to import
    wandb.setup(wandb.Settings(silent=True, mode="offline" if node.get("offline") else "online"))
    names = {"name": folder.name} if node.get("name", "") is None else {}
    if node.get("id", "") is None:
        names["id"] = hashlib.sha1(str(folder.absolute()).encode()).hexdigest()[:16]
    return names


def end_loggers(made: list, run_dir: Path, ok: bool) -> None:
    """End a W&B run with wandb's own finish, so that the next run of a sweep in this process starts its
    own, and remove the shortcut links wandb makes in its folder (latest-run, debug.log, ...): nnlab
    follows no link in a run folder (docs/reliability.md); the files they name stay in
    wandb/offline-run-*/, but for wandb's core log, which it keeps in its cache (~/.cache/wandb/logs)."""
    if not any(isinstance(logger, WandbLogger) for logger in made):
        return
    import wandb
    if wandb.run is not None:
        wandb.run.finish(exit_code=0 if ok else 1)
    for root, dirs, files in os.walk(run_dir / "wandb"):  # links to folders are listed, not followed
        for name in (*dirs, *files):
            if (path := Path(root, name)).is_symlink():
                path.unlink()
