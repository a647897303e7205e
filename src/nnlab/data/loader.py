"""Minibatches sliced from tensors in memory, and the DataModule base that serves them to Lightning."""
import math
from collections.abc import Iterator

import lightning as L
import torch
from torch import Tensor

from nnlab import compat


class TensorLoader:
    """Minibatches sliced from tensors held in memory: one indexing op per batch, where a
    DataLoader fetches batch_size samples one by one and collates them (the notebook's
    ToTensor loader costs ~19 us per image).

    shuffle draws each iteration's seed from torch's global RNG exactly as DataLoader(shuffle=True)
    does, so `seed` fixes the order and it is the order such a DataLoader gives. `repeat` passes make
    one iteration (full-batch spiral: the same batch, steps_per_epoch times). With `world` > 1 (DDP)
    rank `rank` gets every world-th sample of each global batch. `group`=k yields lists of k
    consecutive minibatches (for the module to step through, see nnlab/fused.py) instead of single
    ones. `resume(seed, skip)` makes the next iteration replay the pass drawn with `seed` from item
    `skip` on: how a run resumes mid-epoch.
    """

    def __init__(self, x: Tensor, y: Tensor, batch_size: int, shuffle: bool = False, repeat: int = 1,
                 rank: int = 0, world: int = 1, group: int | None = None):
        self.x, self.y, self.batch_size, self.shuffle, self.repeat = x, y, batch_size, shuffle, repeat
        self.rank, self.world, self.group = rank, world, group
        self.seed: int | None = None  # of the pass being iterated
        self._resume: tuple[int | None, int] | None = None

    def __len__(self) -> int:
        return math.ceil(self.minibatches() / (self.group or 1))

    def minibatches(self) -> int:
        return self.repeat * math.ceil(len(self.y) / self.batch_size)

    def resume(self, seed: int | None, skip: int) -> None:
        self._resume = seed, skip

    def __iter__(self) -> Iterator:
        if self.group is None:
            yield from self._minibatches()
            return
        group = []
        for xy in self._minibatches():
            group.append(xy)
            if len(group) == self.group:
                yield group
                group = []
        if group:
            yield group

    def _minibatches(self) -> Iterator[tuple[Tensor, Tensor]]:
        n, per_pass = len(self.y), math.ceil(len(self.y) / self.batch_size)
        if self._resume is not None:
            (self.seed, skip), self._resume = self._resume, None
        else:
            skip = 0
            draw = lambda: int(torch.empty((), dtype=torch.int64).random_().item())  # noqa: E731
            draw()  # as a DataLoader draws its workers' base seed: runs recorded with one replay exactly
            self.seed = draw() if self.shuffle else None
        skip *= self.group or 1
        generator = torch.Generator().manual_seed(self.seed) if self.shuffle else None
        order = None
        for i in range(self.minibatches()):
            if generator is not None and i % per_pass == 0:  # a fresh permutation every pass
                order = torch.randperm(n, generator=generator).to(self.x.device)
            if i < skip:
                continue
            start = (i % per_pass) * self.batch_size
            if order is None:  # in order: slices are views, nothing is copied
                x, y = self.x[start:start + self.batch_size], self.y[start:start + self.batch_size]
                yield x[self.rank::self.world], y[self.rank::self.world]
            else:
                idx = order[start:start + self.batch_size][self.rank::self.world]
                yield self.x[idx], self.y[idx]


Split = tuple[Tensor, Tensor]  # (inputs, labels)


class TensorDataModule(L.LightningDataModule):
    """What MNIST and the spiral share once their tensors are in memory: subclasses return the
    train, val and test sets ((x, y) pairs) from load(). setup() reads them once and holds them on
    the device the model runs on (the GPU, when there is one): a batch is then one indexing op on
    tensors already there, with no host-to-device copy a step (MNIST: 220 MB). The training loader's
    position is saved in checkpoints (state_dict), so a run resumed mid-epoch sees exactly the
    batches it missed."""

    batch_size: int | None = None  # None: the whole training set is one batch
    eval_batch_size: int = 1000
    train_repeat: int = 1  # full batch: gradient steps on it per epoch
    fused: bool = False  # the module steps through groups of minibatches itself (train.build sets it)

    def load(self) -> tuple[Split, Split, Split]:
        raise NotImplementedError

    def describe(self) -> str:
        """What `python -m nnlab.data` prints once prepare_data has run."""
        return "nothing to fetch: this data is generated"

    def setup(self, stage: str | None = None) -> None:
        if not hasattr(self, "train_set"):  # read once: Lightning calls setup for fit, then again for test
            self.train_set, self.val_set, self.test_set = self.load()
        self.to(self.trainer.strategy.root_device if self.trainer else torch.device("cpu"))

    def to(self, device: torch.device) -> None:
        """Move the sets to `device` (each rank's own GPU under DDP); a no-op where they are."""
        self.train_set, self.val_set, self.test_set = (
            (x.to(device), y.to(device)) for x, y in (self.train_set, self.val_set, self.test_set))

    def _loader(self, xy: Split, batch_size: int | None, **kw) -> TensorLoader:
        trainer = self.trainer  # DDP: each rank takes its share of every batch
        rank, world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        return TensorLoader(*xy, batch_size or len(xy[1]), rank=rank, world=world, **kw)

    def train_dataloader(self) -> TensorLoader:
        self.train_loader = self._loader(self.train_set, self.batch_size, shuffle=self.batch_size is not None,
                                         repeat=self.train_repeat)
        if self.fused:  # groups of k steps, k = gcd(steps an epoch, log interval): every log point and
            # epoch end is a group's end, and Lightning's ~1 ms of per-batch work is paid once per k steps
            steps = self.train_loader.minibatches()
            self.train_loader.group = math.gcd(steps, self.trainer.log_every_n_steps or steps)
        if self._resume_at is not None and self._resume_at[1] < len(self.train_loader):  # else: at epoch end
            self.train_loader.resume(*self._resume_at)
        self._resume_at = None
        return self.train_loader

    def transfer_batch_to_device(self, batch, device: torch.device, dataloader_idx: int):
        # Every batch is sliced from tensors already on the device (setup). Fused, a batch is a group of
        # k minibatches, and Lightning's walk over its 2k tensors to move them cost ~20 us a step.
        return batch if self.fused else super().transfer_batch_to_device(batch, device, dataloader_idx)

    def val_dataloader(self) -> TensorLoader:
        return self._loader(self.val_set, self.eval_batch_size)

    def test_dataloader(self) -> TensorLoader:
        return self._loader(self.test_set, self.eval_batch_size)

    _resume_at: tuple[int | None, int] | None = None

    def state_dict(self) -> dict:
        loader = getattr(self, "train_loader", None)
        if loader is None or self.trainer is None:
            return {}
        return {"seed": loader.seed, "batches_done": compat.batches_done(self.trainer)}

    def load_state_dict(self, state: dict) -> None:
        if state:
            self._resume_at = state["seed"], state["batches_done"]
