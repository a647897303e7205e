"""One member of a population: its parts, its hooks around the steps, and the run folder it leaves.

Its parts are its config, data, Classifier, optimizer and schedule; its hooks what a run's Classifier
and callbacks would do (train/loss points, the epoch's line, means and curves); its folder what a run of its own leaves, with
the checkpoint it continues from after a stop."""
import contextlib
import copy
import logging
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from nnlab import runs, steps
from nnlab.callbacks import Figures
from nnlab.checkpoint import UnreadableCheckpoint, read_checkpoint
from nnlab.loggers import end_loggers
from nnlab.loggers import loggers as train_loggers
from nnlab.population.grouping import Job
from nnlab.train import parts

log = logging.getLogger("nnlab")
STATE_VERSION = 2  # of the "population" entry of an interrupted member's checkpoint


def file_handler(log_file: Path) -> logging.FileHandler:
    """A run's train.log, opened when first written, its lines as Hydra's job logging formats them."""
    handler = logging.FileHandler(log_file, delay=True)
    # not initialized: a population built in Python (bench); the hydra node read where it is (a copy of it
    # cost ~5 ms a member)
    fmt = OmegaConf.select(HydraConfig.get(), "job_logging.formatters.timed.format") if HydraConfig.initialized() else None
    handler.setFormatter(logging.Formatter(fmt or "%(message)s"))
    return handler


class Member:
    """One run of a population: its config and folder, and once built, its data, Classifier (net,
    epoch sums, L2), optimizer and schedule, and what Lightning would have logged for it."""

    def __init__(self, job: Job, cfg: DictConfig, run_dir: Path, log_file: Path, saved: dict | None = None):
        self.job, self.cfg, self.run_dir = job, cfg, run_dir
        self.handler = file_handler(log_file)
        self.metrics: dict = {"status": runs.FAILED}
        self.stopped = False
        self.saved = saved  # the checkpoint it continues from (make sweep RESUME=), or None
        # (epoch, steps done in it) of the population where it starts: (0, 0), or where it stopped
        self.start = tuple(saved["population"]["place"]) if saved else (0, 0)
        self.boundary: tuple | None = None  # where fit stopped it cleanly: (epoch, steps done, its RNG there)
        self.logged = False  # its events file holds its first points (a member resumed after a stop)
        self.board: list = []  # its TensorBoard logger while it trains, once opened (show_points)
        self.on_board = 0  # how many of its points that logger has
        self.pruning = None  # a study's trial: nnlab.callbacks.Pruning, judging it after each validation
        self.pbt: dict | None = None  # population-based training: its numbers and lineage (nnlab.pbt)

    def note(self, message: str, error: bool = False) -> None:
        """A line in the member's train.log; `error`: with the traceback of the exception being handled."""
        level, info = (logging.ERROR, sys.exc_info()) if error else (logging.INFO, None)
        self.handler.handle(logging.LogRecord("nnlab", level, __file__, 0, message, None, info))

    def build(self, shared: dict) -> None:
        """What nnlab.train.train does before fit, in its order: seed, data, net (its init draws).
        Members whose data configs resolve alike share one data module, loaded once (MNIST: its split
        is fixed by data.split_seed, not by the run's seed; the spiral's data.seed is the run's)."""
        L.seed_everything(self.cfg.seed, workers=True, verbose=False)
        self.data, self.module = parts(self.cfg, shared_data(self.cfg, shared))
        self.rng = torch.get_rng_state()  # the data order draws from here (TensorLoader), per member
        self.data.setup("fit")  # loads the data once: a no-op for a member sharing another's
        self.params = dict(self.module.net.named_parameters())  # its own leaves
        self.step, self.epoch, self.loss, self.finite_loss, self.diverged = 0, 0, None, None, None
        self.callback_metrics: dict = {}
        self.points: list[tuple[dict, int]] = []  # its scalars: to TensorBoard each epoch, the others at its end
        self.figures = Figures(str(self.run_dir))
        self.first_batch: tuple | None = None  # (x, y) of its first step, for the log line and first_batch.png

    def configure(self, total_steps: int) -> None:
        module = self.module
        self.optimizer = module.make_optimizer(module.parameters())
        self.plain_sgd = self.is_plain_sgd()
        self.scheduler, self.scheduled = None, False  # scheduled: its schedule has stepped (schedule)
        if module.make_scheduler is not None:
            per_step = module.hparams.scheduler_interval == "step"
            self.scheduler = module.make_scheduler(self.optimizer, **({"total_steps": total_steps} if per_step else {}))

    def is_plain_sgd(self) -> bool:
        """Whether its step is plain SGD's, taken for all such members at once (Stack.sgd_step), not by
        its optimizer."""
        group = self.optimizer.param_groups
        return (type(self.optimizer) is torch.optim.SGD and len(group) == 1 and group[0]["momentum"] == 0
                and group[0]["weight_decay"] == 0 and not group[0]["maximize"]
                and not group[0]["differentiable"] and not isinstance(group[0]["lr"], Tensor))

    @contextlib.contextmanager
    def own_rng(self):
        """torch's global RNG as this member's run would have it: its loaders draw from it."""
        outer = torch.get_rng_state()
        torch.set_rng_state(self.rng)
        try:
            yield
        finally:
            self.rng = torch.get_rng_state()
            torch.set_rng_state(outer)

    def log_point(self, values: dict, step: int) -> None:
        self.points.append(({k: v.item() if isinstance(v, torch.Tensor) else v for k, v in values.items()}, step))


class MemberRuns(L.Callback):
    """What a run's own callbacks and loggers write, written for each member from the population's
    per-member values: each epoch's line, curves and means (end_epoch), its TensorBoard points as each
    epoch's checkpoint is saved (show_points), its metrics once the test has run (tested); its last
    outputs as the population ends (finish)."""

    def on_train_epoch_end(self, trainer: L.Trainer, population) -> None:  # before the module's: PBT, checkpoint
        for m in population.active:
            end_epoch(m, population.epochs)

    def on_save_checkpoint(self, trainer: L.Trainer, population, checkpoint: dict) -> None:
        if trainer.state.fn == "fit" and not trainer.received_sigterm:  # an epoch's (a stop's: finish writes them)
            for m in population.members:
                if not m.stopped:
                    show_points(m)

    def on_test_end(self, trainer: L.Trainer, population) -> None:
        for m in population.members:
            tested(m)


def shared_data(cfg: DictConfig, shared: dict):
    """The data module of this config, one for all members whose data configs resolve alike."""
    key = OmegaConf.to_yaml(cfg.data, resolve=True)
    if key not in shared:
        shared[key] = instantiate(cfg.data)
        shared[key].prepare_data()  # MNIST: its files checked (MD5), once a population
    return shared[key]


def finished(members: list[Member]) -> list[Member]:
    """The members that may be the best one (figures=best): ended ok or diverged, with a val/acc."""
    return [m for m in members if m.metrics["status"] in (runs.OK, runs.DIVERGED) and "val/acc" in m.metrics]


def best(members: list[Member]) -> Member | None:
    return max(finished(members), key=lambda m: m.metrics["val/acc"], default=None)


def end_group(m: Member, every: int, last_group: bool) -> None:
    """Where Lightning ends a (fused) batch: the epoch's schedule step after its last group, then
    train/loss (and lr) as Classifier.on_train_batch_end logs them."""
    if m.scheduler is not None and m.module.hparams.scheduler_interval != "step" and last_group:
        steps.schedule(m)
    point = bool(every and m.step % every == 0 or m.diverged)
    if m.finite_loss is not None:
        m.callback_metrics["train/loss"] = m.finite_loss
        if point:
            m.log_point({"train/loss": m.finite_loss, "lr": m.optimizer.param_groups[0]["lr"]}, m.step)
    if every and m.step % every == 0 and math.isfinite(m.loss.item()):  # Figures.on_train_batch_end's curve
        m.figures.train_curve.append((m.figures.seen, m.loss.item()))


def end_epoch(m: Member, epochs: int) -> None:
    """Where Lightning ends a run's epoch, after its validation: the epoch line, the validation curve's
    point and the epoch's training means."""
    m.epoch += 1
    cb = m.cfg.callbacks
    if "epoch_log" in cb and (m.epoch % cb.epoch_log.every_n_epochs == 0 or m.epoch == epochs):
        shown = "  ".join(f"{k} {m.callback_metrics[k].item():.4f}" for k in ("train/loss", "val/loss", "val/acc")
                          if k in m.callback_metrics)
        m.note(f"epoch {m.epoch}/{epochs}  step {m.step}  {shown}")
    if "val/loss" in m.callback_metrics:
        m.figures.val_curve.append((m.figures.seen, m.callback_metrics["val/loss"].item()))
    own = m.module.sums["fit"]  # the member's row, popped as its run pops its sums
    own.load_state_dict({"loss": m.sums.loss[m.slot], "hits": m.sums.hits[m.slot]})
    m.sums.loss[m.slot], m.sums.hits[m.slot] = 0, 0
    loss, acc = own.pop(lambda t: t)
    means = {"train/acc": acc, "train/loss_epoch": loss}
    m.callback_metrics.update(means)
    m.log_point(means, m.step)
    if m.diverged or m.epoch == epochs:
        m.stopped = True


def tested(m: Member) -> None:
    """The member's metrics once its test pass has run, as a run records them."""
    m.metrics.update({k: v.item() for k, v in m.callback_metrics.items()})
    m.metrics["test/n"] = len(m.data.test_set[1])
    m.metrics["classes"] = m.data.num_classes
    if m.pbt is not None:
        m.metrics["pbt"] = m.pbt
    pruned = m.pruning is not None and m.pruning.pruned_epoch
    m.metrics["status"] = runs.DIVERGED if m.diverged else runs.PRUNED if pruned else runs.OK
    if pruned:
        m.metrics["pruned_epoch"] = pruned
    if m.diverged:
        m.metrics["error"] = f"{m.diverged}: lower optimizer.lr"


def show_points(m: Member) -> None:
    """The member's points so far to its TensorBoard logger (its run's, opened at the first call with the
    hyperparameters and first batch a run's has from its start), flushed to disk: a population's curves
    show in TensorBoard each epoch, as a run's do. Its other loggers take every point when it ends (a
    process holds one W&B run at a time)."""
    if not m.board:
        # A member that goes on from a checkpoint hides what its events file holds past the checkpoint's
        # step: points an epoch wrote before a kill stopped its checkpoint (TensorBoard's purge_step)
        after = m.saved["global_step"] + 1 if m.saved is not None else None
        m.board = train_loggers(m.cfg, tensorboard=True, purge_step=after)
        for logger in m.board:
            logger.log_hyperparams(dict(m.module.hparams))  # what Lightning logs as fit starts
            if m.first_batch is not None and not m.logged:  # a resumed run's has it
                logger.experiment.add_text("data/first_batch", Figures.describe(*m.first_batch))
    for logger in m.board:
        for values, step in m.points[m.on_board:]:
            logger.log_metrics(values, step)
        logger.save()
    m.on_board, m.logged = len(m.points), m.logged or bool(m.board)


def finish(m: Member, seconds: float, draw: bool) -> None:
    """The member's outputs, as a run of its own leaves them: TensorBoard events, figures,
    metrics.json, train.log's last lines (its checkpoints are Lightning's: module.MemberFiles). A member
    interrupted other than at a step boundary (a second Ctrl-C) writes no more events: the folder keeps
    the last boundary's."""
    try:
        if hasattr(m, "points") and (m.metrics["status"] != runs.INTERRUPTED or m.boundary is not None):
            # A resumed member's events file holds its points from where it continued: TensorBoard
            # reads the folder's files as one run, every step once.
            show_points(m)
            loggers = [*m.board, *train_loggers(m.cfg, tensorboard=False)]  # as a run alone makes them
            try:
                log_member(m, loggers, draw)
            finally:
                end_loggers(loggers, m.run_dir, m.metrics["status"] in runs.FINISHED)
        else:
            for logger in m.board:
                logger.finalize("failed")
    finally:
        m.metrics.update(epochs=getattr(m, "epoch", 0), steps=getattr(m, "step", 0), seconds=seconds,
                         device=str(m.module.device) if hasattr(m, "module") else "cpu", threads=torch.get_num_threads(), torch=torch.__version__)
        runs.write_json(m.run_dir / "metrics.json", m.metrics)
        lines = runs.summary(m.run_dir, m.metrics, ", the population's")
        m.note(lines)  # its train.log's, as a run in a sweep writes it (the console has the sweep's progress)
        if m.metrics["status"] == runs.DIVERGED:
            m.note(f"nnlab: {m.metrics['error']}")
        m.handler.close()


def log_member(m: Member, loggers: list, draw: bool) -> None:
    """The member's points (its TensorBoard logger has them: show_points), hyperparameters and figures,
    to each logger as its run alone gives them."""
    trainer = SimpleNamespace(is_global_zero=True, datamodule=m.data, loggers=loggers, global_step=m.step)
    for logger in loggers[len(m.board):]:
        logger.log_hyperparams(dict(m.module.hparams))  # what Lightning logs as fit starts
        for values, step in m.points:
            logger.log_metrics(values, step)
    if m.metrics["status"] in (runs.OK, runs.DIVERGED):
        runs.hparams(loggers, m.cfg, m.metrics, m.step)
        if draw:
            m.figures.on_fit_end(trainer, m.module)
            if m.first_batch is not None:
                m.figures.draw_batch(trainer, *m.first_batch)
    for logger in loggers:
        logger.finalize("success")


def member_checkpoint(m: Member, place: tuple | None = None, points: list | None = None,
                      loops: dict | None = None) -> dict:
    """The member's checkpoint: what make evaluate and a reader of Lightning checkpoints use, and at a
    step boundary `place` ((epoch, steps done in it, its RNG there): where it stopped, or an epoch's
    end), what the population needs to continue it exactly, with Lightning's `loops` state there;
    `points`: its TensorBoard points not yet in its events file (an epoch's checkpoint: they are
    written when it ends)."""
    # clones: a member's parameters are views of the population's stack (Stack), and torch.save
    # writes a view's whole storage
    state = {k: v.clone() for k, v in m.module.state_dict().items()}
    ckpt = {"state_dict": state, "hyper_parameters": dict(m.module.hparams),
            "epoch": m.epoch, "global_step": m.step, "pytorch-lightning_version": L.__version__,
            "optimizer_states": [m.optimizer.state_dict()],
            "lr_schedulers": [m.scheduler.state_dict()] if m.scheduler is not None else []}
    if place is not None:
        epoch, done, rng = place
        ckpt["population"] = {
            "version": STATE_VERSION, "place": [epoch, done],  # the population's epoch, steps done in it
            "rng": rng,  # torch's RNG as the member's run had it before that epoch's data order was drawn
            "loss": m.loss, "finite_loss": m.finite_loss, "diverged": m.diverged, "stopped": m.stopped,
            "pruned_epoch": m.pruning.pruned_epoch if m.pruning is not None else None, "pbt": copy.deepcopy(m.pbt),
            "sums": {"loss": m.sums.loss[m.slot].clone(), "hits": m.sums.hits[m.slot].clone()},  # the epoch's so far
            "callback_metrics": dict(m.callback_metrics), "figures": m.figures.state_dict(),
            # points: those its loggers other than TensorBoard have not yet (an epoch's checkpoint: every
            # one; a stop's: none, they are written as it stops), on_board: how many TensorBoard has;
            # events: its events file holds its first points
            "points": list(points or []), "on_board": m.on_board if points else 0, "events": points is None or m.logged,
            "loops": loops}
    return ckpt


def saved_state(run_dir: Path, cfg: DictConfig) -> tuple[dict | None, str | None]:
    """An interrupted member's checkpoint when the population can continue it, else None and why not
    (one line)."""
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    if not ckpt.exists():
        return None, f"it was interrupted before it saved {ckpt.name}"
    try:
        saved = read_checkpoint(ckpt)
        state, config = saved.get("population"), saved["hyper_parameters"]["config"]
    except UnreadableCheckpoint as e:
        return None, str(e)
    except (KeyError, TypeError) as e:  # loads, but not a member's
        return None, f"{ckpt} is not a readable checkpoint (no {e})"
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        return None, f"{ckpt} holds no population state it can continue from (not stopped at a step boundary)"
    if config != OmegaConf.to_container(cfg, resolve=True):
        return None, f"{ckpt} was saved by a run of another config"
    return saved, None


def restore(m: Member, per_epoch: int) -> None:
    """The member as it was where it stopped: weights, optimizer, schedule, counters, the epoch's
    sums and losses so far, its RNG, what it had logged and drawn (its points so far are on disk)."""
    saved, state = m.saved, m.saved["population"]
    m.module.load_state_dict(saved["state_dict"])  # in place: m.params are these tensors
    m.optimizer.load_state_dict(saved["optimizer_states"][0])
    if m.scheduler is not None:
        m.scheduler.load_state_dict(saved["lr_schedulers"][0])
    m.step, m.epoch = saved["global_step"], saved["epoch"]
    m.rng, m.loss, m.finite_loss = state["rng"], state["loss"], state["finite_loss"]
    m.diverged, m.stopped, m.callback_metrics = state["diverged"], state["stopped"], dict(state["callback_metrics"])
    if m.pruning is not None:
        m.pruning.pruned_epoch = state["pruned_epoch"]
    m.pbt = state["pbt"]
    if m.pbt is not None and "l2" in m.pbt["numbers"]:  # the objective's, as PBT last set it
        m.module.hparams.l2 = m.pbt["numbers"]["l2"]
    m.sums.loss[m.slot], m.sums.hits[m.slot] = state["sums"]["loss"], state["sums"]["hits"]
    m.figures.load_state_dict(state["figures"])
    m.points, m.logged = list(state.get("points", [])), state.get("events", True)
    m.on_board = state.get("on_board", 0)  # killed: those of its points in its events file
    epoch, done = m.start
    line = f"continues from step {m.step} (epoch {epoch + 1}, after {done} of its {per_epoch} steps)"
    m.note(line)  # its train.log's; the population says once how many continue (run_share)
