"""Fused steps: many optimizer steps inside one Lightning batch.

Lightning's loop costs ~1 ms a batch here (every callback's hooks, progress, the logger connector,
automatic optimization's closure), more than a whole spiral step (~0.5 ms). Where no Lightning
feature acts per optimizer step (train.fusable), the training loader serves groups of k minibatches
(k divides both the steps an epoch and log_interval: every logged step and epoch end is a group's
end) and the Classifier takes the k steps here (manual optimization), each exactly what automatic
optimization does (zero grads, forward, backward, finiteness check, step, a per-step LR schedule's
step). Each step goes through the LightningOptimizer's own step(): Lightning counts it in
global_step and calls on_before_optimizer_step, where the module checks finiteness as it does for
Lightning's own steps; so logs, checkpoints, max_steps and a mid-epoch resume see every one
(tests/test_train.py: bitwise Lightning's own steps).

The finiteness check reads a flag on the host. On the CPU that is free and done every step; on a
GPU it would make the host wait for the GPU's queue every step, so there the flag stays on the
device and is read once a group: the group's state is saved first, and a group that went
non-finite is put back and taken again, checked every step, to stop where a CPU run stops. Nothing
is logged within a group (the module logs at group ends), so nothing written has to be taken back.
"""
import copy

import torch
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from nnlab import compat


def take_steps(module, group: list[tuple[Tensor, Tensor]]) -> Tensor:
    """A step on each (x, y) minibatch of the group; returns the last step's loss."""
    trainer, optimizer, scheduler = module.trainer, module.optimizers(), module.lr_schedulers()
    n = len(group) if trainer.max_steps < 0 else min(len(group), trainer.max_steps - module.global_step)
    per_step = scheduler is not None and module.hparams.scheduler_interval == "step"  # onecycle
    saved = None if module.check_every_step else save(module, optimizer.optimizer, scheduler)
    # The step() of the LightningOptimizer runs every callback's on_before_optimizer_step, a no-op
    # for each callback fusable() admits (nnlab's own and ModelCheckpoint: none defines it), at
    # ~25 us each here, more than a fifth of a spiral step with five of them. The trainer's public
    # callback list is set aside for the group's steps and put back before anything else runs.
    callbacks, trainer.callbacks = trainer.callbacks, []
    try:
        for batch in group[:n]:
            optimizer.zero_grad(set_to_none=True)
            loss = module.step(batch, "fit")
            # Plain autograd: fusable() admits no precision plugin or strategy that acts on the backward
            # (manual_backward would only add Lightning's per-step hook calls).
            loss.backward()
            module.loss = loss.detach()
            optimizer.step()  # counted; a non-finite step's gradients were dropped, as in automatic optimization
            if per_step:
                scheduler.step()  # after every batch's step in automatic optimization, a diverged one too
            if module.diverged:
                break
    finally:
        trainer.callbacks = callbacks
    if saved is not None:
        if not module.group_finite:  # the one host read a group
            restore(module, saved, optimizer.optimizer, scheduler)
            module.check_every_step = True  # from here on: a deterministic run stops within this group
            return take_steps(module, group)
        module.group_finite, module.finite_loss = None, module.loss
    if scheduler is not None and not per_step and trainer.is_last_batch:
        scheduler.step()  # where Lightning steps an epoch's schedule: after the epoch's last batch
    return module.loss


def save(module, optimizer: Optimizer, scheduler: LRScheduler | None) -> dict:
    """What a group of steps changes, copied: weights and buffers, optimizer and LR schedule state,
    epoch sums, the step count, RNG (a model with dropout draws from it). The group's finiteness flag
    starts on the device (module.group_finite: on_before_optimizer_step adds each step's to it)."""
    cuda = module.device.type == "cuda"
    module.group_finite = torch.ones((), dtype=torch.bool, device=module.device)
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
    module.group_finite = None
    torch.set_rng_state(saved["rng"])
    if saved["cuda_rng"] is not None:
        torch.cuda.set_rng_state(saved["cuda_rng"], module.device)
