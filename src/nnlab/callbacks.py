"""Lightning callbacks nnlab's runs use, configured under `callbacks:` in conf/train.yaml."""
import time

import lightning as L


class EpochLog(L.Callback):
    """One plain line every `every_n_epochs` epochs (and the last), instead of a progress bar:
    readable in a terminal, a log file or CI alike. For full-batch runs an epoch is one step."""

    def __init__(self, every_n_epochs: int = 1):
        self.every_n_epochs = every_n_epochs

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        if epoch % self.every_n_epochs and epoch != trainer.max_epochs:
            return
        m = trainer.callback_metrics
        shown = "  ".join(f"{k} {m[k].item():.4f}" for k in ("train/loss", "val/loss", "val/acc") if k in m)
        print(f"epoch {epoch}/{trainer.max_epochs}  step {trainer.global_step}  {shown}  "
              f"({time.perf_counter() - self.start:.1f} s)", flush=True)
