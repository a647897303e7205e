"""Fused steps: many optimizer steps inside one Lightning batch.

Lightning's loop costs ~1 ms a batch here (every callback's hooks, progress, the logger connector,
automatic optimization's closure), more than a whole spiral step (~0.5 ms). Where no Lightning
feature acts per optimizer step (train.fusable), the training loader serves groups of k minibatches
(k divides both the steps an epoch and log_interval: every logged step and epoch end is a group's
end) and the Classifier takes the k steps here, each exactly what automatic optimization does (zero
grads, forward, backward, finiteness check, step, a per-step LR schedule's step), with the torch
optimizer itself. Each step is counted where Lightning counts optimizer steps (global_step) and
logger steps, so logs, checkpoints, max_steps and a mid-epoch resume see every one
(tests/test_train.py: bitwise Lightning's own steps).

The finiteness check reads a flag on the host. On the CPU that is free and done every step; on a
GPU it would make the host wait for the GPU's queue every step, so there the flag stays on the
device and is read once a group: the group's state is saved first, and a group that went
non-finite is put back and taken again, checked every step, to stop where a CPU run stops. A
per-step LR logged within a group reads the flag before it is written (logs cannot be taken back).
"""
import copy

import torch
from lightning.pytorch.callbacks import LearningRateMonitor
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler


def take_steps(module, group: list[tuple[Tensor, Tensor]], lr_logged_at: int = -1) -> Tensor:
    """A step on each (x, y) minibatch of the group; returns the last step's loss. `lr_logged_at`: the
    step whose LR point a first take of this group wrote (its retake must not write it twice)."""
    trainer, optimizer, scheduler = module.trainer, module.optimizers().optimizer, module.lr_schedulers()
    loop = trainer.fit_loop.epoch_loop
    steps = loop.manual_optimization.optim_step_progress  # global_step is its completed count
    n = len(group) if trainer.max_steps < 0 else min(len(group), trainer.max_steps - module.global_step)
    per_step = scheduler is not None and module.hparams.scheduler_interval == "step"  # onecycle
    # Lightning's LR monitor writes a per-step schedule's LR at the batch starts of logged steps; here,
    # at those steps' starts (the group's last step, as the group size divides log_interval).
    monitors = [c for c in trainer.callbacks if isinstance(c, LearningRateMonitor)] if per_step else []
    every = trainer.log_every_n_steps
    saved = None if module.check_every_step else save(module, optimizer, scheduler, steps)
    first, done = loop._batches_that_stepped, 0  # the logger's step: Lightning adds 1 a batch, we 1 a step
    for i, batch in enumerate(group[:n]):
        loop._batches_that_stepped = first + i
        if monitors and i and every and (first + i + 1) % every == 0 and first + i > lr_logged_at:
            if saved is not None and not saved["finite"]:  # a written log cannot be taken back: read first
                break
            for monitor in monitors:  # (the group's first step had Lightning's own batch start)
                monitor.on_train_batch_start(trainer, module, batch, i)
            lr_logged_at = first + i
        optimizer.zero_grad(set_to_none=True)
        loss = module._step(batch, "fit")
        loss.backward()
        module.loss = loss.detach()
        steps.increment_ready()
        if saved is not None:  # no host read: the flag stays on the device until the group ends
            saved["finite"] &= module.all_finite()
            optimizer.step()
        elif finite := module.finite(module.global_step):
            optimizer.step()
        steps.increment_completed()  # a diverged step counts, unstepped, as in automatic optimization
        if per_step:
            scheduler.step()  # after every batch's step in automatic optimization, a diverged one too
        done += 1
        if saved is None and not finite:
            break
    if saved is not None:
        if not saved["finite"]:  # the one host read a group
            restore(module, saved, optimizer, scheduler, steps)
            loop._batches_that_stepped = first
            module.check_every_step = True  # from here on: a deterministic run stops within this group
            return take_steps(module, group, lr_logged_at)
        module.finite_loss = module.loss
    if scheduler is not None and not per_step and trainer.is_last_batch:
        scheduler.step()  # where Lightning steps an epoch's schedule: after the epoch's last batch
    loop._batches_that_stepped = first + max(done - 1, 0)
    return module.loss


def save(module, optimizer: Optimizer, scheduler: LRScheduler | None, steps) -> dict:
    """What a group of steps changes, copied: weights, optimizer and LR schedule state, epoch sums,
    step counts, RNG (a model with dropout draws from it); and the group's finiteness flag, on the device."""
    cuda = module.device.type == "cuda"
    return {"params": [p.detach().clone() for p in module.params],
            "scheduler": copy.deepcopy(scheduler.state_dict()) if scheduler is not None else None,
            "optimizer": ({p: copy.deepcopy(state) for p, state in optimizer.state.items()},  # tensors cloned
                          [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]),
            "sums": [b.clone() for b in module.sums["fit"].buffers()], "steps": copy.deepcopy(steps.state_dict()),
            "loss": (module.loss, module.finite_loss), "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(module.device) if cuda else None,
            "finite": torch.ones((), dtype=torch.bool, device=module.device)}


@torch.no_grad()
def restore(module, saved: dict, optimizer: Optimizer, scheduler: LRScheduler | None, steps) -> None:
    for p, value in zip(module.params, saved["params"]):
        p.copy_(value)
    if scheduler is not None:
        scheduler.load_state_dict(saved["scheduler"])
    state, groups = saved["optimizer"]
    optimizer.state.clear()  # in place: Lightning's optimizer wrapper holds these very objects
    optimizer.state.update(state)
    for group, values in zip(optimizer.param_groups, groups):
        group.update(values)
    for b, value in zip(module.sums["fit"].buffers(), saved["sums"]):
        b.copy_(value)
    steps.load_state_dict(saved["steps"])
    module.loss, module.finite_loss = saved["loss"]
    torch.set_rng_state(saved["rng"])
    if saved["cuda_rng"] is not None:
        torch.cuda.set_rng_state(saved["cuda_rng"], module.device)
