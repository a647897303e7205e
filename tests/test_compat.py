"""nnlab reaches past Lightning's public API in nnlab/compat.py alone, and each touch there still
does what it says under the installed versions: a failure here names the touch to update."""
import ast
import inspect
from pathlib import Path

import lightning as L
from lightning.pytorch.strategies.launchers import subprocess_script

import nnlab
from nnlab import compat
from nnlab.train import build

PACKAGE = Path(nnlab.__file__).parent
SOURCES = sorted([*PACKAGE.rglob("*.py"), *(PACKAGE.parent / "hydra_plugins").rglob("*.py")])  # nnlab's sweeper too
SPIRAL = ["data=spiral", "model=mlp", "scheduler=none", "data.steps_per_epoch=6", "log_interval=3",
          "trainer.max_epochs=2"]


def test_no_module_but_compat_touches_another_objects_underscored_attribute():
    # obj._name on anything but the module's own self/cls (Hydra's config keys _target_ etc. are keys,
    # and numpy's pickle reconstructor is numpy's, not Lightning's, Hydra's or TensorBoard's)
    found = []
    for path in SOURCES:
        if path.name == "compat.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.endswith("_")
                    and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
                    and ast.unparse(node) not in ("np._core.multiarray._reconstruct", "np._core")):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {ast.unparse(node)}")
    assert len(SOURCES) > 20 and not found, "move these into nnlab/compat.py, each with why and a test here:\n" + "\n".join(found)


class Probe(L.Callback):
    """Reads the compat touches during a real fit."""

    def __init__(self):
        self.batches, self.counts = [], []

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.batches.append((compat.batches_done(trainer), batch_idx))

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.counts.append((compat.step_count(trainer), trainer.global_step))


def test_the_step_count_and_batch_position_compat_reads_are_lightnings(make_cfg):
    data, module, trainer = build(make_cfg(*SPIRAL))
    probe = Probe()
    trainer.callbacks.append(probe)
    module.fused = data.fused = True  # the probe is not an allow-listed callback; it only reads
    trainer.fit(module, datamodule=data)
    assert trainer.global_step == 12 and len(probe.counts) == 4  # groups of 3 steps
    assert all(done == i for done, i in probe.batches), (
        f"Lightning {L.__version__}: batch_progress.current.completed no longer counts the epoch's finished "
        "batches; update compat.batches_done (mid-epoch resume depends on it)")
    for count, step in probe.counts:
        assert count["total"]["completed"] == step, (
            f"Lightning {L.__version__}: global_step is no longer manual optimization's optim_step_progress; "
            "update compat.step_count (the GPU retake of a non-finite group depends on it)")
    count = compat.step_count(trainer)
    count["total"]["completed"] -= 5
    compat.set_step_count(trainer, count)
    assert trainer.global_step == 7, f"Lightning {L.__version__}: update compat.set_step_count"


def test_lightning_still_starts_hydra_ranks_through_the_function_compat_replaces():
    import nnlab.ddp  # replaces it on import
    source = inspect.getsource(subprocess_script._SubprocessScriptLauncher)
    assert "_hydra_subprocess_cmd(" in source, (
        f"Lightning {L.__version__} no longer starts a Hydra app's ranks through _hydra_subprocess_cmd: "
        "update compat.launch_ranks_with (trainer=ddp in a multirun depends on it)")
    assert subprocess_script._hydra_subprocess_cmd is nnlab.ddp.child_command


def test_hydras_basic_sweeper_is_still_the_class_nnlabs_grouped_sweeper_extends():
    # src/hydra_plugins/nnlab_population.py imports BasicSweeper from hydra._internal (Hydra exports no
    # public class for its default sweeper) and overrides the public Sweeper hook validate_batch_is_legal
    from hydra import compose, initialize_config_dir
    from hydra.plugins.sweeper import Sweeper

    from nnlab import CONF_DIR
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", return_hydra_config=True)
    target = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
    assert cfg.hydra.sweeper._target_ == target, (
        f"Hydra's default sweeper is now {cfg.hydra.sweeper._target_}, not {target}: update the import in "
        "src/hydra_plugins/nnlab_population.py (GroupedBasicSweeper)")
    assert callable(getattr(Sweeper, "validate_batch_is_legal", None)), (
        "Hydra's Sweeper no longer has validate_batch_is_legal: GroupedBasicSweeper overrides it")
