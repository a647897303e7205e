"""The one LightningModule: wraps any nnlab model with loss, metrics, optimizer and LR schedule."""
import warnings
from collections.abc import Callable

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from nnlab import fused
from nnlab.steps import check_step


class EpochSums:
    """A stage's sums over its epoch, for exact means over every sample (averaging per-batch
    values would weight a short last batch like a full one). They are the sums torchmetrics'
    MeanMetric and micro MulticlassAccuracy kept, in the same dtypes, so the means are the same
    bits, at about 1/7 of their cost per batch (35 vs 240 us here). A NaN loss is left out of the
    loss mean, as MeanMetric left it; an inf one is not. Plain tensors, not module buffers: under
    DDP each rank keeps its own (added over ranks at the epoch's end), where DDP would overwrite
    buffers with rank 0's before every forward (it must, for a batch norm's running statistics)."""

    def __init__(self):
        self.loss = torch.zeros(2)  # sum of loss * B, sum of B (float32)
        self.hits = torch.zeros(2, dtype=torch.int64)  # correct, samples

    def to(self, device: torch.device) -> None:
        self.loss, self.hits = self.loss.to(device), self.hits.to(device)

    def state_dict(self) -> dict[str, Tensor]:
        return {"loss": self.loss.clone(), "hits": self.hits.clone()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.loss.copy_(state["loss"]), self.hits.copy_(state["hits"])

    def update(self, loss: Tensor, logits: Tensor, y: Tensor) -> None:
        weighted = loss.detach() * len(y)
        self.loss.add_(torch.where(loss.isnan(), 0.0, torch.stack((weighted, torch.full_like(weighted, len(y))))))
        correct = (logits.argmax(1) == y).sum()
        self.hits.add_(torch.stack((correct, torch.full_like(correct, len(y)))))

    def pop(self, reduce: Callable[[Tensor], Tensor]) -> tuple[Tensor, Tensor]:
        """(mean loss, accuracy) summed over `reduce` (all processes under DDP); then zeros."""
        loss, hits = reduce(self.loss), reduce(self.hits)
        means = loss[0] / loss[1], hits[0].float() / hits[1].float()
        self.loss.zero_(), self.hits.zero_()
        return means

# DDP: the per-epoch values logged below are computed from sums already added over every rank
# (EpochSums.pop); Lightning's advice to add sync_dist=True for them does not apply.
warnings.filterwarnings("ignore", ".*when logging on epoch level in distributed setting.*")


class Classifier(L.LightningModule):
    """Cross-entropy classifier around a plain `net` returning logits (B, num_classes).

    `optimizer` and `scheduler` are partials (Hydra `_partial_: true`) completed here with the
    parameters and the optimizer. `l2` adds 0.5 * l2 * sum(W**2) over the weight matrices and conv
    kernels (tensors of 2 or more dimensions) to the training loss, as the spiral notebook does;
    train/loss includes it. Metrics reach TensorBoard through the logger at the optimizer step they
    belong to (`self.logger.log_metrics(..., step=global_step)`), fused steps or not.
    """

    def __init__(self, net: nn.Module, optimizer: Callable[..., Optimizer],
                 scheduler: Callable[[Optimizer], LRScheduler] | None = None, l2: float = 0.0,
                 scheduler_interval: str = "epoch", config: dict | None = None):
        super().__init__()
        # Plain values only (numbers, strings, the resolved run config as a dict), so a checkpoint
        # loads with torch.load(weights_only=True); modules and partials are not hyperparameters.
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"])
        self.net, self.make_optimizer, self.make_scheduler = net, optimizer, scheduler
        # Accuracy is correct/total ("micro"). The fit sums are in checkpoints (on_save_checkpoint):
        # a run resumed mid-epoch keeps its partial sums.
        self.sums = {s: EpochSums() for s in ("fit", "val", "test")}
        self.diverged: str | None = None  # why training stopped early, if the loss stopped being finite
        self.fit_metrics: dict[str, float] = {}  # a resumed run's numbers as its checkpoint recorded them
        self.loss: Tensor | None = None  # this step's training loss
        self.finite_loss: Tensor | None = None  # the epoch's latest finite one: train/loss
        self.rng_after_init = torch.get_rng_state()  # the net has drawn its init by now; see setup()
        # train.build sets it: the training loader then serves groups of minibatches, which
        # training_step steps through itself (manual optimization); see nnlab/fused.py.
        self.fused = False
        self.check_every_step: bool | None = None  # fused steps read finiteness every step, or once a group
        self.list_parameters()

    @property
    def automatic_optimization(self) -> bool:
        return not self.fused

    def on_fit_start(self) -> None:
        self.list_parameters()  # again, now on the device
        for sums in self.sums.values():
            sums.to(self.device)
        if self.check_every_step is None:  # reading a flag costs nothing on the CPU; see nnlab/fused.py
            self.check_every_step = self.device.type == "cpu"

    def list_parameters(self) -> None:
        # Listed once: walking the modules for them costs ~10 us a step (a spiral step ~500 us).
        self.params = list(self.parameters())
        # l2's: matrices and conv kernels; not biases or a norm layer's per-channel scale and shift
        self.weights = [p for p in self.net.parameters() if p.ndim >= 2]

    def setup(self, stage: str) -> None:
        # Lightning's DDP re-seeds torch on every rank as its process group starts (reset_seed() in
        # DDPStrategy.setup_distributed), undoing the init's draws, so the shuffled data order would
        # differ from the same run on one device. Put back the state after init: every rank draws
        # the order one device draws (rank r then takes samples r::world of each batch).
        if stage == "fit" and self.trainer.world_size > 1:
            torch.set_rng_state(self.rng_after_init)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def l2_penalty(self) -> Tensor:
        return 0.5 * self.hparams.l2 * sum(w.pow(2).sum() for w in self.weights)

    def step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        """The loss of a batch, added to the stage's epoch sums: Lightning's training steps, every
        validation and test, bench's plain loop. nnlab.steps.step computes the same objective for
        fused steps and populations, the same ops for a run of one (tests/test_train.py: bitwise)."""
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        if stage == "fit" and self.hparams.l2:  # the objective, as the notebook prints it
            loss = loss + self.l2_penalty()
        self.sums[stage].update(loss, logits, y)
        return loss

    def training_step(self, batch: tuple[Tensor, Tensor] | list[tuple[Tensor, Tensor]], batch_idx: int) -> Tensor:
        if self.fused:
            return fused.take_steps(self, batch)
        loss = self.step(batch, "fit")
        self.loss = loss.detach()  # checked with the gradients before the step (below)
        return loss

    def on_before_optimizer_step(self, optimizer: Optimizer) -> None:
        # Before every optimizer step, Lightning's and fused ones alike (the LightningOptimizer's
        # step()); nnlab.steps.step has checked a fused one already.
        if not self.fused:
            self.finite(self.global_step)

    def finite(self, step: int) -> bool:
        """Whether this step's loss and gradients are finite; if not, the gradients are dropped and
        the run stops (nnlab.steps.check_step)."""
        if check_step(self, self.params, step) is None:
            return True
        self.trainer.should_stop = True
        return False

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        # train/loss is logged only where it is read: each self.log call costs ~0.3 ms (more than
        # a spiral step), so not every step but every log_every_n_steps steps (a TensorBoard point,
        # with the learning rate the next step takes) and the epoch's or run's last (callback_metrics:
        # the printed line, metrics.json). Fused, a batch ends a group; the group size divides the
        # log interval, so every logged step ends one.
        trainer, step = self.trainer, self.global_step
        every = trainer.log_every_n_steps
        point = bool(every and step % every == 0 or trainer.should_stop)
        if self.finite_loss is not None and (point or trainer.is_last_batch or step == trainer.max_steps):
            # DDP: the mean of the ranks' shard losses, the global batch's (no-op on one process)
            loss = trainer.strategy.reduce(self.finite_loss, reduce_op="mean")
            self.log("train/loss", loss, logger=False)
            if point:
                for logger in self.loggers:
                    logger.log_metrics({"train/loss": loss.item(), "lr": self.optimizers().param_groups[0]["lr"]}, step)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self.step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self.step(batch, "test")

    def _log_epoch(self, stage: str) -> None:
        # The epoch's means, as TensorBoard points at the step reached (a test: the run's last step)
        name = "train" if stage == "fit" else stage
        loss, acc = self.sums[stage].pop(lambda t: self.trainer.strategy.reduce(t, reduce_op="sum"))
        means = {f"{name}/acc": acc, "train/loss_epoch" if stage == "fit" else f"{name}/loss": loss}
        for key, value in means.items():
            self.log(key, value, logger=False)
        for logger in self.loggers:
            logger.log_metrics({k: v.item() for k, v in means.items()}, self.global_step)

    def on_test_start(self) -> None:
        self.sums["test"].to(self.device)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["epoch_sums"] = self.sums["fit"].state_dict()
        # the run's numbers so far (floats): what a run resumed after its last epoch reports for fit
        checkpoint["fit_metrics"] = {k: v.item() for k, v in self.trainer.callback_metrics.items()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.sums["fit"].load_state_dict(checkpoint["epoch_sums"])
        self.fit_metrics = checkpoint.get("fit_metrics", {})

    def on_train_epoch_start(self) -> None:
        self.finite_loss = None

    def on_train_epoch_end(self) -> None:
        self._log_epoch("fit")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def total_steps(self) -> int:
        """Optimizer steps in the run. Lightning counts batches (after loading the training data to
        count them): fused, a batch is a group of steps."""
        trainer, batches = self.trainer, self.trainer.estimated_stepping_batches
        if not self.fused:
            return batches
        steps = trainer.max_epochs * trainer.datamodule.train_loader.minibatches()
        return steps if trainer.max_steps < 0 else min(steps, trainer.max_steps)

    def configure_optimizers(self):
        optimizer = self.make_optimizer(self.parameters())
        if self.make_scheduler is None:
            return optimizer
        # A per-step schedule (OneCycleLR) is told the run's length; per-epoch ones need nothing.
        step = self.hparams.scheduler_interval == "step"
        scheduler = self.make_scheduler(optimizer, **({"total_steps": self.total_steps()} if step else {}))
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": self.hparams.scheduler_interval}}
