"""A population's parts: its members' stacked parameters, their forward and their data.

Also glibc's malloc, kept from handing back what a step frees. module.py trains the population."""
import ctypes
import itertools
import logging
import sys
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from nnlab.callbacks import Figures
from nnlab.classifier import EpochSums
from nnlab.data.loader import TensorLoader
from nnlab.population.member import Member, restore

log = logging.getLogger("nnlab")
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt(3)'s parameters, from glibc's malloc.h


def keep_freed_memory() -> None:
    """Have glibc's malloc keep what a step frees for the next step. A population's activations are
    MiBs ((members, 300, 100) float32 a hidden layer: 4 MiB for 36 spiral MLPs), above the sizes
    malloc hands back to the kernel as soon as they are freed (mmap'd blocks; the heap's top trimmed
    past 128 KiB), so every step faulted its pages in afresh: on the 2-core VM of docs/population-evidence.md
    spiral_grid's population sweep took 4-6 s of system time, 2 s with these settings (mallopt(3):
    blocks under 32 MiB come from the heap, which keeps up to 256 MiB of freed memory). Elsewhere
    (not glibc) nothing changes."""
    # the process's own symbols: the malloc it allocates with (a name lookup, no ldconfig run)
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None) if sys.platform == "linux" else None
    if mallopt is not None:
        mallopt(M_MMAP_THRESHOLD, 32 << 20)  # where glibc's own sliding threshold stops on 64-bit systems
        mallopt(M_TRIM_THRESHOLD, 256 << 20)


def place(members: list[Member], device: torch.device) -> None:
    """The members' data and Classifiers (weights, epoch sums) on the device they train on, as Lightning
    puts a run's there after its init: a no-op on the CPU. Members sharing data move it once."""
    for m in members:
        m.data.to(device)
        m.module.to(device)
        for sums in m.module.sums.values():
            sums.to(device)
        m.params = dict(m.module.net.named_parameters())


def set_up(members: list[Member], epochs: int, per_epoch: int) -> tuple["Stack", EpochSums]:
    """The members' stack and epoch sums, their optimizers and schedules over it, and a stopped
    member's state restored into its row."""
    sums = EpochSums()  # every member's training sums of the epoch, one row each: (members, 2)
    sums.loss, sums.hits = sums.loss.repeat(len(members), 1), sums.hits.repeat(len(members), 1)
    sums.to(members[0].module.device)
    for slot, m in enumerate(members):
        m.slot, m.sums = slot, sums
    stack = Stack(members)  # before the optimizers: they take the members' views of it
    for m in members:
        m.configure(epochs * per_epoch)
        if m.saved is not None:
            # its run's first batch for first_batch.png, drawn again from its RNG as build left it
            m.first_batch = next(epoch_batches(m))
            restore(m, per_epoch)  # into the stack's rows
        m.epoch_rng = m.rng  # before an epoch's draw of its data order (a stopped member's: its last)
    return stack, sums


def forward_of(template: nn.Module, how: str) -> Callable[[dict, list[Tensor]], list[Tensor]]:
    """The population's forward of the architecture `template` on the stack (its weights go in): one
    vmapped call for all members (vmap), or each member's own forward in turn (loop)."""
    if how == "vmap":
        vmapped = vmap(lambda params, x: functional_call(template, params, (x,)))
        return lambda params, xs: vmapped(params, torch.stack(xs)).unbind(0)

    def forward(params: dict, xs: list[Tensor]) -> list[Tensor]:
        """Each member's own forward in turn, on its rows of the stack and its batch: the same ops as its
        run. The rows are views (unbind), whose backward stacks their gradients."""
        rows = zip(*(t.unbind(0) for t in params.values()))
        return [functional_call(template, dict(zip(params, row)), (x,)) for row, x in zip(rows, xs)]
    return forward


def train_loader(data) -> TensorLoader:
    """A run's training loader as its data module (set up) serves it, not yet drawn from."""
    x, y = data.train_set
    return TensorLoader(x, y, data.batch_size or len(y), shuffle=data.batch_size is not None,
                        repeat=data.train_repeat)


def steps_per_epoch(m: Member) -> int:
    return train_loader(m.data).minibatches()


def epoch_batches(m: Member, skip: int = 0):
    """The member's training batches of one epoch from its `skip`-th on, an iterator in its own data
    order. Each batch is gathered from the shared tensors when the step takes it (MNIST: an epoch's
    batches held at once would be a copy of the 172 MB training set per member). The pass's seed is
    drawn from the member's own RNG as its run draws it, at the first batch: the loader draws nothing
    more from it after that."""
    loader = train_loader(m.data)
    batches = iter(loader)
    with m.own_rng():
        first = next(batches)
    if skip:  # a member continued mid-epoch: the same pass (its seed), from where it stopped
        loader.resume(loader.seed, skip)
        return iter(loader)
    if m.first_batch is None and m.saved is None:  # what Figures prints and draws of a run's first batch
        m.first_batch = first
        m.note(Figures.describe(*first))
    return itertools.chain([first], batches)


class Stack:
    """The population's parameters as one leaf tensor a parameter, (members, *shape): the vectorised
    forward takes them as they are, and the backward leaves one gradient a parameter (where stacking
    the members' own leaves every step cost a stack and an unstack, and a gradient accumulation a
    member and parameter: ~40% of a step). Each member's parameters become views of its row
    (nn.Parameter on the same storage), so its own torch.optim optimizer updates the stack in place,
    and its .grad is a view of its row of `grads`, the gradient copied there every step."""

    def __init__(self, members: list[Member]):
        names, self.size = list(members[0].params), len(members)
        self.device = members[0].module.device
        with torch.no_grad():
            self.leaves = {n: torch.stack([m.params[n] for m in members]).requires_grad_() for n in names}
        self.grads = {n: torch.zeros_like(t) for n, t in self.leaves.items()}
        for i, m in enumerate(members):
            for n in names:
                owner, _, attr = n.rpartition(".")
                view = nn.Parameter(self.leaves[n].detach()[i])
                setattr(m.module.net.get_submodule(owner), attr, view)
            m.module.list_parameters()
            m.params = dict(m.module.net.named_parameters())
            for n, p in m.params.items():
                p.grad = self.grads[n][i]
        # Classifier.l2_penalty's weights (2 or more dimensions a member), in its order
        self.weights = [n for n in names if self.leaves[n].ndim >= 3]

    @torch.no_grad()
    def sgd_step(self, plain: list[tuple[int, float]]) -> None:
        """torch.optim.SGD's step without momentum or weight decay, `p.add_(grad, alpha=-lr)`, for
        these (row, lr) members at once: `p.addcmul_(grad, lr, value=-1)`, the form torch.optim.SGD
        takes for a tensor lr, the same floats on this CPU (tests/test_population.py checks it
        against torch.optim.SGD). One op a parameter, where a step of each member's optimizer cost
        ~25 us a member."""
        rows = torch.tensor([r for r, _ in plain], device=self.device)
        lr = torch.tensor([v for _, v in plain], device=self.device)
        for n, t in self.leaves.items():
            shape = (-1,) + (1,) * (t.ndim - 1)
            if len(plain) == len(t):
                t.addcmul_(self.grads[n], lr.view(shape), value=-1)
            else:
                t.index_copy_(0, rows, t[rows].addcmul(self.grads[n][rows], lr.view(shape), value=-1))

    def zero(self) -> None:
        for t in self.leaves.values():
            t.grad = None

    def params(self, rows: Tensor | None) -> dict[str, Tensor]:
        return self.leaves if rows is None else {n: t[rows] for n, t in self.leaves.items()}

    def squares(self, params: dict[str, Tensor]) -> Tensor:
        """Each member's sum of its squared weights (Classifier.l2_penalty's, in its order): (members,)."""
        return sum(params[n].pow(2).sum(tuple(range(1, params[n].ndim))) for n in self.weights)

    def gradients(self) -> dict[str, Tensor]:
        for n, t in self.leaves.items():
            self.grads[n].copy_(t.grad)  # the members' .grad views see it
        return self.grads
