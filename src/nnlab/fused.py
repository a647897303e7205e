"""Fused steps: many optimizer steps inside one Lightning batch, each the population's step.

Lightning's loop costs ~1 ms a batch here (every callback's hooks, progress, the logger connector,
automatic optimization's closure), more than a whole spiral step (~0.5 ms). Where no Lightning
feature acts per optimizer step (train.fusable), the training loader serves groups of k minibatches
(k divides both the steps an epoch and log_interval: every logged step and epoch end is a group's
end) and the Classifier takes the k steps here (manual optimization). Each is nnlab.steps.step, the
step a population takes, with the run as a population of one (Solo): zero grads, forward, loss,
backward, epoch sums, finiteness check, optimizer step, a per-step LR schedule's step, exactly what
automatic optimization does (tests/test_train.py: bitwise Lightning's own steps). So nnlab steps in
two ways: Lightning's automatic optimization, and that step (in Lightning's loop, here and in the
population's LightningModule, nnlab/population/module.py). The optimizer is the
LightningOptimizer, whose step() Lightning counts in global_step (and where the module's hook checks
nothing more): logs, checkpoints, max_steps and a mid-epoch resume see every step.

The finiteness check reads a flag on the host. On the CPU that is free and done every step; on a
GPU it would make the host wait for the GPU's queue every step, so there the flag stays on the
device and is read once a group: the group's state is saved first, and a group that went
non-finite is put back and taken again, checked every step, to stop where a CPU run stops. Nothing
is logged within a group (the module logs at group ends), so nothing written has to be taken back.
"""
import copy
from types import SimpleNamespace

import torch
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from nnlab import compat, steps


class Solo:
    """The run as the one member of a population, and its own stack, for nnlab.steps.step: its
    parameters are the module's own (no stacked copy: the forward is the module's own, so compile,
    channels_last and batch norm's buffers act as in Lightning's loop), its optimizer the
    LightningOptimizer (whose step() Lightning counts in global_step), its loss, finite loss and
    divergence the module's. Its losses and epoch sums are rows of one."""

    slot, size, plain_sgd, scheduled = 0, 1, False, True

    def __init__(self, module, optimizer, scheduler: LRScheduler | None):
        self.module, self.optimizer, self.scheduler = module, optimizer, scheduler
        self.step = module.global_step  # the step the next one is (divergence's message)
        self.named = dict(module.net.named_parameters())
        fit = module.sums["fit"]  # the module's epoch sums, as a row of one (views: added to in place)
        self.sums = SimpleNamespace(loss=fit.loss[None], hits=fit.hits[None])
        # the module's, held here within a group and put back at its end (done): setting an attribute
        # of an nn.Module checks it against its parameters, buffers and submodules (~4 us, 3 a step)
        self.loss, self.finite_loss, self.diverged = module.loss, module.finite_loss, module.diverged

    def done(self) -> None:
        self.module.loss, self.module.finite_loss, self.module.diverged = self.loss, self.finite_loss, self.diverged

    def forward(self, params: dict[str, Tensor], xs: list[Tensor]) -> list[Tensor]:
        return [self.module(xs[0])]  # with its own parameters

    def zero(self) -> None:
        for p in self.module.params:
            p.grad = None  # optimizer.zero_grad(set_to_none=True)

    def params(self, rows: Tensor | None) -> dict[str, Tensor]:
        return self.named

    def squares(self, params: dict[str, Tensor]) -> Tensor:
        return sum(w.pow(2).sum() for w in self.module.weights)  # as Classifier.l2_penalty sums them

    def gradients(self) -> dict[str, Tensor]:
        return {n: p.grad for n, p in self.named.items() if p.grad is not None}


def take_steps(module, group: list[tuple[Tensor, Tensor]]) -> Tensor:
    """A step on each (x, y) minibatch of the group; returns the last step's loss."""
    trainer, optimizer, scheduler = module.trainer, module.optimizers(), module.lr_schedulers()
    n = len(group) if trainer.max_steps < 0 else min(len(group), trainer.max_steps - module.global_step)
    per_step = scheduler is not None and module.hparams.scheduler_interval == "step"  # onecycle
    saved = None if module.check_every_step else save(module, optimizer.optimizer, scheduler)
    run = Solo(module, optimizer, scheduler)
    # once a group: the group's finiteness flag, on the device (every step checked: none)
    finite = None if saved is None else torch.ones((), dtype=torch.bool, device=module.device)
    # The step() of the LightningOptimizer runs every callback's on_before_optimizer_step, a no-op
    # for each callback fusable() admits (nnlab's own and ModelCheckpoint: none defines it), at
    # ~25 us each here, more than a fifth of a spiral step with five of them. The trainer's public
    # callback list is set aside for the group's steps and put back before anything else runs.
    callbacks, trainer.callbacks = trainer.callbacks, []
    try:
        for batch in group[:n]:
            # Plain autograd: fusable() admits no precision plugin or strategy that acts on the
            # backward (manual_backward would only add Lightning's per-step hook calls). The optimizer's
            # step is counted; a non-finite step's gradients were dropped, as in automatic optimization.
            flag = steps.step([run], [batch], run.forward, run, run.sums, check=finite is None)
            if finite is not None:
                finite &= flag
            if run.diverged:
                trainer.should_stop = True
                break
    finally:
        trainer.callbacks = callbacks
        run.done()
    if saved is not None:
        if not finite:  # the one host read a group
            restore(module, saved, optimizer.optimizer, scheduler)
            module.check_every_step = True  # from here on: a deterministic run stops within this group
            return take_steps(module, group)
        module.finite_loss = module.loss
    if scheduler is not None and not per_step and trainer.is_last_batch:
        scheduler.step()  # where Lightning steps an epoch's schedule: after the epoch's last batch
    return module.loss


def save(module, optimizer: Optimizer, scheduler: LRScheduler | None) -> dict:
    """What a group of steps changes, copied: weights and buffers, optimizer and LR schedule state,
    epoch sums, the step count, RNG (a model with dropout draws from it)."""
    cuda = module.device.type == "cuda"
    return {"state": [t.detach().clone() for t in module.state_dict(keep_vars=True).values()],
            "sums": module.sums["fit"].state_dict(),
            "scheduler": copy.deepcopy(scheduler.state_dict()) if scheduler is not None else None,
            "optimizer": ({p: copy.deepcopy(state) for p, state in optimizer.state.items()},  # tensors cloned
                          [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]),
            "steps": compat.step_count(module.trainer),
            "loss": (module.loss, module.finite_loss), "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(module.device) if cuda else None}


@torch.no_grad()
def restore(module, saved: dict, optimizer: Optimizer, scheduler: LRScheduler | None) -> None:
    # parameters and buffers (a batch norm's running statistics), in place
    for t, value in zip(module.state_dict(keep_vars=True).values(), saved["state"]):
        t.copy_(value)
    module.sums["fit"].load_state_dict(saved["sums"])
    if scheduler is not None:
        scheduler.load_state_dict(saved["scheduler"])
    state, groups = saved["optimizer"]
    optimizer.state.clear()  # in place: Lightning's optimizer wrapper holds these very objects
    optimizer.state.update(state)
    for group, values in zip(optimizer.param_groups, groups):
        group.update(values)
    compat.set_step_count(module.trainer, saved["steps"])
    module.loss, module.finite_loss = saved["loss"]
    torch.set_rng_state(saved["rng"])
    if saved["cuda_rng"] is not None:
        torch.cuda.set_rng_state(saved["cuda_rng"], module.device)
