"""Every place nnlab reaches into Lightning past its public API, each with the reason; nowhere else
does nnlab write an underscored attribute of a Lightning, Hydra or TensorBoard object
(tests/test_compat.py greps the package for it, and checks that each touch below still behaves as
described under the installed versions: upgrading Lightning is one test run away).
"""
from collections.abc import Callable, Sequence

import lightning as L
from lightning.pytorch.strategies.launchers import subprocess_script


def step_count(trainer: L.Trainer) -> dict:
    """The fit loop's count of optimizer steps taken (what `trainer.global_step` reads), to put back
    with `set_step_count`. Why: on a GPU fused steps read their finiteness flag once a group; a group
    that went non-finite is put back (weights, optimizer, schedule) and taken again step by step, and
    its steps, already counted by the LightningOptimizer's step(), must be uncounted with it. Lightning
    has no public way to uncount a step."""
    return trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress.state_dict()


def set_step_count(trainer: L.Trainer, count: dict) -> None:
    trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress.load_state_dict(count)


def batches_done(trainer: L.Trainer) -> int:
    """Training batches the fit loop has finished this epoch (read, never written). Why: a checkpoint
    taken mid-epoch records how far the data order got, so that the resumed run replays exactly the
    batches it missed; the loader itself cannot tell, as Lightning fetches one batch ahead."""
    return trainer.fit_loop.epoch_loop.batch_progress.current.completed


def launch_ranks_with(command: Callable[[int], tuple[Sequence[str], str]]) -> None:
    """Make Lightning's DDP launcher start local ranks 1..N-1 of a Hydra job with `command(local_rank)`
    -> (argv, cwd). Why: Lightning 2.6 re-runs `sys.argv` for them, which in a multirun is the whole
    sweep again (nnlab/ddp.py); the function it calls for Hydra apps is module-level and private."""
    subprocess_script._hydra_subprocess_cmd = command
