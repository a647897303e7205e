"""The places where nnlab reaches past Lightning's or Hydra's public API, each with its reason.

Nowhere else does nnlab import a private module or write an underscored attribute of a Lightning,
Hydra or TensorBoard object: tests/test_compat.py greps the package for it, and checks that each touch
below still behaves as described under the installed versions (an upgrade is one test run away).
Imports nothing heavy. The one touch outside it: src/hydra_plugins/nnlab_population.py subclasses Hydra's
BasicSweeper, importing it from hydra._internal itself (see there why).
"""
from collections.abc import Callable, Sequence

HYDRA_BASIC = {"sweeper": ("hydra._internal.core_plugins.basic_sweeper", "BasicSweeper"),
               "launcher": ("hydra._internal.core_plugins.basic_launcher", "BasicLauncher")}


def hydra_basic(kind: str, cls: type, exactly: bool = False) -> bool:
    """Whether `cls` is Hydra's basic sweeper or launcher (`kind`: the defaults of hydra/sweeper and
    hydra/launcher), or derives from it. Why by module and name along the MRO: Hydra's plugin scan
    executes its core plugins' modules again, in place, so their classes change identity (an issubclass
    against one imported before the scan fails), and Hydra exports no public class for either."""
    classes = cls.__mro__[:1] if exactly else cls.__mro__
    return any((c.__module__, c.__qualname__) == HYDRA_BASIC[kind] for c in classes)


def step_count(trainer) -> dict:
    """The fit loop's count of optimizer steps taken (what `trainer.global_step` reads), to put back
    with `set_step_count`. Why: on a GPU fused steps read their finiteness flag once a group; a group
    that went non-finite is put back (weights, optimizer, schedule) and taken again step by step, and
    its steps, already counted by the LightningOptimizer's step(), must be uncounted with it. Lightning
    has no public way to uncount a step."""
    return trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress.state_dict()


def set_step_count(trainer, count: dict) -> None:
    trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress.load_state_dict(count)


def batches_done(trainer) -> int:
    """Training batches the fit loop has finished this epoch (read, never written). Why: a checkpoint
    taken mid-epoch records how far the data order got, so that the resumed run replays exactly the
    batches it missed; the loader itself cannot tell, as Lightning fetches one batch ahead."""
    return trainer.fit_loop.epoch_loop.batch_progress.current.completed


def launch_ranks_with(command: Callable[[int], tuple[Sequence[str], str]]) -> None:
    """Make Lightning's DDP launcher start local ranks 1..N-1 of a Hydra job with `command(local_rank)`
    -> (argv, cwd). Why: Lightning 2.6 re-runs `sys.argv` for them, which in a multirun is the whole
    sweep again (nnlab/ddp.py); the function it calls for Hydra apps is module-level and private."""
    from lightning.pytorch.strategies.launchers import subprocess_script
    subprocess_script._hydra_subprocess_cmd = command
