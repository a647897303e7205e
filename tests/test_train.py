"""End to end: the Hydra entry point, what a run leaves behind, checkpoints, bad input, seeds."""
import json
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import fresh_process, one_line_refusal, wandb_logged
from hydra.utils import instantiate

import nnlab
import nnlab.steps
import nnlab.train
from nnlab.config import ConfigError
from nnlab.data.loader import TensorDataModule
from nnlab.data.spiral import make_spiral
from nnlab.evaluate import evaluate
from nnlab.train import train

SPIRAL_MLP = ["data=spiral", "model=mlp", "model.init_std=0.01", "optimizer.lr=1.0", "scheduler=none", "l2=0.001"]


def test_spiral_run_through_the_hydra_entry_point_leaves_a_complete_run_folder(tmp_path):
    # the smoke test of `python -m nnlab.train`, in a fresh process as a person runs it
    done = fresh_process("nnlab.train", *SPIRAL_MLP, "trainer.max_epochs=3", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    runs = list((tmp_path / "runs").glob("*/*"))
    # named by its overrides, sorted
    assert len(runs) == 1 and runs[0].parent.name == ("data=spiral,l2=0.001,model.init_std=0.01,model=mlp,"
                                                      "optimizer.lr=1.0,scheduler=none,trainer.max_epochs=3")
    run = runs[0]
    assert f"run folder: {run.relative_to(tmp_path)}" in done.stdout and "status: ok" in done.stdout
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["epochs"] == 3 and metrics["steps"] == 300  # 100 full-batch steps an epoch
    for key in ("train/loss", "val/acc", "val/loss", "test/acc", "test/loss", "train/acc"):
        assert 0 <= metrics[key] < 5, key
    assert (run / ".hydra" / "config.yaml").exists() and (run / "checkpoints" / "last.ckpt").exists()
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.slow
def test_the_command_collects_garbage_but_not_its_imports(tmp_path):
    """python -m nnlab.train: its imports' objects are out of the collector's reach (frozen: walking
    them cost ~1 s as they loaded), and the collector is on again for the run itself; importing
    nnlab.train changes neither."""
    probe = """
import gc, runpy, sys
sys.argv = ["nnlab.train", "--help"]  # Hydra's help: the command's imports and check, then an exit
try:
    runpy.run_module("nnlab.train", run_name="__main__")
except SystemExit:
    pass
print(gc.isenabled(), gc.get_freeze_count())
"""
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    enabled, frozen = done.stdout.split()[-2:]
    assert enabled == "True" and int(frozen) > 100_000, done.stdout[-2000:] + done.stderr[-2000:]
    imported = subprocess.run([sys.executable, "-c", "import gc, nnlab.train; print(gc.isenabled(), gc.get_freeze_count())"],
                              capture_output=True, text=True, timeout=300)
    assert imported.stdout.split() == ["True", "0"], imported.stderr[-2000:]


def test_nnlab_run_is_the_command_line_run_from_python(tmp_path, monkeypatch, cli):
    args = [*SPIRAL_MLP, "data.steps_per_epoch=5", "trainer.max_epochs=2"]
    (tmp_path / "cli").mkdir()
    done = cli("nnlab.train", *args, cwd=tmp_path / "cli")
    assert done.returncode == 0, done.stderr[-2000:]
    monkeypatch.chdir(tmp_path)
    metrics = nnlab.run(args)
    run = Path(metrics.pop("run_dir"))
    cli_run, = (tmp_path / "cli" / "runs").glob("*/*")
    assert run.parent == tmp_path / "runs" / cli_run.parent.name  # the same folder name: its overrides
    assert json.loads((run / "metrics.json").read_text()) == metrics
    cli_metrics = json.loads((cli_run / "metrics.json").read_text())
    assert {k: v for k, v in metrics.items() if "/" in k} == {k: v for k, v in cli_metrics.items() if "/" in k}
    assert metrics["status"] == "ok" and metrics["steps"] == 10
    for leaf in (".hydra/config.yaml", ".hydra/overrides.yaml", "train.log", "checkpoints/last.ckpt"):
        assert (run / leaf).exists(), leaf
    assert nnlab.run([*args, "seed=2"])["test/acc"] != metrics["test/acc"]  # a second call in the same process
    with pytest.raises(ConfigError, match="optimizer.lr"):
        nnlab.run([*args, "optimizer.lr=abc"])
    with pytest.raises(ConfigError, match="overrides only"):
        nnlab.run(["--multirun", "seed=1,2"])


def test_evaluate_rescores_the_checkpoint_of_a_run_that_did_not_finish(tmp_path, monkeypatch):
    # the smoke test of `python -m nnlab.evaluate`, in a fresh process
    monkeypatch.chdir(tmp_path)
    metrics = nnlab.run([*SPIRAL_MLP, "data.steps_per_epoch=5", "trainer.max_epochs=1"])
    run = Path(metrics["run_dir"])
    (run / "metrics.json").write_text(json.dumps({"status": "interrupted", "error": "KeyboardInterrupt()"}))
    done = fresh_process("nnlab.evaluate", str(run / "checkpoints" / "last.ckpt"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"{metrics['test/acc']:.4f} (the run reported no test/acc: status interrupted)" in done.stdout


def test_checkpoint_loads_weights_only_and_reproduces_its_reported_accuracy(make_cfg, tmp_path):
    cfg = make_cfg(*SPIRAL_MLP, "trainer.max_epochs=2")
    metrics = train(cfg)
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    saved = ckpt["hyper_parameters"]["config"]
    assert saved["optimizer"]["lr"] == 1.0 and saved["seed"] == 1234  # the run's config, as plain values
    # Rebuild the bare net from the saved config alone, with no Lightning, and evaluate it.
    net = instantiate(saved["model"], in_shape=(2,), num_classes=3)
    net.load_state_dict({k.removeprefix("net."): v for k, v in ckpt["state_dict"].items() if k.startswith("net.")})
    x, y = make_spiral(n=100, k=3, seed=saved["data"]["seed"] + 2)  # the test draw
    acc = (net(x).argmax(1) == y).float().mean().item()
    assert acc == pytest.approx(metrics["test/acc"], abs=1e-6)
    assert acc > 0.6  # and it did learn: chance is 1/3


def test_same_seed_same_numbers_other_seed_other_numbers(make_cfg):
    a = train(make_cfg(*SPIRAL_MLP, "trainer.max_epochs=1", "data.steps_per_epoch=20", "model.init_std=null"))
    b = train(make_cfg(*SPIRAL_MLP, "trainer.max_epochs=1", "data.steps_per_epoch=20", "model.init_std=null"))
    c = train(make_cfg(*SPIRAL_MLP, "trainer.max_epochs=1", "data.steps_per_epoch=20", "model.init_std=null", "seed=1"))
    assert a["train/loss"] == b["train/loss"] and a["test/acc"] == b["test/acc"]
    assert a["train/loss"] != c["train/loss"]


def test_mlp_beats_linear_on_the_spiral(make_cfg):
    linear = train(make_cfg(*SPIRAL_MLP, "model=linear", "trainer.max_epochs=10"))
    mlp = train(make_cfg(*SPIRAL_MLP, "trainer.max_epochs=10"))
    assert linear["train/acc"] < 0.6 < 0.8 < mlp["train/acc"]
    assert mlp["train/loss"] < linear["train/loss"]


def test_cnn_trains_on_mnist_idx_files_through_torchvision(make_cfg, tiny_mnist, tmp_path):
    metrics = train(make_cfg(f"data.root={tiny_mnist}", "data.val_size=20", "data.batch_size=20",
                             "optimizer=adam", "optimizer.lr=0.01", "trainer.max_epochs=3"))
    assert metrics["status"] == "ok" and metrics["steps"] == 3 * 5  # 100 training images, batch 20
    assert metrics["test/acc"] > 0.3  # brightness encodes the class: well above chance (0.1)
    # a plain-PyTorch recount from the checkpoint alone agrees with what the run reported
    assert evaluate(tmp_path / "run" / "checkpoints" / "last.ckpt") == pytest.approx(metrics["test/acc"], abs=1e-6)


def test_cli_bad_config_exits_nonzero_with_one_line(tmp_path, cli):
    done = cli("nnlab.train", "data=spiral", "model=cnn", cwd=tmp_path)
    one_line_refusal(done, "model=cnn takes C x H x W images")
    assert "data=mnist" in done.stderr
    assert not (tmp_path / "runs").exists()  # a refused command leaves nothing behind


MOMENTUM_DECAY = ["scheduler=exponential", "scheduler.gamma=0.8", "optimizer.momentum=0.9", "optimizer.lr=0.3"]


@pytest.mark.parametrize("data,overrides,steps,group", [
    ("spiral", MOMENTUM_DECAY, 60, 10),                       # 20 full-batch steps an epoch, logged every 10
    ("spiral", ["scheduler=none", "+trainer.max_steps=25"], 25, 10),  # stops mid-group
    ("mnist", MOMENTUM_DECAY, 36, 4),                         # 12 shuffled batches of 10 an epoch, logged every 8
    ("mnist", ["model=cnn", "trainer.precision=bf16-mixed", "channels_last=true"], 36, 4),  # the GPU options
    ("mnist", ["scheduler=onecycle", "optimizer=adam"], 36, 4),  # an LR step every step
    ("mnist", ["model=cnn", "model.batch_norm=true", "optimizer.momentum=0.9"], 36, 4),  # running statistics
    ("spiral", ["model.batch_norm=true", "optimizer.lr=0.1"], 60, 10),
    ("spiral", ["scheduler=onecycle", "scheduler.max_lr=1.0", "+trainer.max_steps=25"], 25, 10)])
def test_fused_steps_are_the_steps_lightning_takes_one_batch_at_a_time(data, overrides, steps, group, make_cfg,
                                                                      tiny_mnist, scalars, tmp_path, monkeypatch):
    # The module stepping through groups of minibatches itself (the fast path) against Lightning's
    # automatic optimization, one batch at a time: the same weights, metrics, learning rates and
    # TensorBoard points, at the same steps, bit for bit.
    args = ([*SPIRAL_MLP, "data.steps_per_epoch=20", "log_interval=10"] if data == "spiral" else
            [f"data.root={tiny_mnist}", "data.val_size=0", "data.batch_size=10", "model=mlp", "log_interval=8"])
    args += ["trainer.max_epochs=3", *overrides]
    groups, serve = [], TensorDataModule.train_dataloader
    monkeypatch.setattr(TensorDataModule, "train_dataloader", lambda self: groups.append(serve(self)) or groups[-1])
    a = train(make_cfg(*args, f"run_dir={tmp_path / 'fused'}"))
    b = train(make_cfg(*args, "fused=false", f"run_dir={tmp_path / 'single'}"))
    assert groups[0].group == group and groups[-1].group is None
    assert a["steps"] == b["steps"] == steps
    assert {k: v for k, v in a.items() if "/" in k} == {k: v for k, v in b.items() if "/" in k}
    wa, wb = (torch.load(tmp_path / d / "checkpoints" / "last.ckpt", weights_only=True) for d in ("fused", "single"))
    assert wa["global_step"] == wb["global_step"] == steps
    assert wa["state_dict"].keys() == wb["state_dict"].keys()
    assert all(torch.equal(t, wb["state_dict"][k]) for k, t in wa["state_dict"].items())
    sa, sb = scalars(tmp_path / "fused"), scalars(tmp_path / "single")
    assert {"train/loss", "val/acc"} <= set(sa) and len(sa["train/loss"]) >= 2
    assert sa == sb


def test_nnlab_steps_two_ways_a_fused_run_as_a_population_of_one(make_cfg, tmp_path, monkeypatch, cli):
    # Every step nnlab takes itself is nnlab.steps.step: a fused run's, with the run as its one member,
    # and a population's, with all of its members; any other run is Lightning's automatic optimization.
    taken, step = [], nnlab.steps.step
    monkeypatch.setattr(nnlab.steps, "step", lambda members, *a, **k: taken.append(len(members)) or step(members, *a, **k))
    short = [*SPIRAL_MLP, "data.steps_per_epoch=20", "log_interval=10", "trainer.max_epochs=2"]
    fused = train(make_cfg(*short, "seed=0", f"run_dir={tmp_path / 'fused'}"))
    assert fused["status"] == "ok" and taken == [1] * 40
    taken.clear()
    assert train(make_cfg(*short, "fused=false", f"run_dir={tmp_path / 'lightning'}"))["steps"] == 40 and taken == []
    done = cli("nnlab.train", "--multirun", "hydra/launcher=population", "hydra.launcher.workers=1",
               "hydra.launcher.figures=none", f"hydra.sweep.dir={tmp_path / 'sweep'}", *short, "seed=0,1,2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert taken == [3] * 40
    member = json.loads(next((tmp_path / "sweep").glob("*seed=0*/metrics.json")).read_text())
    assert member["status"] == "ok" and {k: v for k, v in member.items() if "/" in k} == {k: v for k, v in fused.items() if "/" in k}


def test_lightning_takes_each_step_where_it_acts_per_step(make_cfg):
    from nnlab.train import build, fusable
    data, module, trainer = build(make_cfg(*SPIRAL_MLP))
    assert fusable(module, trainer)
    class GradientNorms(L.Callback):  # a user's callback that looks at every step's gradients
        def on_after_backward(self, trainer, module) -> None:
            pass
    trainer.callbacks.append(GradientNorms())
    assert not fusable(module, trainer)
    for extra, fused in [([], True), (["+trainer.accumulate_grad_batches=2"], False),
                         (["+trainer.gradient_clip_val=1.0"], False), (["scheduler=onecycle"], True),
                         (["+trainer.limit_train_batches=5"], False), (["+trainer.val_check_interval=10"], False),
                         (["+trainer.limit_train_batches=1"], False), (["+trainer.val_check_interval=1"], False),
                         (["+trainer.limit_train_batches=1.0"], True), (["+trainer.fast_dev_run=true"], False),
                         (["fused=false"], False)]:
        data, module, _ = build(make_cfg(*SPIRAL_MLP, *extra))
        assert data.fused == module.fused == fused and module.automatic_optimization != fused, extra


def test_limit_train_batches_1_is_one_step_an_epoch(make_cfg):
    metrics = train(make_cfg(*SPIRAL_MLP, "trainer.max_epochs=3", "+trainer.limit_train_batches=1"))
    assert metrics["status"] == "ok" and metrics["steps"] == 3


def test_gpu_options_take_effect_and_checkpoints_load_into_a_plain_model(make_cfg, tiny_mnist, tmp_path, monkeypatch):
    # bf16 autocast and channels-last are GPU options; both run (slowly) on the CPU, so they are checked here.
    seen = []
    forward = nnlab.classifier.Classifier.forward
    monkeypatch.setattr(nnlab.classifier.Classifier, "forward", lambda self, x: seen.append(
        (self.net.conv1(x), out := forward(self, x))) or out)
    metrics = train(make_cfg(f"data.root={tiny_mnist}", "data.val_size=20", "data.batch_size=20", "optimizer=adam",
                             "optimizer.lr=0.01", "trainer.max_epochs=3",
                             "trainer.precision=bf16-mixed", "channels_last=true"))
    assert metrics["status"] == "ok" and metrics["steps"] == 15 and metrics["test/acc"] > 0.3
    conv1, logits = seen[0]  # the first training step's
    assert logits.dtype == torch.bfloat16 and conv1.is_contiguous(memory_format=torch.channels_last)
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["state_dict"]["net.conv2.0.weight"].is_contiguous(memory_format=torch.channels_last)
    # into an eager float32 NCHW CNN: bfloat16's rounding may flip a test image or two of the 40
    assert evaluate(tmp_path / "run" / "checkpoints" / "last.ckpt") == pytest.approx(metrics["test/acc"], abs=0.051)


@pytest.mark.slow
def test_compiled_model_trains_to_the_eager_numbers_and_its_checkpoint_loads_into_a_plain_model(make_cfg, tmp_path):
    args = [*SPIRAL_MLP, "trainer.max_epochs=2", "data.steps_per_epoch=20"]
    eager = train(make_cfg(*args, f"run_dir={tmp_path / 'eager'}"))
    compiled = train(make_cfg(*args, "compile=default", f"run_dir={tmp_path / 'compiled'}"))  # ~30 s: inductor
    assert compiled["status"] == "ok"
    for key, value in eager.items():  # inductor fuses the arithmetic its own way: float32 rounding apart
        if "/" in key:
            assert compiled[key] == pytest.approx(value, rel=1e-4), key
    ckpts = [torch.load(tmp_path / d / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
             for d in ("eager", "compiled")]
    assert ckpts[0].keys() == ckpts[1].keys()  # net.*, not net._orig_mod.*
    assert evaluate(tmp_path / "compiled" / "checkpoints" / "last.ckpt") == pytest.approx(compiled["test/acc"], abs=1e-6)


def test_l2_decays_matrices_and_kernels_only(make_cfg):
    from nnlab.train import build
    _, module, _ = build(make_cfg("model.batch_norm=true"))  # CNN: conv kernels, fc matrix; norms' scale/shift
    names = {id(p): n for n, p in module.net.named_parameters()}
    assert sorted(names[id(w)] for w in module.weights) == ["conv1.0.weight", "conv2.0.weight", "fc.weight"]


def test_every_chosen_logger_writes_the_run_and_reads_it_back(tmp_path, cli):
    # logger=[tensorboard,csv,mlflow]: each written for real, read back by its own reader
    import csv

    import mlflow
    run = tmp_path / "run"
    done = cli("nnlab.train", "data=spiral", "model=mlp", "optimizer.lr=0.5", "data.steps_per_epoch=5",
               "trainer.max_epochs=2", "log_interval=5", "logger=[tensorboard,csv,mlflow]", f"hydra.run.dir={run}",
               cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "MLflow" not in done.stdout + done.stderr and "Creating it" not in done.stdout + done.stderr  # set-up: quiet
    metrics = json.loads((run / "metrics.json").read_text())
    assert list((run / "tensorboard").glob("events.*"))
    rows = list(csv.DictReader(open(run / "csv" / "metrics.csv")))
    assert [(int(r["step"]), float(r["train/loss"])) for r in rows if r["train/loss"]][-1] == \
        (10, pytest.approx(metrics["train/loss"]))
    assert [int(r["step"]) for r in rows if r["val/acc"]] == [5, 10]
    assert float(next(r["hp/test_acc"] for r in rows if r["hp/test_acc"])) == pytest.approx(metrics["test/acc"])
    client = mlflow.MlflowClient(f"sqlite:///{run}/mlflow.db")
    (found,) = client.search_runs([client.get_experiment_by_name("nnlab").experiment_id])
    assert found.info.status == "FINISHED" and found.info.artifact_uri.startswith(str(run))
    assert found.info.run_name == run.name  # the run folder's name
    assert {k: found.data.params[k] for k in ("lr", "model", "data", "seed")} == \
        {"lr": "0.5", "model": "mlp", "data": "spiral", "seed": "1234"}
    assert found.data.metrics["hp/test_acc"] == pytest.approx(metrics["test/acc"])
    history = client.get_metric_history(found.info.run_id, "val/acc")
    assert [p.step for p in history] == [5, 10] and history[-1].value == pytest.approx(metrics["val/acc"])


def test_wandb_logs_offline_in_the_run_folder_and_a_stopped_run_goes_on_in_its_own_wandb_run(tmp_path, cli, monkeypatch):
    # logger=wandb: no account, nothing sent; read back from wandb's own files. SIGTERM after epoch 1,
    # then resume: the run's second W&B run has the first one's id, and the folder holds no link.
    from test_reliability import SignalAt, with_callback
    run, build = tmp_path / "run", nnlab.train.build
    with_callback(monkeypatch, SignalAt(step=5, signum=signal.SIGTERM))
    stopped = cli("nnlab.train", "data=spiral", "model=mlp", "optimizer.lr=0.5", "data.steps_per_epoch=5",
                  "trainer.max_epochs=2", "log_interval=5", "logger=[tensorboard,wandb]", f"hydra.run.dir={run}",
                  cwd=tmp_path)
    assert stopped.returncode == 1 and "interrupted" in stopped.stderr, stopped.stderr[-2000:]
    monkeypatch.setattr(nnlab.train, "build", build)
    resumed = cli("nnlab.train", f"resume={run}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "wandb" not in (stopped.stdout + resumed.stdout + resumed.stderr).lower()  # quiet: the progress is nnlab's
    assert not [p for p in (run / "wandb").rglob("*") if p.is_symlink()]  # wandb's shortcuts removed
    metrics = json.loads((run / "metrics.json").read_text())
    first, second = wandb_logged(run)
    assert first["run"] == second["run"] and second["run"][1:] == (run.name, "nnlab")
    assert {k: second["config"][k] for k in ("lr", "model", "seed")} == {"lr": 0.5, "model": "mlp", "seed": 1234}
    history = [row for w in (first, second) for row in w["history"]]
    assert [(r["trainer/global_step"], r["train/loss"]) for r in history if "train/loss" in r][-1] == \
        (10, pytest.approx(metrics["train/loss"]))
    assert [r["trainer/global_step"] for r in second["history"] if "val/acc" in r] == [10]
    assert next(r["hp/test_acc"] for r in history if "hp/test_acc" in r) == pytest.approx(metrics["test/acc"])
    # docs/configuration.md's wandb sync, as a dry run (the real one uploads): it finds both W&B runs
    sync = subprocess.run([str(Path(sys.executable).parent / "wandb"), "sync", "--dry-run",
                           *map(str, sorted((run / "wandb").glob("offline-run-*")))], capture_output=True, text=True)
    assert sync.returncode == 0 and "Would sync 2 run(s)" in sync.stdout + sync.stderr, sync.stdout + sync.stderr


@pytest.mark.parametrize("override,key", [
    ("logger.csv.save_dir=/tmp/elsewhere", "logger.csv.save_dir='/tmp/elsewhere'"),
    ("logger.mlflow.tracking_uri=sqlite:////tmp/elsewhere/mlflow.db", "logger.mlflow.tracking_uri='/tmp/elsewhere/mlflow.db'"),
    ("logger.wandb.save_dir=/tmp/elsewhere", "logger.wandb.save_dir='/tmp/elsewhere'"),
    ("+logger.wandb.dir=/tmp/elsewhere", "logger.wandb.dir='/tmp/elsewhere'")])
def test_a_logger_writing_outside_the_run_folder_is_refused_in_one_line(override, key, tmp_path, cli):
    done = cli("nnlab.train", "data=spiral", "logger=[csv,mlflow,wandb]", override, cwd=tmp_path)
    one_line_refusal(done, f"{key} is outside the run folder")
    assert not (tmp_path / "runs").exists()


def test_a_tracking_server_is_no_folder_and_a_file_store_is_one(tmp_path):
    from omegaconf import OmegaConf

    from nnlab.config import writes
    cfg = OmegaConf.create({"logger": {"mlflow": {"tracking_uri": "http://127.0.0.1:5000"},
                                       "other": {"tracking_uri": "file:/x/mlruns", "save_dir": "/y"}}})
    assert writes(cfg) == [("logger.other.save_dir", "/y"), ("logger.other.tracking_uri", "/x/mlruns")]


@pytest.mark.slow
def test_mlflow_ui_as_the_docs_start_it_serves_a_runs_store(tmp_path, cli):
    import socket
    import time
    import urllib.request
    run = tmp_path / "run"
    done = cli("nnlab.train", "data=spiral", "model=mlp", "data.steps_per_epoch=5", "trainer.max_epochs=2",
               "logger=mlflow", f"hydra.run.dir={run}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ui = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "ui", "--backend-store-uri",
                           f"sqlite:///{run}/mlflow.db", "--host", "127.0.0.1", "--port", str(port)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, found = time.monotonic() + 120, None
        while found is None and time.monotonic() < deadline and ui.poll() is None:
            ask = urllib.request.Request(f"http://127.0.0.1:{port}/api/2.0/mlflow/runs/search", method="POST",
                                         data=b'{"experiment_ids": ["1"]}', headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(ask, timeout=5) as r:
                    found = json.loads(r.read())["runs"]
            except OSError:
                time.sleep(0.5)
        assert found, "mlflow ui never answered on 127.0.0.1"
        (one,) = found
        params = {p["key"]: p["value"] for p in one["data"]["params"]}
        assert one["info"]["status"] == "FINISHED" and params["model"] == "mlp" and params["data"] == "spiral"
    finally:
        ui.terminate()
        ui.wait(timeout=30)
