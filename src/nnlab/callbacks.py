"""Lightning callbacks nnlab's runs use, configured under `callbacks:` in conf/train.yaml."""
import logging
import math
import time
from pathlib import Path

import lightning as L
import matplotlib
import numpy as np
import torch
from torch import Tensor
from torchvision.utils import make_grid

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt

log = logging.getLogger("nnlab")  # to the console and the run's train.log (conf/train.yaml: hydra.job_logging)


def tensorboard(trainer):
    """The TensorBoard writer among the run's loggers, or None: the first batch's text and the figures
    go to TensorBoard alone (the other loggers have numbers; the PNGs sit in the run folder)."""
    from lightning.pytorch.loggers import TensorBoardLogger
    return next((logger.experiment for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)), None)


class EpochLog(L.Callback):
    """One plain line every `every_n_epochs` epochs (and the last), instead of a progress bar:
    readable in a terminal, a log file or CI alike."""

    def __init__(self, every_n_epochs: int = 1):
        self.every_n_epochs = every_n_epochs

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        if not trainer.is_global_zero or epoch % self.every_n_epochs and epoch != trainer.max_epochs:
            return
        m = trainer.callback_metrics
        shown = "  ".join(f"{k} {m[k].item():.4f}" for k in ("train/loss", "val/loss", "val/acc") if k in m)
        log.info(f"epoch {epoch}/{trainer.max_epochs}  step {trainer.global_step}  {shown}  "
                 f"({time.perf_counter() - self.start:.2f} s)")


class Figures(L.Callback):
    """The notebook's pictures, saved as PNG in the run folder and logged to TensorBoard as images:

    first_batch.png  the first training batch as a 4x5 grid titled with labels (image data only);
                     its shape, mean and std are printed and logged as text
    losses.png       train/loss every log_every_n_steps steps and the per-epoch validation loss
                     ("test loss" when the test set is the validation set) against training samples seen
    regions.png      2-D data only: the training points over the learned decision regions

    DDP: only global rank 0 draws, prints and saves; samples seen count the global batch. The curves
    and the count are in checkpoints (state_dict), so a resumed run draws its whole curve, and does
    not draw a mid-run batch as its first.
    """

    def __init__(self, run_dir: str):
        self.run_dir = Path(run_dir)
        self.seen, self.train_curve, self.val_curve = 0, [], []

    def state_dict(self) -> dict:
        return {"seen": self.seen, "train_curve": self.train_curve, "val_curve": self.val_curve}

    def load_state_dict(self, state: dict) -> None:
        self.seen = state["seen"]
        self.train_curve, self.val_curve = [tuple(p) for p in state["train_curve"]], [tuple(p) for p in state["val_curve"]]

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        group = batch if isinstance(batch, list) else [batch]  # fused steps: a group of minibatches
        if self.seen == 0 and trainer.is_global_zero:
            self._first_batch(trainer, *group[0])
        self.seen += sum(len(y) for _, y in group) * trainer.world_size  # DDP: a rank's shard is 1/world
        if trainer.log_every_n_steps and trainer.global_step % trainer.log_every_n_steps == 0:
            # DDP: the mean over the ranks' shards (a collective: every rank takes part)
            loss = trainer.strategy.reduce(outputs["loss"].detach(), reduce_op="mean").item()
            if math.isfinite(loss):  # a NaN/inf loss was not stepped with (the module stops the run)
                self.train_curve.append((self.seen, loss))

    def on_train_epoch_end(self, trainer, module) -> None:
        # The epoch's validation has run by now (the module logged val/loss at its end).
        if "val/loss" in trainer.callback_metrics:
            self.val_curve.append((self.seen, trainer.callback_metrics["val/loss"].item()))

    def on_fit_end(self, trainer, module) -> None:
        if not trainer.is_global_zero:
            return
        val_is_test = getattr(trainer.datamodule, "val_size", None) == 0  # MNIST as the notebook ran it
        fig, ax = plt.subplots(figsize=(8, 5))
        for curve, style, label in ((self.train_curve, "-", "Train loss"),
                                    (self.val_curve, "o-", "Test loss" if val_is_test else "Validation loss")):
            if curve:
                ax.plot(*zip(*curve), style, label=label)
        ax.set(xlabel="Number of stochastic samples", ylabel="Cross-entropy loss")
        ax.legend()
        self._save(trainer, fig, "losses")
        if trainer.datamodule.in_shape == (2,):
            self._regions(trainer, module)

    @staticmethod
    def describe(x: Tensor, y: Tensor) -> str:
        return f"first batch: inputs {tuple(x.shape)}, labels {tuple(y.shape)}, mean={x.mean():.4f}, std={x.std():.4f}"

    def _first_batch(self, trainer, x: Tensor, y: Tensor) -> None:
        stats = self.describe(x, y)
        log.info(stats)
        if board := tensorboard(trainer):
            board.add_text("data/first_batch", stats)
        self.draw_batch(trainer, x, y)

    def draw_batch(self, trainer, x: Tensor, y: Tensor) -> None:
        """first_batch.png, for image data (x: (B, C, H, W)); nothing for other data."""
        if x.ndim != 4:
            return
        x, y = x.cpu(), y.cpu()
        # One image of 4x5 tiles with a label over each: 20 subplots took ~0.9 s to lay out and draw.
        # RGB images in colour; any other channel count as the first channel in grey.
        n, cols, pad, (height, width) = min(20, len(x)), 5, 8, x.shape[-2:]
        shown = x[:n] if x.shape[1] == 3 else x[:n, :1]
        tiles = make_grid(shown.float(), nrow=cols, padding=pad, normalize=True, pad_value=1.0)  # (3, H', W')
        fig, ax = plt.subplots(figsize=(10, 8.5))
        ax.imshow(tiles.permute(1, 2, 0).numpy(), interpolation="none", vmin=0, vmax=1)
        for i in range(n):
            row, col = divmod(i, cols)
            ax.text(col * (width + pad) + pad + width / 2, row * (height + pad) + pad - 1, f"Label: {y[i].item()}",
                    ha="center", va="bottom", fontsize=14)
        ax.set_axis_off()
        self._save(trainer, fig, "first_batch")

    @torch.no_grad()
    def _regions(self, trainer, module) -> None:
        x, y = (t.cpu().numpy() for t in trainer.datamodule.train_set)
        (x0, y0), (x1, y1) = x.min(0).tolist(), x.max(0).tolist()
        margin = 0.05 * max(x1 - x0, y1 - y0)  # the points' own extent, and a little more
        extent = (x0 - margin, x1 + margin, y0 - margin, y1 + margin)
        gx, gy = torch.meshgrid(torch.linspace(*extent[:2], 300), torch.linspace(*extent[2:], 300), indexing="xy")
        training = module.training
        module.eval()  # a batch norm: its running statistics, not the grid's, and none updated
        pred = module(torch.stack([gx.ravel(), gy.ravel()], 1).to(module.device)).argmax(1).cpu()
        module.train(training)
        fig, ax = plt.subplots(figsize=(6, 6))
        # The predicted class per grid pixel, flat colours (an image: contourf took ~0.4 s to draw)
        ax.imshow(pred.reshape(gx.shape).numpy(), origin="lower", extent=extent, alpha=0.3,
                  cmap="Spectral", vmin=0, vmax=y.max(), interpolation="nearest")
        ax.scatter(x[:, 0], x[:, 1], c=y, s=40, cmap="Spectral", edgecolors="k")
        ax.set(xlim=extent[:2], ylim=extent[2:], aspect="equal")
        self._save(trainer, fig, "regions")

    def _save(self, trainer, fig, name: str) -> None:
        # Drawn once, at 80 dpi, for the PNG and TensorBoard alike: savefig and add_figure would draw
        # it twice (0.55 s against 0.25 s for first_batch.png here).
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fig.tight_layout()
        fig.set_dpi(80)
        fig.canvas.draw()
        rgba = np.asarray(fig.canvas.buffer_rgba())  # (H, W, 4) uint8
        plt.imsave(self.run_dir / f"{name}.png", rgba)
        if board := tensorboard(trainer):
            board.add_image(f"figures/{name}", rgba[..., :3], trainer.global_step, dataformats="HWC")
        plt.close(fig)


class Pruning(L.Callback):
    """In a study's trial (nnlab/search.py): report `metric` to the Optuna trial after every epoch's
    validation, and stop the run there when the study's pruner says so. The run then ends as any
    other (test, figures, checkpoint, TensorBoard) and train() records status pruned at that epoch."""

    def __init__(self, trial, metric: str):
        self.trial, self.metric, self.pruned_epoch = trial, metric, None

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.metric not in trainer.callback_metrics:
            return
        epoch = trainer.current_epoch + 1  # the rung: epochs trained so far
        prune = trainer.is_global_zero and self.judge(trainer.callback_metrics, epoch, trainer.max_epochs)
        if trainer.strategy.broadcast(prune, src=0):  # DDP: every rank stops after the same epoch
            self.pruned_epoch = epoch
            trainer.should_stop = True

    def judge(self, metrics: dict, epoch: int, epochs: int) -> bool:
        """Report this epoch's `metrics` (tensors) to the trial; whether the pruner stops it here (never
        after its last epoch), noted as its pruned_epoch. A population's members are judged so too."""
        value = metrics[self.metric].item()
        if self.metric == "val/acc" and "val/loss" in metrics:
            # Ties broken by val/loss: accuracy comes in steps of 1/(validation examples), and on the
            # spiral (300 points) many trials tie at 0.9933 by epoch 4, where successive halving would
            # promote every trial that ties its cut. loss/(1+loss) < 1, so the shift is below 1e-6,
            # under a step of accuracy for up to 10^6 validation examples: it only orders equal ones.
            loss = metrics["val/loss"].item()
            value -= 1e-6 * loss / (1 + loss) if math.isfinite(loss) else 1e-6
        self.trial.report(value, epoch)
        if epoch < epochs and self.trial.should_prune():
            self.pruned_epoch = epoch
            return True
        return False
