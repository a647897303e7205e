"""What happens when things go wrong: each bad input or event below and its exact outcome.

bad input / event                      outcome                                              test
wrong type, out of range, unknown key  ConfigError, one line naming key, value, allowed     test_bad_config_*
unknown group option                   one line listing the options, exit 1, no run folder  test_cli_refuses_*
_target_ outside the allow-list        refused before anything is imported or opened       test_forbidden_target_*
non-finite loss / gradient             status diverged, the step never taken, finite ckpt  test_non_finite_*
... on a GPU (flag read once a group)   the same steps, weights and points as on the CPU     test_a_gpu_reads_*
SIGTERM or Ctrl-C mid-run              last.ckpt at a step boundary, interrupted, exit 1    test_interrupt_*
resume                                 bitwise the weights and metrics of an unbroken run   test_interrupt_*
checkpoint write fails (disk full)     clear error, previous checkpoint still loads         test_failed_checkpoint_*
damaged / truncated MNIST file         error naming the file and `make data`               tests/test_mnist_raw.py
crafted pickle in the offline source   refused, nothing runs                                tests/test_mnist_raw.py
a machine already busy at start        idle threads sleep (no number changes), one line     test_a_busy_machine_*
"""
import errno
import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import fresh_process, make_dry_run, one_line_refusal
from omegaconf import OmegaConf

import nnlab.checkpoint
import nnlab.fused
import nnlab.runs
import nnlab.train
from nnlab.cli import check_argv
from nnlab.config import ConfigError
from nnlab.train import train

SPIRAL_MLP = ["data=spiral", "model=mlp", "model.init_std=0.01", "optimizer.lr=1.0", "scheduler=none", "l2=0.001"]


@pytest.mark.parametrize("overrides,message", [
    (["optimizer.lr=-1"], "optimizer.lr=-1 is invalid: it must be a positive number"),
    (["optimizer.lr=abc"], "optimizer.lr='abc' is invalid"),
    (["optimizer.lr=inf"], "optimizer.lr=inf is invalid"),
    (["scheduler.gamma=1.5"], "scheduler.gamma=1.5 is invalid: it must be in (0, 1]"),
    (["scheduler.gamma=0"], "scheduler.gamma=0 is invalid: it must be in (0, 1]"),
    (["scheduler.interval=batch"], "scheduler.interval='batch' is invalid: it must be epoch (after every epoch) or step"),
    (["trainer.max_epochs=0"], "trainer.max_epochs=0 is invalid"),
    (["trainer.max_epochs=2.5"], "trainer.max_epochs=2.5 is invalid: it must be a whole number >= 1"),
    (["data.batch_size=abc"], "data.batch_size='abc' is invalid: it must be a whole number >= 1"),
    (["data.batch_size=0"], "data.batch_size=0 is invalid: it must be a whole number >= 1"),
    (["seed=abc"], "seed='abc' is invalid: it must be of type int"),
    (["seed=1.5"], "seed=1.5 is invalid: it must be of type int"),
    (["data.normalize=maybe"], "data.normalize='maybe' is invalid: it must be of type bool"),
    (["compile=fast"], "compile='fast' is invalid: it must be null or a torch.compile mode: default, reduce-overhead"),
    (["channels_last=maybe"], "channels_last='maybe' is invalid: it must be of type bool"),
    (["trainer.precision=bf17"], "Precision 'bf17' is invalid. Allowed precision values: ("),
    (["callbacks=0"], "callbacks=0 is invalid: each of callbacks is a node with a _target_"),
    (["callbacks.figures=null"], "callbacks.figures=None is invalid: each of callbacks is a node with a _target_ "
                                 "(conf/train.yaml); ~callbacks.<name> removes one"),
    (["data=spiral", "model=mlp", "model.hidden=abc"], "model.hidden='abc' is invalid: it must be of type int"),
    (["+foo=1"], "foo is not a key: the keys there are seed, l2"),
    (["+model.depth=3"], "model.depth is not an option of nnlab.models.CNN: its options are in_shape, num_classes"),
    (["+optimizer.nesterov_lr=1"], "optimizer.nesterov_lr is not an option of torch.optim.SGD"),
    (["data=spiral", "model=cnn"], "model=cnn takes C x H x W images"),
    (["data=spiral", "model=mlp", "model.hidden=0"], "model.hidden must be a positive number"),
    (["data=spiral", "model=mlp", "data.batch_size=32", "data.steps_per_epoch=50"],
     "data.steps_per_epoch=50 counts full-batch steps, but data.batch_size=32 makes an epoch one pass"),
    (["data.val_size=60000"], "data.val_size=60000 must be in [0, 60000)"),
    (["model._target_=builtins.open"], "model._target_='builtins.open' is not allowed"),
    (["+callbacks.x._target_=os.system", "+callbacks.x.command=true"], "callbacks.x._target_='os.system' is not allowed"),
    (["optimizer._target_=torch.load"], "optimizer._target_='torch.load' is not allowed"),
    (["optimizer._target_=torch.optim.Nope"], "optimizer._target_='torch.optim.Nope' is not a class nnlab can find"),
    # every number finite and in range, on the spiral MLP (where data.noise and model.hidden exist)
    ([*SPIRAL_MLP, "seed=-1"], "seed=-1 is invalid: it must be a whole number in [0, 2**32)"),
    ([*SPIRAL_MLP, "optimizer.momentum=-1"], "optimizer.momentum=-1 is invalid: it must be a number >= 0"),
    ([*SPIRAL_MLP, "+optimizer.weight_decay=-1"], "optimizer.weight_decay=-1 is invalid: it must be a number >= 0"),
    ([*SPIRAL_MLP, "optimizer.momentum=nan"], "optimizer.momentum=nan is invalid"),
    ([*SPIRAL_MLP, "data.noise=nan"], "data.noise=nan is invalid"),
    ([*SPIRAL_MLP, "+trainer.gradient_clip_val=nan"], "trainer.gradient_clip_val=nan is invalid: it must be a number >= 0, or null"),
    ([*SPIRAL_MLP, "data.steps_per_epoch=0"], "data.steps_per_epoch=0 is invalid: it must be a whole number >= 1"),
    ([*SPIRAL_MLP, "+trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val=-1 is invalid: it must be a number >= 0"),
    ([*SPIRAL_MLP, "data.n=1000000000000"], "data.n=1000000000000 is invalid: it must be a whole number in [1, 10**7]"),
    ([*SPIRAL_MLP, "data.noise=1e308"], "data.noise=1e+308 is invalid: it must be a number in [0, 100]"),
    ([*SPIRAL_MLP, "trainer.accelerator=cpu", "trainer.devices=64"], "trainer.devices=64 asks for more devices than"),
    ([*SPIRAL_MLP, "model.init_std=-1"], "model.init_std=-1 is invalid: it must be a positive number"),
    ([*SPIRAL_MLP, "model.init_std=0"], "model.init_std=0 is invalid: it must be a positive number"),
    ([*SPIRAL_MLP, "model.hidden=10000000000"], "nnlab.models.MLP (model.hidden=10000000000, model.init_std=0.01, "
                                                "model.batch_norm=False) has 6e+10 parameters: training needs over 720 GB"),
])
def test_bad_config_is_one_clear_error_before_any_work(make_cfg, overrides, message, tmp_path):
    with pytest.raises(ConfigError) as e:
        train(make_cfg(*overrides))
    assert str(e.value).startswith(message) and "\n" not in str(e.value)
    assert not (tmp_path / "run").exists()  # nothing was built, read or written


@pytest.mark.parametrize("args,message", [
    (["model=transformer"], "model=transformer is not an option: model is one of cnn, linear, mlp"),
    (["--multirun", "data=spiral,cifar"], "data=cifar is not an option: data is one of mnist, spiral"),
    (["model=null"], "model=null: a run needs a model; model is one of cnn, linear, mlp"),
    (["--multirun", "scheduler=none,null"], "scheduler=null cannot be one value of a sweep: sweep scheduler=none"),
    (["experiment=nope"], "experiment=nope is not an option: experiment is one of mnist_cnn_fast"),
    (["logger=0"], "logger=0 is not an option: logger is one of csv, mlflow, tensorboard, wandb, or several"),
    (["logger=[csv,nope]"], "logger=['csv', 'nope'] is not an option: logger is one of csv, mlflow"),
    (["+hydra.callbacks.x._target_=builtins.exec"], "hydra.callbacks.x._target_='builtins.exec' is not allowed"),
    (["++model._target_=builtins.open"], "model._target_='builtins.open' is not allowed"),
    (["--multirun", "hydra/launcher=submitit_local", "seed=0,1"], "hydra/launcher=submitit_local starts every job "
                                                                   "of a sweep at once: use hydra/launcher=local"),
    (["model=mlp", "--multirun", "seed=0,1"], "seed=0,1: not a flag, or an override after a flag that followed"),
    (["hydra/launcher=local", "hydra.launcher.max_parallel=0"], "hydra.launcher.max_parallel=0 is invalid: it must be "
                                                                "a whole number >= 1, or null"),
])
def test_command_line_options_and_targets_are_checked_before_hydra_sees_them(args, message):
    with pytest.raises(ConfigError) as e:
        check_argv(args)
    assert str(e.value).startswith(message)


def test_cli_refuses_a_forbidden_target_in_one_line_and_the_file_is_untouched(tmp_path, cli):
    # Under plain Hydra 1.3.8 this command truncates victim.txt.
    (tmp_path / "victim.txt").write_text("precious")
    done = cli("nnlab.train", "+model._target_=builtins.open", "+model._args_=[victim.txt,w]", cwd=tmp_path)
    one_line_refusal(done, "model._target_='builtins.open' is not allowed")
    assert (tmp_path / "victim.txt").read_text() == "precious" and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("arg", [
    "+callbacks.x={_target_: subprocess.run, args: [ls]}",
    "+callbacks.x={a: {b: [{_target_: subprocess.run}]}}",         # nested in dicts and lists
    "+callbacks.x=choice({_target_: subprocess.run},{})",           # one choice of a sweep
    "+callbacks.x={_target_: 'subprocess.run'}"])                  # quoted
def test_forbidden_target_in_a_dict_value_is_refused_too(arg):
    with pytest.raises(ConfigError, match="_target_='subprocess.run' is not allowed"):
        check_argv(["--multirun", arg])
    check_argv(["--multirun", arg.replace("subprocess.run", "torch.nn.ReLU")])  # an allowed class passes


class InfGradientFrom(L.Callback):
    """From training step `step` on, the logits' gradient is made inf while the loss stays finite."""

    def __init__(self, step: int):
        self.step = step

    def on_fit_start(self, trainer, module) -> None:
        def hook(net, inputs, logits):
            if logits.requires_grad and trainer.global_step >= self.step:
                logits.register_hook(lambda g: g * float("inf"))
        module.net.register_forward_hook(hook)


def test_non_finite_gradient_skips_the_step_and_stops(make_cfg, tmp_path, monkeypatch):
    with_callback(monkeypatch, InfGradientFrom(step=3))
    metrics = train(make_cfg(*SPIRAL_MLP, "trainer.max_epochs=1"))
    assert metrics["status"] == "diverged" and "gradient was not finite at step 3" in metrics["error"]
    weights = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_non_finite_loss_stops_before_the_step(make_cfg, tmp_path):
    metrics = train(make_cfg(*SPIRAL_MLP, "optimizer.lr=1e38", "trainer.max_epochs=1"))
    assert metrics["status"] == "diverged" and "lower optimizer.lr" in metrics["error"] and metrics["steps"] < 100
    weights = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.isfinite(w).all() for w in weights.values())


@pytest.mark.parametrize("overrides,inf_step,status", [
    (["optimizer.momentum=0.9", "scheduler=exponential", "scheduler.gamma=0.8"], None, "ok"),
    (["optimizer.momentum=0.9"], 13, "diverged"),  # inf gradients from step 13: 10-12 of the group 10-19 are taken
    (["model.batch_norm=true", "optimizer.lr=0.1"], 13, "diverged"),  # running statistics put back too
    (["optimizer.lr=1e38"], None, "diverged"),     # a NaN loss
    (["scheduler=onecycle", "scheduler.max_lr=1.0"], 13, "diverged"),  # the LR steps too
    (["scheduler=onecycle", "scheduler.max_lr=1.0"], 19, "diverged")])  # a group's last step
def test_a_gpu_reads_finiteness_once_a_group_and_stops_where_the_cpu_stops(overrides, inf_step, status, make_cfg,
                                                                           scalars, tmp_path, monkeypatch):
    # On a GPU the fused steps read their finiteness flag once a group (10 steps here), and a group
    # that went non-finite is put back and taken again step by step. Forced here on the CPU: the
    # same steps taken, weights, metrics and TensorBoard points as reading it every step.
    build, restore, restores = nnlab.train.build, nnlab.fused.restore, []
    monkeypatch.setattr(nnlab.fused, "restore", lambda *a: restores.append(1) or restore(*a))
    runs = {}
    for every_step in (True, False):
        def build_with(cfg):
            data, module, trainer = build(cfg)
            module.check_every_step = every_step
            trainer.callbacks += [InfGradientFrom(inf_step)] if inf_step else []
            return data, module, trainer
        monkeypatch.setattr(nnlab.train, "build", build_with)
        runs[every_step] = train(make_cfg(*SPIRAL_MLP, "data.steps_per_epoch=20", "log_interval=10",
                                          "trainer.max_epochs=2", *overrides, f"run_dir={tmp_path / str(every_step)}"))
        runs[every_step].pop("seconds")
    assert json.dumps(runs[True]) == json.dumps(runs[False]) and runs[True]["status"] == status  # NaN == NaN
    assert len(restores) == (status == "diverged")  # the per-group run put one group back
    if inf_step:
        assert f"gradient was not finite at step {inf_step}" in runs[True]["error"] and runs[True]["steps"] == inf_step + 1
    weights = [torch.load(tmp_path / d / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
               for d in ("True", "False")]
    assert all(torch.equal(w, weights[1][k]) and w.isfinite().all() for k, w in weights[0].items())
    # sort_keys: the tags come in the order their events files are read, by name, and the files' counter
    # suffix (...vm.<pid>.9, ...vm.<pid>.10) sorts as text
    assert json.dumps(scalars(tmp_path / "True"), sort_keys=True) == json.dumps(scalars(tmp_path / "False"), sort_keys=True)


class SignalAt(L.Callback):
    """Sends `signum` to this process after training step `step`, as a user or scheduler would."""

    def __init__(self, step: int, signum: int):
        self.step, self.signum = step, signum

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


def with_callback(monkeypatch, callback: L.Callback) -> None:
    build = nnlab.train.build
    def build_with(cfg):
        data, module, trainer = build(cfg)
        trainer.callbacks.append(callback)
        return data, module, trainer
    monkeypatch.setattr(nnlab.train, "build", build_with)


@pytest.mark.parametrize("signum,schedule", [
    (signal.SIGTERM, ["optimizer.lr=0.05", "optimizer.momentum=0.9", "scheduler.gamma=0.8"]),
    (signal.SIGINT, ["optimizer.lr=0.05", "optimizer.momentum=0.9", "scheduler.gamma=0.8"]),
    (signal.SIGTERM, ["optimizer=adam", "scheduler=onecycle"]),  # the LR moves every step
    (signal.SIGTERM, ["optimizer.lr=0.05", "model.batch_norm=true"])])  # running statistics
def test_interrupt_mid_epoch_then_resume_gives_bitwise_the_unbroken_run(signum, schedule, make_cfg, tiny_mnist,
                                                                        tmp_path, monkeypatch):
    # MNIST-shaped, shuffled batches of 10 (10 steps an epoch), momentum and a decaying lr: all of
    # the data order, optimizer state, schedule and running epoch metrics must survive the restart.
    # log_interval=2: the fused steps go 2 to a Lightning batch, so step 14 ends one
    overrides = [f"data.root={tiny_mnist}", "data.val_size=20", "data.batch_size=10", "model=mlp", "log_interval=2",
                 *schedule, "trainer.max_epochs=3"]
    unbroken = train(make_cfg(*overrides, f"run_dir={tmp_path / 'unbroken'}"))
    build = nnlab.train.build
    with_callback(monkeypatch, SignalAt(step=14, signum=signum))  # epoch 2, batch 5 of 10
    cut = make_cfg(*overrides, f"run_dir={tmp_path / 'cut'}")
    with pytest.raises((SystemExit, KeyboardInterrupt)):
        train(cut)
    saved = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    assert saved["status"] == "interrupted" and saved["steps"] == 14
    ckpt = tmp_path / "cut" / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, weights_only=True)["global_step"] == 14
    monkeypatch.setattr(nnlab.train, "build", build)
    resumed = train(cut, ckpt_path=str(ckpt))
    for key in ("train/loss", "train/loss_epoch", "train/acc", "val/acc", "val/loss", "test/acc", "test/loss"):
        assert resumed[key] == unbroken[key], key
    assert resumed["steps"] == unbroken["steps"] == 30
    a, b = (torch.load(tmp_path / d / "checkpoints" / "last.ckpt", weights_only=True) for d in ("unbroken", "cut"))
    for name, tensor in a["state_dict"].items():
        assert torch.equal(tensor, b["state_dict"][name]), name


def test_full_batch_interrupted_mid_epoch_resumes_bitwise(make_cfg, tmp_path, monkeypatch):
    # The spiral's steps run 10 to a Lightning batch here (20 an epoch, train/loss every 10): stopped
    # after step 30, mid-epoch 2, the resumed run must replay steps 31-60 as the unbroken run took them.
    overrides = [*SPIRAL_MLP, "data.steps_per_epoch=20", "log_interval=10", "trainer.max_epochs=3",
                 "scheduler=exponential", "scheduler.gamma=0.8", "optimizer.momentum=0.9", "optimizer.lr=0.3"]
    unbroken = train(make_cfg(*overrides, f"run_dir={tmp_path / 'unbroken'}"))
    build = nnlab.train.build
    with_callback(monkeypatch, SignalAt(step=30, signum=signal.SIGTERM))
    cut = make_cfg(*overrides, f"run_dir={tmp_path / 'cut'}")
    with pytest.raises(SystemExit):
        train(cut)
    ckpt = tmp_path / "cut" / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, weights_only=True)["global_step"] == 30
    monkeypatch.setattr(nnlab.train, "build", build)
    resumed = train(cut, ckpt_path=str(ckpt))
    assert resumed["steps"] == unbroken["steps"] == 60
    assert {k: v for k, v in resumed.items() if "/" in k} == {k: v for k, v in unbroken.items() if "/" in k}
    # the figures' curves were in the checkpoint: the resumed run draws the whole run's, pixel for pixel
    for png in ("losses.png", "regions.png"):
        assert (tmp_path / "cut" / png).read_bytes() == (tmp_path / "unbroken" / png).read_bytes(), png
    a, b = (torch.load(tmp_path / d / "checkpoints" / "last.ckpt", weights_only=True) for d in ("unbroken", "cut"))
    assert all(torch.equal(t, b["state_dict"][k]) for k, t in a["state_dict"].items())


class CopyCheckpointAt(L.Callback):
    """Keeps a copy of last.ckpt as it stood when epoch `epoch` began: what a run killed without
    warning (SIGKILL, power loss) leaves behind."""

    def __init__(self, epoch: int, to: Path):
        self.epoch, self.to = epoch, to

    def on_train_epoch_start(self, trainer, module) -> None:
        if trainer.current_epoch == self.epoch:
            self.to.write_bytes((Path(trainer.checkpoint_callback.dirpath) / "last.ckpt").read_bytes())


def test_a_run_killed_without_warning_resumes_from_its_last_epoch_exactly(make_cfg, tiny_mnist, tmp_path,
                                                                          monkeypatch):
    overrides = [f"data.root={tiny_mnist}", "data.val_size=20", "data.batch_size=10", "model=mlp",
                 "optimizer.lr=0.05", "optimizer.momentum=0.9", "scheduler.gamma=0.8", "trainer.max_epochs=3"]
    build = nnlab.train.build
    with_callback(monkeypatch, CopyCheckpointAt(epoch=2, to=tmp_path / "epoch2.ckpt"))
    unbroken = train(make_cfg(*overrides, f"run_dir={tmp_path / 'unbroken'}"))
    monkeypatch.setattr(nnlab.train, "build", build)
    assert torch.load(tmp_path / "epoch2.ckpt", weights_only=True)["global_step"] == 20
    resumed = train(make_cfg(*overrides, f"run_dir={tmp_path / 'killed'}"), ckpt_path=str(tmp_path / "epoch2.ckpt"))
    assert {k: v for k, v in resumed.items() if "/" in k} == {k: v for k, v in unbroken.items() if "/" in k}
    a, b = (torch.load(tmp_path / d / "checkpoints" / "last.ckpt", weights_only=True) for d in ("unbroken", "killed"))
    assert all(torch.equal(t, b["state_dict"][k]) for k, t in a["state_dict"].items())


def test_interrupt_from_the_cli_exits_nonzero_and_resume_finishes_it(tmp_path, cli, monkeypatch):
    # The command in this process, SIGTERM to it during epoch 2 of 3: one line naming the command that
    # continues it, exit 1; that command then ends at the unbroken run's numbers, in the run's own folder.
    args = [*SPIRAL_MLP, "trainer.max_epochs=3", "data.steps_per_epoch=20", "log_interval=10"]
    build = nnlab.train.build
    with_callback(monkeypatch, SignalAt(step=30, signum=signal.SIGTERM))
    done = cli("nnlab.train", *args, cwd=tmp_path)
    (run,) = (tmp_path / "runs").glob("*/*")
    one_line_refusal(done, f"interrupted; continue exactly where it stopped with: make train RESUME="
                           f"{run.relative_to(tmp_path)}")  # Lightning alone exits 0 here
    assert json.loads((run / "metrics.json").read_text())["status"] == "interrupted"
    monkeypatch.setattr(nnlab.train, "build", build)
    resumed = cli("nnlab.train", f"resume={run.relative_to(tmp_path)}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    unbroken = cli("nnlab.train", *args, cwd=tmp_path)
    assert unbroken.returncode == 0, unbroken.stderr[-2000:]
    runs = sorted((tmp_path / "runs").glob("*/*"))
    assert len(runs) == 2  # the resume went on in the run's own folder
    a, b = (json.loads((r / "metrics.json").read_text()) for r in runs)
    assert a["status"] == b["status"] == "ok" and a["steps"] == b["steps"] == 60
    assert {k: v for k, v in a.items() if "/" in k} == {k: v for k, v in b.items() if "/" in k}
    assert (run / ".hydra" / "overrides.yaml").read_text().count("trainer.max_epochs=3") == 1  # kept its own


@pytest.mark.slow
def test_sigterm_to_the_command_process_exits_nonzero_and_resume_finishes_it(tmp_path):
    args = [*SPIRAL_MLP, "trainer.max_epochs=10", "data.steps_per_epoch=20"]
    proc = subprocess.Popen([sys.executable, "-m", "nnlab.train", *args], cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for line in proc.stdout:  # stop it during epoch 3 of 10
        if line.startswith("epoch 2/10"):
            proc.send_signal(signal.SIGTERM)
            break
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1  # Lightning alone exits 0 here
    (run,) = (tmp_path / "runs").glob("*/*")
    assert err.strip().splitlines()[-1] == f"nnlab: interrupted; continue exactly where it stopped with: " \
                                           f"make train RESUME={run.relative_to(tmp_path)}"
    resumed = fresh_process("nnlab.train", f"resume={run.relative_to(tmp_path)}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads((run / "metrics.json").read_text())["steps"] == 200


def test_a_run_saved_with_a_top_level_scheduler_interval_resumes_as_saved(make_cfg, tmp_path, monkeypatch):
    # Run folders of nnlab versions that kept the schedule's interval at the top level
    # (scheduler_interval: step): a one-cycle run resumed from one still steps its lr every step.
    overrides = [*SPIRAL_MLP[:-2], "scheduler=onecycle", "scheduler.max_lr=0.5", "data.steps_per_epoch=6",
                 "log_interval=3", "trainer.max_epochs=2"]
    unbroken = train(make_cfg(*overrides, f"run_dir={tmp_path / 'unbroken'}"))
    build = nnlab.train.build
    with_callback(monkeypatch, SignalAt(step=3, signum=signal.SIGTERM))  # mid-epoch 1
    cut = make_cfg(*overrides, f"run_dir={tmp_path / 'cut'}")
    with pytest.raises(SystemExit):
        train(cut)
    monkeypatch.setattr(nnlab.train, "build", build)
    old = OmegaConf.to_container(cut)
    old["scheduler_interval"] = old["scheduler"].pop("interval")
    (tmp_path / "cut" / ".hydra").mkdir()
    OmegaConf.save(old, tmp_path / "cut" / ".hydra" / "config.yaml")
    cfg, ckpt = nnlab.train.resume_config(tmp_path / "cut", [])
    assert "scheduler_interval" not in cfg and cfg.scheduler.interval == "step"
    resumed = train(cfg, ckpt_path=ckpt)
    assert resumed["steps"] == unbroken["steps"] == 12
    assert {k: v for k, v in resumed.items() if "/" in k} == {k: v for k, v in unbroken.items() if "/" in k}


def test_scheduler_null_trains_at_a_constant_lr(tmp_path, monkeypatch, scalars):
    monkeypatch.chdir(tmp_path)
    metrics = nnlab.train.run([*SPIRAL_MLP[:-2], "scheduler=null", "data.steps_per_epoch=6", "log_interval=3",
                               "trainer.max_epochs=2"])
    assert metrics["status"] == "ok" and metrics["steps"] == 12
    assert [v for _, v in scalars(Path(metrics["run_dir"]))["lr"]] == [1.0] * 4


def test_a_checkpoint_with_the_epoch_sums_in_its_state_dict_is_refused_in_one_line(make_cfg, tmp_path):
    # nnlab versions that kept the epoch sums as module buffers wrote them as state_dict keys sums.*
    cfg = make_cfg(*SPIRAL_MLP, "trainer.max_epochs=1", "data.steps_per_epoch=3")
    train(cfg)
    run, ckpt = tmp_path / "run", tmp_path / "run" / "checkpoints" / "last.ckpt"
    old = torch.load(ckpt, weights_only=True)
    old["state_dict"].update({f"sums.fit.{k}": v for k, v in old.pop("epoch_sums").items()})
    torch.save(old, ckpt)
    (run / ".hydra").mkdir()
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    nnlab.runs.write_json(run / "metrics.json", {"status": "interrupted"})
    with pytest.raises(ConfigError) as e:
        nnlab.train.resume_config(run, [])
    assert str(e.value).startswith(f"{ckpt} holds the epoch sums in its state_dict (sums.*)") and "\n" not in str(e.value)
    assert "resume refused, nothing in" in str(e.value)


def test_resume_refuses_other_overrides_and_finished_runs(tmp_path, cli):
    done = cli("nnlab.train", *SPIRAL_MLP, "trainer.max_epochs=1", "data.steps_per_epoch=5", cwd=tmp_path)
    (run,) = (tmp_path / "runs").glob("*/*")
    again = cli("nnlab.train", f"resume={run.relative_to(tmp_path)}", cwd=tmp_path)
    one_line_refusal(again, f"resume={run.relative_to(tmp_path)} finished already (status ok): nothing to resume")
    other = cli("nnlab.train", f"resume={run.relative_to(tmp_path)}", "optimizer.lr=2", cwd=tmp_path)
    assert other.returncode == 1 and "takes no other overrides (got optimizer.lr=2)" in other.stderr
    assert done.returncode == 0 and json.loads((run / "metrics.json").read_text())["status"] == "ok"


def test_failed_checkpoint_write_is_clear_and_the_previous_one_still_loads(make_cfg, tmp_path, monkeypatch):
    save, calls = torch.save, {"n": 0}
    def disk_full_on_second_save(obj, f, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            f.write(b"half a checkpoint")
            raise OSError(errno.ENOSPC, "No space left on device")
        return save(obj, f, *a, **kw)
    monkeypatch.setattr(nnlab.checkpoint.torch, "save", disk_full_on_second_save)
    with pytest.raises(nnlab.checkpoint.CheckpointWriteError) as e:
        train(make_cfg(*SPIRAL_MLP, "trainer.max_epochs=3", "data.steps_per_epoch=5"))
    assert "could not write checkpoint" in str(e.value) and "No space left on device" in str(e.value)
    assert "the previous checkpoint there is kept" in str(e.value)
    folder = tmp_path / "run" / "checkpoints"
    assert [p.name for p in folder.iterdir()] == ["last.ckpt"]  # no temp file left behind
    assert torch.load(folder / "last.ckpt", weights_only=True)["global_step"] == 5  # epoch 1's, whole
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["status"] == "failed"


def test_failed_checkpoint_write_from_the_cli_is_one_line_and_keeps_the_previous_file(tmp_path, cli, monkeypatch):
    # The command with torch.save failing as a full disk fails: the second checkpoint save writes half a
    # file, then ENOSPC. The checkpoint as it stood just before is copied aside, to compare byte for byte.
    save, calls = torch.save, []
    def disk_full_on_second_save(obj, f, *a, **kw):
        calls.append(1)
        if len(calls) == 2:
            (ckpt,) = (tmp_path / "runs").glob("*/*/checkpoints/last.ckpt")
            (tmp_path / "before.ckpt").write_bytes(ckpt.read_bytes())
            f.write(b"half a checkpoint")
            raise OSError(errno.ENOSPC, "No space left on device")
        return save(obj, f, *a, **kw)
    monkeypatch.setattr(nnlab.checkpoint.torch, "save", disk_full_on_second_save)
    done = cli("nnlab.train", *SPIRAL_MLP, "trainer.max_epochs=3", "data.steps_per_epoch=5", cwd=tmp_path)
    (run,) = (tmp_path / "runs").glob("*/*")
    ckpt = run / "checkpoints" / "last.ckpt"
    one_line_refusal(done, f"could not write checkpoint {ckpt}: No space left on device; the previous "
                           "checkpoint there is kept. Free disk space and resume the run")
    assert ckpt.read_bytes() == (tmp_path / "before.ckpt").read_bytes()  # epoch 1's, byte for byte
    assert [p.name for p in ckpt.parent.iterdir()] == ["last.ckpt"]  # no temp file left behind
    assert json.loads((run / "metrics.json").read_text())["status"] == "failed"


@pytest.mark.parametrize("variables,logdir", [([], "runs"), (["RUNS=runs/sweeps"], "runs/sweeps")])
def test_tensorboard_serves_on_loopback_only(variables, logdir, tmp_path, monkeypatch):
    # The command `make tensorboard` runs (nnlab.board), down to the flags TensorBoard's own parser reads
    # from it: it binds the loopback address only, whatever folder it serves, and a flag that would
    # widen it is refused
    import tempfile

    import nnlab.board
    from nnlab.errors import NnlabError
    make = make_dry_run("tensorboard", *variables)
    (line,) = [shlex.split(x) for x in make.stdout.splitlines() if " -m nnlab.board" in x]
    assert line[1:] == ["-m", "nnlab.board", logdir]
    run = tmp_path / logdir / "a-run"
    (run / "tensorboard").mkdir(parents=True)
    (run / ".hydra").mkdir()
    (run / ".hydra" / "overrides.yaml").write_text("- model=mlp\n")
    seen = {}
    # not imported here: absl's app and logging, once imported, outlive this test's captured stderr
    monkeypatch.setattr(nnlab.board, "serve", lambda flags: seen.update(argv=flags))
    monkeypatch.chdir(tmp_path)
    nnlab.board.main([logdir])  # in this process: TensorBoard's own start is the patched run_main
    # TensorBoard's parser in a process of its own (its flags and logging are process-wide)
    parse = ("import sys; from tensorboard import program; b = program.TensorBoard(); b.configure(argv=sys.argv); "
             "print(b.flags.host, b.flags.bind_all, b.flags.logdir)")
    flags = subprocess.run([sys.executable, "-c", parse, *seen["argv"]], capture_output=True, text=True, timeout=120)
    host, bind_all, served = flags.stdout.split()
    assert host == "127.0.0.1" and bind_all == "False" and served.startswith(tempfile.gettempdir()), flags.stderr[-2000:]
    for flag in ("--bind_all", "--host=0.0.0.0"):
        with pytest.raises(NnlabError, match="make tensorboard chooses --logdir"):
            nnlab.board.main([logdir, flag])


def test_a_checkpoint_naming_a_forbidden_class_is_refused_by_evaluate(tmp_path):
    from nnlab.evaluate import evaluate
    crafted = {"hyper_parameters": {"config": {"data": {"_target_": "nnlab.data.SpiralDataModule"},
                                               "model": {"_target_": "os.system", "_args_": ["touch pwned"]}}},
               "state_dict": {}}
    torch.save(crafted, tmp_path / "last.ckpt")
    with pytest.raises(ConfigError, match="model._target_='os.system' is not allowed"):
        evaluate(tmp_path / "last.ckpt")
    assert not (Path.cwd() / "pwned").exists()


class SignalIn(L.Callback):
    """SIGTERM to this process in one phase of a run: a validation batch of epoch 2, the figures
    (on_fit_end, after fit's last step), or a test batch."""

    def __init__(self, phase: str):
        self.phase = phase

    def on_validation_batch_end(self, trainer, *args) -> None:
        if self.phase == "validation" and trainer.current_epoch == 1 and not trainer.sanity_checking:
            os.kill(os.getpid(), signal.SIGTERM)

    def on_fit_end(self, trainer, module) -> None:
        if self.phase == "figures":
            os.kill(os.getpid(), signal.SIGTERM)

    def on_test_batch_end(self, trainer, *args) -> None:
        if self.phase == "test":
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.parametrize("phase", ["validation", "figures", "test"])
def test_a_stop_in_any_phase_is_a_stop_and_resume_completes_the_record(phase, make_cfg, tmp_path, monkeypatch):
    # SIGTERM in each phase after the steps themselves (tested above): the run ends interrupted, and the
    # resumed run's metrics.json holds every metric of the unbroken run's, with the same values.
    overrides = [*SPIRAL_MLP, "data.steps_per_epoch=10", "log_interval=5", "trainer.max_epochs=3"]
    unbroken = train(make_cfg(*overrides, f"run_dir={tmp_path / 'unbroken'}"))
    build = nnlab.train.build
    with_callback(monkeypatch, SignalIn(phase))
    cut = make_cfg(*overrides, f"run_dir={tmp_path / 'cut'}")
    with pytest.raises((SystemExit, KeyboardInterrupt)):
        train(cut)
    assert json.loads((tmp_path / "cut" / "metrics.json").read_text())["status"] == "interrupted"
    monkeypatch.setattr(nnlab.train, "build", build)
    resumed = train(cut, ckpt_path=str(tmp_path / "cut" / "checkpoints" / "last.ckpt"))
    assert resumed["status"] == "ok" and resumed["steps"] == unbroken["steps"] == 30
    assert {k: v for k, v in resumed.items() if "/" in k} == {k: v for k, v in unbroken.items() if "/" in k}
    assert json.loads((tmp_path / "cut" / "metrics.json").read_text())["val/acc"] == unbroken["val/acc"]


def test_a_metrics_file_that_cannot_be_written_is_one_line_naming_it(tmp_path, cli, monkeypatch):
    # a disk that fills as the run ends: the checkpoints are whole, metrics.json cannot be written
    def disk_full(path, obj):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(nnlab.train, "write_json", disk_full)
    done = cli("nnlab.train", *SPIRAL_MLP, "trainer.max_epochs=1", "data.steps_per_epoch=3", cwd=tmp_path)
    (run,) = (tmp_path / "runs").glob("*/*")
    one_line_refusal(done, f"{run / 'metrics.json'} could not be written (No space left on device); the run's "
                           "status was ok: free disk space and resume the run")
    assert (run / "checkpoints" / "last.ckpt").exists() and not (run / "metrics.json").exists()


@pytest.mark.slow
def test_a_busy_machine_at_start_makes_idle_threads_sleep_says_so_and_changes_no_number(tmp_path):
    run = ["data=spiral", "model=mlp", "data.steps_per_epoch=50", "trainer.max_epochs=2", "threads=2"]
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # one core taken
    try:
        busy = fresh_process("nnlab.train", *run, "hydra.run.dir=busy", cwd=tmp_path,
                             env={k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"})
    finally:
        spinner.kill()
        spinner.wait()
    assert busy.returncode == 0, busy.stderr[-2000:]
    said = [line for line in (busy.stdout + busy.stderr).splitlines() if line.startswith("nnlab: other processes")]
    assert len(said) == 1 and "its 2 threads sleep while they wait (OMP_WAIT_POLICY=PASSIVE" in said[0] \
        and "threads=1 is faster still" in said[0]
    # spinning threads, as on a quiet machine (a policy in the environment is left as it is): the same numbers
    spinning = fresh_process("nnlab.train", *run, "hydra.run.dir=spinning", cwd=tmp_path,
                             env={**os.environ, "OMP_WAIT_POLICY": "ACTIVE"})
    assert spinning.returncode == 0 and "nnlab: other processes" not in spinning.stdout + spinning.stderr
    a, b = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("busy", "spinning"))
    assert {k: v for k, v in a.items() if "/" in k} == {k: v for k, v in b.items() if "/" in k}
