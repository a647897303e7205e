"""The one training step nnlab takes itself, for many runs at once or for one.

It is a population's step (nnlab/population/module.py) and a fused run's (nnlab/fused.py, one run as a
population of one). Lightning's automatic optimization (fused=false, or a run fusable() does not
admit) is the only other way nnlab steps.

A step of each member: its forward (the members' vectorised, each member's in turn, or a run's own:
the caller's `forward`), its loss (cross-entropy plus its own L2: the objective Classifier.step
computes), one backward for all, its epoch sums, the finiteness check of its loss and gradients, its
optimizer's step and a per-step LR schedule's. A member is anything with these attributes:

    slot            its row in the stack's tensors and in `sums`
    module          its Classifier: hparams.l2, hparams.scheduler_interval, l2_penalty(), params
                    (its parameters; their .grad its gradients once the stack has them)
    optimizer, scheduler, scheduled, plain_sgd
                    its torch.optim optimizer (a run's: the LightningOptimizer, which counts the
                    step), LR schedule or None, whether that has stepped (schedule), and whether its
                    step is plain SGD's, taken for all such members at once by stack.sgd_step
    loss, finite_loss, diverged, step
                    this step's loss, the epoch's latest finite one, why it stopped (or None), and
                    its count of steps taken

and the stack: size (members), zero() (gradients to None), params(rows) (for the forward: rows None
for every member, else a tensor of slots), squares(params) (each member's sum of its squared weight
matrices and kernels, what L2 adds: (members,)), gradients() ({name: gradient} after the backward,
where the members' .grad see them) and sgd_step([(row, lr)]).
"""
import functools
import re
import warnings
from collections.abc import Callable, Collection, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor


def all_finite(*tensors: Tensor) -> Tensor:
    """Whether every element of these (a step's loss and gradients; a population's losses and stacked
    gradients) is finite: one bool on the device, not yet read."""
    return torch.cat([t.flatten() for t in tensors]).isfinite().all()


def grads(params: Iterable[Tensor]) -> list[Tensor]:
    return [p.grad for p in params if p.grad is not None]


def divergence(loss: Tensor, params: Collection[Tensor], step: int) -> str | None:
    """Why a training step must not be taken, or None when its loss and gradients are all finite.
    A NaN/inf loss, or inf gradients from a finite one (overflow), would silently poison every
    weight: here the gradients are then dropped (set to None; optimizers skip a parameter without
    one), so the step leaves the weights as they were (the last checkpoint never holds NaN weights),
    and the caller stops the run. One host read a step decides both."""
    if all_finite(loss, *grads(params)):
        return None
    for p in params:
        p.grad = None
    if loss.isfinite():
        return f"a gradient was not finite at step {step}"
    return f"train/loss was {loss.item()} at step {step}"


def check_step(run, params: Collection[Tensor], step: int) -> str | None:
    """A run's step checked (`divergence`): its loss becomes its finite_loss (the epoch's train/loss)
    unless the loss itself is not finite, and why it diverged, if it did, its `diverged`. Returns
    that reason, or None. Lightning's steps (Classifier.finite) and this module's are checked so."""
    why = divergence(run.loss, params, step)
    if why is None or run.loss.isfinite():
        run.finite_loss = run.loss
    if why is not None:
        run.diverged = why
    return why


def step(members: list, batches: list[tuple[Tensor, Tensor]], forward: Callable, stack, sums,
         check: bool = True) -> Tensor:
    """One training step of each member on its (x, y) batch: one forward (`forward(params, xs)` ->
    each member's logits (B, classes), a (members, B, classes) tensor's rows or a list), per-member
    losses, one backward. Returns whether every loss and gradient was finite (a bool on the device).
    `check`: read that once and, where something was not, check member by member (a diverged
    member's gradients are dropped, and it stops after this step); without it (on a GPU: fused steps,
    nnlab/fused.py, and populations, once_a_group in nnlab/population/module.py) nothing is read and no
    member is checked."""
    rows = None if len(members) == stack.size else torch.tensor([m.slot for m in members])
    stack.zero()
    params = stack.params(rows)
    logits = forward(params, [x for x, _ in batches])
    losses = rows_of([F.cross_entropy(out, y) for out, (_, y) in zip(logits, batches)])
    l2 = tuple(m.module.hparams.l2 for m in members)
    if all(l2):  # Classifier.step's objective: + 0.5 * l2 * sum(W**2), each member's own sums
        losses = losses + halves(l2, losses.device) * stack.squares(params)
    elif any(l2):
        losses = losses + torch.stack([m.module.l2_penalty() if m.module.hparams.l2 else losses.new_zeros(())
                                       for m in members])
    losses.backward(torch.ones_like(losses))  # each member's loss gradient 1: its own gradients
    gradients = stack.gradients()
    # The epoch sums of EpochSums.update, every member's row at once (the same float32 additions)
    loss, y = losses.detach(), rows_of([y for _, y in batches])  # (members,), (members, B)
    correct = (rows_of([out.detach() for out in logits]).argmax(-1) == y).sum(-1)
    weighted = loss * y.shape[1]
    add = [torch.where(loss.isnan()[:, None], 0.0, torch.stack((weighted, torch.full_like(weighted, y.shape[1])), 1)),
           torch.stack((correct, torch.full_like(correct, y.shape[1])), 1)]
    for total, value in zip((sums.loss, sums.hits), add):
        total.add_(value) if rows is None else total.index_add_(0, rows.to(total.device), value)
    finite = all_finite(loss, *gradients.values())
    everything = not check or bool(finite)  # the one host read, when checked
    plain = []  # (row, lr) of the members whose step is plain SGD's (stack.sgd_step)
    for m, value in zip(members, loss.unbind(0)):
        m.loss = value
        if not everything:  # checked, and something was not finite: member by member
            check_step(m, m.module.params, m.step)
        elif check:
            m.finite_loss = m.loss
        if m.plain_sgd and not m.diverged:
            plain.append((m.slot, m.optimizer.param_groups[0]["lr"]))  # the lr of this step
        elif not m.plain_sgd:
            m.optimizer.step()  # a diverged member's too, as Lightning's loop: its gradients were dropped
        m.step += 1
        if m.scheduler is not None and m.module.hparams.scheduler_interval == "step":
            schedule(m)  # after every step, a diverged one too, as Lightning's loop
    if plain:
        stack.sgd_step(plain)
    return finite


def rows_of(tensors: list[Tensor]) -> Tensor:
    """torch.stack of the members' tensors; one member's as a view (a population of one: a run)."""
    return tensors[0][None] if len(tensors) == 1 else torch.stack(tensors)


@functools.lru_cache(maxsize=64)
def halves(l2: tuple[float, ...], device: torch.device) -> Tensor:
    """0.5 * l2 of each member, as a tensor made once (PBT may change an l2: a new tuple, a new tensor)."""
    return torch.tensor([0.5 * v for v in l2], device=device)


def schedule(m) -> None:
    """The member's LR schedule's step. A plain SGD member's optimizer never steps (stack.sgd_step
    does), so torch's warning that the schedule stepped before its optimizer is not for it; torch
    checks for it at a schedule's first step only, so only that one is taken with it silenced (a
    per-step schedule's other steps stay off warnings' machinery)."""
    if not m.plain_sgd or m.scheduled:
        m.scheduler.step()
        return
    m.scheduled = True
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", re.escape("Detected call of `lr_scheduler.step()` before"), UserWarning)
        m.scheduler.step()
