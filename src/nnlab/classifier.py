"""The one LightningModule: wraps any nnlab model with loss, metrics, optimizer and LR schedule."""
import warnings
from collections.abc import Callable

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

# DDP: the per-epoch values logged below come from torchmetrics' compute(), which already gathers
# every rank's counts; Lightning's advice to add sync_dist=True for them does not apply.
warnings.filterwarnings("ignore", ".*when logging on epoch level in distributed setting.*")


class Classifier(L.LightningModule):
    """Cross-entropy classifier around a plain `net` returning logits (B, num_classes).

    `optimizer` and `scheduler` are partials (Hydra `_partial_: true`) completed here with the
    parameters and the optimizer. `l2` adds 0.5 * l2 * sum(W**2) over the weight tensors (not
    biases) to the training loss, as the spiral notebook does; train/loss includes it.
    """

    def __init__(self, net: nn.Module, num_classes: int, optimizer: Callable[..., Optimizer],
                 scheduler: Callable[[Optimizer], LRScheduler] | None = None, l2: float = 0.0,
                 scheduler_interval: str = "epoch", config: dict | None = None):
        super().__init__()
        # Plain values only (numbers, strings, the resolved run config as a dict), so a checkpoint
        # loads with torch.load(weights_only=True); modules and partials are not hyperparameters.
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"])
        self.net, self.make_optimizer, self.make_scheduler = net, optimizer, scheduler
        # Per stage, accumulated over its epoch and logged once at its end: exact means over every
        # sample (averaging per-batch values would weight a short last batch like a full one).
        # Accuracy is correct/total ("micro"), not torchmetrics' default class-averaged "macro".
        stages = ("fit", "val", "test")
        self.acc = nn.ModuleDict({s: MulticlassAccuracy(num_classes, average="micro", validate_args=False)
                                  for s in stages})
        self.mean_loss = nn.ModuleDict({s: MeanMetric() for s in stages})
        for metric in (self.acc["fit"], self.mean_loss["fit"]):
            metric.persistent(True)  # in checkpoints: a run resumed mid-epoch keeps its partial sums
        self.diverged: str | None = None  # why training stopped early, if the loss stopped being finite
        self.rng_after_init = torch.get_rng_state()  # the net has drawn its init by now; see setup()

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
        return 0.5 * self.hparams.l2 * sum(p.pow(2).sum() for n, p in self.net.named_parameters()
                                           if not n.endswith("bias"))

    def _step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        if stage == "fit" and self.hparams.l2:  # the objective, as the notebook prints it
            loss = loss + self.l2_penalty()
        self.acc[stage].update(logits, y)
        self.mean_loss[stage].update(loss.detach(), len(y))
        return loss

    def _log_epoch(self, stage: str) -> None:
        name = "train" if stage == "fit" else stage
        for metric, key in ((self.acc[stage], f"{name}/acc"),
                            (self.mean_loss[stage], "train/loss_epoch" if stage == "fit" else f"{name}/loss")):
            self.log(key, metric.compute())
            metric.reset()

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor | None:
        loss = self._step(batch, "fit")
        if not torch.isfinite(loss):
            # Stop before optimizer.step(): a NaN/inf step would silently poison every weight.
            self.diverged = f"train/loss was {loss.item()} at step {self.global_step}"
            self.trainer.should_stop = True
            return None
        # Per step, written every trainer.log_every_n_steps. DDP: the mean of the ranks' shard losses,
        # i.e. the global batch's loss (equal shards); without DDP sync_dist does nothing.
        self.log("train/loss", loss, sync_dist=True)
        return loss

    def on_before_optimizer_step(self, optimizer: Optimizer) -> None:
        # A finite loss can still give inf gradients (overflow): drop them, so the step leaves the
        # weights as they were and the last checkpoint never holds NaN weights.
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        if grads and not torch.isfinite(torch.stack([g.abs().max() for g in grads])).all():
            self.diverged = f"a gradient was not finite at step {self.global_step}"
            self.trainer.should_stop = True
            optimizer.zero_grad(set_to_none=True)  # optimizers skip parameters without a gradient

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def on_train_epoch_end(self) -> None:
        self._log_epoch("fit")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def configure_optimizers(self):
        optimizer = self.make_optimizer(self.parameters())
        if self.make_scheduler is None:
            return optimizer
        # A per-step schedule (OneCycleLR) is told the run's length; per-epoch ones need nothing.
        step = self.hparams.scheduler_interval == "step"
        scheduler = self.make_scheduler(optimizer, **({"total_steps": self.trainer.estimated_stepping_batches}
                                                      if step else {}))
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": self.hparams.scheduler_interval}}
