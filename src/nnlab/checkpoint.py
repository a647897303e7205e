"""Checkpoints a run can resume from exactly.

They are written atomically, loaded weights-only, hold the RNG states, and are taken at a clean step
boundary when the run is told to stop.

Resuming `resume=<run folder>` from such a checkpoint ends with bitwise the weights and metrics of
the run never interrupted (same machine), which Lightning alone does not give: its checkpoints hold
no RNG state, and Ctrl-C lands wherever the step happens to be.
"""
import contextlib
import random
import signal
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

from nnlab.errors import NnlabError
from nnlab.runs import FINISHED, INTERRUPTED, PRUNED, run_status, set_aside, write_atomic


class UnreadableCheckpoint(NnlabError):
    """A file that does not load as a checkpoint; the message names it and why."""


def read_checkpoint(path: Path) -> dict:
    """torch.load(weights_only=True) of a file that may come from elsewhere, as a dict; UnreadableCheckpoint
    naming it where it does not load. The one broad catch of a checkpoint's reading: a truncated, empty
    or garbage file makes torch's zip reader and the unpickler raise anything (EOFError, IndexError,
    AssertionError, UnpicklingError for a refused global...), and the file, named, is the fault."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        why = str(e).split(". ")[0].splitlines()[0] if str(e).strip() else type(e).__name__
        raise UnreadableCheckpoint(f"{path} is not a readable checkpoint ({why})") from None
    if not isinstance(ckpt, dict):
        raise UnreadableCheckpoint(f"{path} is not a readable checkpoint (a {type(ckpt).__name__}, not a dict)")
    return ckpt


class CheckpointWriteError(NnlabError, OSError):
    """A checkpoint could not be written; the previous one at that path is untouched."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save through nnlab.runs.write_atomic: a full disk or a kill mid-write leaves the previous
    checkpoint whole.
    (Lightning's default writes in place; staged through $TMPDIR on another filesystem, a full disk
    left last.ckpt truncated.) Loading is always torch.load(weights_only=True)."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        try:
            write_atomic(Path(path), lambda f: torch.save(checkpoint, f))
        except OSError as e:
            raise CheckpointWriteError(f"could not write checkpoint {path}: {e.strerror or e}; the previous "
                                       "checkpoint there is kept. Free disk space and resume the run") from e

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        return torch.load(path, map_location=map_location or "cpu", weights_only=True)


def checkpoint_problem(path: Path, member: bool = False) -> str | None:
    """Why `path` cannot be resumed from (one line naming it), or None when it loads whole: a Lightning
    training checkpoint, or with `member`, a population member's taken where it stopped too."""
    try:
        ckpt = read_checkpoint(path)
    except UnreadableCheckpoint as e:
        return str(e)
    missing = [k for k in ("state_dict", "loops", "optimizer_states", "global_step") if k not in ckpt]
    if "population" in ckpt:  # nnlab.population's, of a member stopped with its population
        if not member:
            return f"{path} is a population member's, which Lightning does not resume"
        if isinstance(ckpt["population"], dict) and ckpt["population"].get("pbt") is not None:  # it copies others
            return (f"{path} is a PBT member's: it copies others as it trains and cannot go on alone (make sweep "
                    f"RESUME={path.parents[2]} continues its population)")
        return None
    if missing:
        return f"{path} is not a Lightning training checkpoint (no {', '.join(missing)})"
    if not isinstance(ckpt["state_dict"], dict) or any(str(k).startswith("sums.") for k in ckpt["state_dict"]):  # nnlab versions with the sums as buffers
        return (f"{path} holds the epoch sums in its state_dict (sums.*), as older nnlab versions wrote them, "
                "and cannot resume: train the run again (make evaluate still scores the checkpoint)")
    return None


def resumable(run_dir: Path, go_on: bool = False) -> tuple[str | None, str | None]:
    """A sweep job whose folder has been used before (RESUME=): (its status, the checkpoint it resumes
    from), or (None, None) for a fresh start. Finished runs are skipped by the caller; an interrupted run continues from its last.ckpt
    (a step boundary, so exactly), and so does a pruned one if `go_on` (a study runs its pruned leader
    on to the end; one trained in a population, whose last.ckpt Lightning cannot continue, trains
    again from its start); anything else starts over, its old outputs set aside in attempt-<n>/."""
    status, ckpt = run_status(run_dir), run_dir / "checkpoints" / "last.ckpt"
    usable = lambda: ckpt.exists() and checkpoint_problem(ckpt) is None  # noqa: E731 (read only when needed)
    if status in FINISHED and not (status == PRUNED and go_on):
        return status, None
    if status == PRUNED and usable():
        return status, str(ckpt)
    if status == INTERRUPTED and usable():
        return status, str(ckpt)
    set_aside(run_dir)
    return None, None  # a fresh start


def is_member(path: Path) -> bool:
    """Whether `path` (a checkpoint that loads) is a population member's, taken where it stopped."""
    return "population" in read_checkpoint(path)


class RNGState(L.Callback):
    """Python's, NumPy's and torch's (CPU and CUDA) RNG states in the checkpoint, as tensors and ints
    so that it still loads with weights_only=True (a raw NumPy state would not)."""

    def state_dict(self) -> dict:
        version, mt, gauss = random.getstate()
        _, keys, pos, has_gauss, cached = np.random.get_state()
        return {"python": [version, torch.tensor(mt, dtype=torch.int64), gauss],
                "numpy": [torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}

    def load_state_dict(self, state: dict) -> None:
        version, mt, gauss = state["python"]
        random.setstate((version, tuple(mt.tolist()), gauss))
        keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, cached))
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


class Interrupt(L.Callback):
    """SIGTERM or Ctrl-C during fit: stop at the next step boundary and save `dirpath`/last.ckpt there.

    Lightning already turns SIGTERM into a flag its loops check after each step (then raising its
    SIGTERMException); Ctrl-C would instead raise KeyboardInterrupt wherever it lands, and a checkpoint
    taken mid-step cannot resume exactly, so SIGINT is passed on as SIGTERM. A second Ctrl-C stops at once.
    The run then records status `interrupted` and exits non-zero (Lightning alone exits 0 on SIGTERM).
    """

    def __init__(self, dirpath: str):
        self.path = Path(dirpath) / "last.ckpt"
        self.previous = None

    def on_fit_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        def stop(signum, frame):
            if trainer.received_sigterm or not callable(signal.getsignal(signal.SIGTERM)):
                raise KeyboardInterrupt
            signal.raise_signal(signal.SIGTERM)  # Lightning's own handler sets the flag its loops check
        try:
            self.previous = signal.signal(signal.SIGINT, stop)
        except ValueError:  # not the main thread: leave signals alone
            self.previous = None

    def on_fit_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            self.previous = None

    def on_exception(self, trainer: L.Trainer, module: L.LightningModule, exception: BaseException) -> None:
        self.on_fit_end(trainer, module)
        if isinstance(exception, SIGTERMException) and trainer.state.fn == "fit":
            trainer.save_checkpoint(self.path, weights_only=False)  # full state at a step boundary: resumes exactly


@contextlib.contextmanager
def stops_outside_fit(trainer: L.Trainer):
    """SIGTERM and Ctrl-C stop a run wherever they land, not only in fit's steps: within the block a
    signal outside fit (setting up, the figures after fit, the test pass) raises KeyboardInterrupt, so
    the run records `interrupted` and names its resume command (the test pass and figures have nothing
    to save: a resumed run does them again). In fit, Lightning's own handler runs instead (calling this
    one after it, which then does nothing) and the Interrupt callback stops at a step boundary. A signal
    Lightning took without stopping (its last step done) is a stop as fit or test returns."""
    def stop(signum, frame):
        if signal.getsignal(signum) is stop:  # not while Lightning's handler holds the signal
            raise KeyboardInterrupt

    previous = {}
    try:
        for s in (signal.SIGTERM, signal.SIGINT):
            previous[s] = signal.signal(s, stop)
    except ValueError:  # not the main thread: leave signals alone
        pass
    try:
        yield
        if trainer.received_sigterm:
            raise KeyboardInterrupt
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
