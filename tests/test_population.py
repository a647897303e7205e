"""hydra/launcher=population against hydra/launcher=basic: the same sweep in two folders, every run's
numbers, weights, TensorBoard scalars and saved config equal, bit for bit on the spiral. In this process
with one worker here; in two worker processes, interrupted, killed and resumed in the slow tier."""
import importlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import fresh_process, in_process, one_line_refusal, wandb_logged
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from nnlab import CONF_DIR
from nnlab.evaluate import evaluate
from nnlab.population.grouping import derive, device_of, group_jobs, job_of, supported, vectorized
from nnlab.population.loop import Stack
from nnlab.population.shares import processes

# 12 jobs: linear and mlp, each with a good lr, one that diverges (1e20) and a bad one (-1), 2 seeds
SWEEP = ["sweep=spiral_grid", "trainer.max_epochs=2", "data.steps_per_epoch=10", "log_interval=5",
         "optimizer.lr=1.0,1e20,-1", "scheduler.gamma=0.9", "seed=0,1", "model=linear,mlp"]
RESULTS = ("status", "error", "epochs", "steps", "threads")  # threads: one a run in a sweep, under every launcher


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    """The sweep run by each launcher, in this process: {launcher: (sweep folder, the command's output)}."""
    done, tmp_path = {}, tmp_path_factory.mktemp("sweeps")
    for launcher in ("population", "basic"):
        folder = tmp_path / launcher
        extra = ["hydra.launcher.workers=1"] if launcher == "population" else []
        run = in_process("nnlab.train", "--multirun", f"hydra/launcher={launcher}", f"hydra.sweep.dir={folder}", *SWEEP,
                  *extra, cwd=tmp_path)
        assert run.returncode == 1, run.stderr[-3000:]  # the invalid_config jobs are listed as failures
        done[launcher] = folder, run.stdout + run.stderr
    return done


@pytest.mark.slow
def test_in_two_processes_every_member_is_its_separate_run_bit_for_bit(tmp_path):
    # the population in 2 worker processes (each population's members shared out between them) against
    # the basic launcher, each sweep a command of its own
    out = {}
    for launcher, extra in (("population", ["hydra.launcher.workers=2"]), ("basic", [])):
        done = fresh_process("nnlab.train", "--multirun", f"hydra/launcher={launcher}",
                             f"hydra.sweep.dir={tmp_path / launcher}", *SWEEP, *extra, cwd=tmp_path)
        assert done.returncode == 1, done.stderr[-3000:]  # the invalid_config jobs are listed as failures
        out[launcher] = done.stdout
    assert "population 0: 6 runs differing in optimizer.lr, seed, vmapped, in 2 processes" \
        in out["population"]
    population, basic = runs(tmp_path / "population"), runs(tmp_path / "basic")
    assert population.keys() == basic.keys() and len(population) == 12
    for name, run in population.items():
        a, b = (json.loads((r / "metrics.json").read_text()) for r in (run, basic[name]))
        assert {k: v for k, v in a.items() if "/" in k or k in RESULTS} == \
               {k: v for k, v in b.items() if "/" in k or k in RESULTS}, name
        if a["status"] != "invalid_config":
            wa, wb = (torch.load(r / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"] for r in (run, basic[name]))
            assert all(torch.equal(wa[k], wb[k]) for k in wa), name


def runs(folder: Path) -> dict[str, Path]:
    return {p.parent.name: p.parent for p in sorted(folder.glob("*/.hydra"))}


def test_the_grouping_is_printed_before_training(sweeps):
    _, out = sweeps["population"]
    assert "population: 12 jobs, 12 of them in 2 populations" in out
    assert "model=linear sweep=spiral_grid trainer.max_epochs=2: population 0: 6 runs differing in " \
           "optimizer.lr, seed, vmapped" in out  # gamma is one value: not named
    assert out.index("population 1:") < out.index("sweep folder:") and "status: ok" not in out  # runs' lines: train.log


def test_every_member_is_its_separate_run_bit_for_bit(sweeps, scalars):
    population, basic = runs(sweeps["population"][0]), runs(sweeps["basic"][0])
    assert population.keys() == basic.keys() and len(population) == 12
    statuses = {}
    for name, run in population.items():
        a, b = (json.loads((r / "metrics.json").read_text()) for r in (run, basic[name]))
        statuses[name] = a["status"]
        assert {k: v for k, v in a.items() if "/" in k or k in RESULTS} == \
               {k: v for k, v in b.items() if "/" in k or k in RESULTS}, name
        for leaf in (".hydra/config.yaml", ".hydra/overrides.yaml"):
            assert (run / leaf).read_text() == (basic[name] / leaf).read_text(), (name, leaf)
        if a["status"] == "invalid_config":
            assert "optimizer.lr=-1" in a["error"] and "population" not in a
            continue
        assert a["population"]["size"] == 4 and (run / "train.log").read_text().count("epoch ") >= 1
        wa, wb = (torch.load(r / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"] for r in (run, basic[name]))
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), name
        assert repr(sorted(scalars(run).items())) == repr(sorted(scalars(basic[name]).items())), name  # repr: NaN == NaN
    # the diverged members stopped alone: the others of their population are the separate runs' numbers
    assert sorted(statuses.values()) == ["diverged"] * 4 + ["invalid_config"] * 4 + ["ok"] * 4


def test_a_spiral_run_is_the_same_bits_on_one_thread_and_on_two(tmp_path, cli):
    # A sweep's runs take one thread, make train's torch's default (2 here): on the spiral that changes no
    # number, so a member's numbers are those of its run made alone (docs/population-evidence.md, Threads)
    out = {}
    for threads in (1, 2):
        done = cli("nnlab.train", "data=spiral", "model=mlp", "optimizer.lr=1.0", "data.steps_per_epoch=50",
                   "trainer.max_epochs=2", f"threads={threads}", f"hydra.run.dir={tmp_path / str(threads)}", cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
        run = tmp_path / str(threads)
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["threads"] == threads
        out[threads] = ({k: v for k, v in metrics.items() if "/" in k},
                        torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"])
    assert out[1][0] == out[2][0]
    assert all(torch.equal(t, out[2][1][k]) for k, t in out[1][1].items())


def test_a_members_checkpoint_rescores_to_its_reported_accuracy(sweeps):
    for run in runs(sweeps["population"][0]).values():
        metrics = json.loads((run / "metrics.json").read_text())
        if metrics["status"] == "ok":
            assert evaluate(run / "checkpoints" / "last.ckpt") == pytest.approx(metrics["test/acc"], abs=1e-6)


def test_a_members_hydra_yaml_is_hydras_own_but_for_the_launcher(sweeps):
    population, basic = runs(sweeps["population"][0]), runs(sweeps["basic"][0])
    for name, run in population.items():
        a, b = (OmegaConf.load(r / ".hydra" / "hydra.yaml").hydra for r in (run, basic[name]))
        assert Path(a.runtime.output_dir).name == name
        assert a.sweeper == b.sweeper  # the job's composition: the grid sweeper is the master's only
        for cfg in (a, b):  # what differs by design: the launcher, where the sweep was told to go
            for key in ("launcher", "sweeper", "overrides.hydra", "sweep.dir", "runtime.output_dir", "runtime.choices"):
                OmegaConf.update(cfg, key, None, force_add=True)
        assert OmegaConf.to_container(a) == OmegaConf.to_container(b), name


def test_compare_summarises_both_sweeps_alike(sweeps, cli):
    summaries = []
    for launcher in ("population", "basic"):
        folder = sweeps[launcher][0]
        done = cli("nnlab.compare", str(folder))
        assert done.returncode == 0, done.stderr[-2000:]
        summaries.append((folder / "summary.csv").read_text())
    assert summaries[0] == summaries[1]


def compose_job(overrides: list[str]):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=True)


def test_a_derived_members_config_is_hydras_composition_of_its_job():
    first = job_of(0, ["sweep=spiral_grid", "model=mlp", "optimizer.lr=0.3", "scheduler.gamma=0.7", "seed=0"])
    job = job_of(5, ["sweep=spiral_grid", "model=mlp", "optimizer.lr=10.0", "scheduler.gamma=1.0", "seed=2"])
    derived = derive(compose_job(first.overrides), job)
    composed = compose_job(job.overrides)
    composed.hydra.job.id = composed.hydra.job.num = 5
    assert OmegaConf.to_container(derived) == OmegaConf.to_container(composed)
    assert derived.hydra.job.override_dirname == "model=mlp,optimizer.lr=10.0,scheduler.gamma=1.0,seed=2"


def test_grouping_never_merges_jobs_that_differ_in_a_structural_key():
    base = ["sweep=spiral_grid", "model=mlp"]
    structural = [[], ["model=linear"], ["model.hidden=10"], ["data.batch_size=32"], ["trainer.max_epochs=3"],
                  ["optimizer=adam"], ["scheduler=none"], ["fused=false"], ["trainer=ddp"], ["+trainer.max_steps=5"],
                  ["optimizer.lr=abc"], ["data=mnist"], ["log_interval=5"], ["model.init_std=null"]]
    lr = lambda extra: [] if any(o.startswith("optimizer.lr") for o in extra) else ["optimizer.lr=0.5"]  # noqa: E731
    jobs = [job_of(2 * i + seed, [*base, *extra, *lr(extra), f"seed={seed}"])
            for i, extra in enumerate(structural) for seed in (0, 1)]
    groups = group_jobs(jobs)
    assert [[j.idx for j in g] for g in groups] == [[2 * i, 2 * i + 1] for i in range(len(structural))]
    # numbers of the members' keys alone make members of one population
    numbers = [job_of(i, [*base, f"seed={i}", f"l2={i / 10}", f"model.init_std={i + 1}", f"optimizer.lr={i + 1}",
                         f"optimizer.momentum={i / 10}", f"scheduler.gamma={1 / (i + 1)}"]) for i in range(3)]
    assert len(group_jobs(numbers)) == 1


def test_the_sweeper_composes_one_job_a_group_for_the_population_and_every_job_otherwise():
    # the module as sys.modules has it now: Hydra's plugin scan (any compose before) executes its
    # core plugins' modules and hydra_plugins' again, and a sweeper subclasses the current BasicSweeper
    plugin = importlib.import_module("hydra_plugins.nnlab_population")
    composed = []
    loader = SimpleNamespace(load_sweep_config=lambda master_config, sweep_overrides: composed.append(sweep_overrides)
                             or compose_job(sweep_overrides))
    sweeper = plugin.GroupedBasicSweeper(max_batch_size=None, params=None)
    sweeper.config = OmegaConf.create({"hydra": {"sweep": {"dir": "unused"}}})
    sweeper.hydra_context = SimpleNamespace(config_loader=loader)
    # 3 x 2 x 2 numbers, 2 models, and a job whose value is not a number: its own group, composed
    batch = [["sweep=spiral_grid", f"model={m}", f"optimizer.lr={lr}", f"scheduler.gamma={g}", f"seed={s}"]
             for m in ("linear", "mlp") for lr in (0.1, 0.3, 1.0) for g in (0.9, 1.0) for s in (0, 1)]
    batch.append(["sweep=spiral_grid", "model=mlp", "optimizer.lr=abc", "scheduler.gamma=0.9", "seed=0"])
    sweeper.launcher = plugin.PopulationLauncher()
    sweeper.validate_batch_is_legal(batch)
    assert composed == [batch[0], batch[12], batch[24]]
    assert list(sweeper.launcher.composed) == [tuple(o) for o in composed]  # the launcher composes them no more
    assert all(cfg.model._target_.startswith("nnlab.models.") for cfg in sweeper.launcher.composed.values())
    composed.clear()
    sweeper.launcher = object()  # any other launcher: every job, as Hydra's basic sweeper checks them
    sweeper.validate_batch_is_legal(batch)
    assert composed == batch


@pytest.mark.parametrize("overrides,trains", [
    (["data=spiral", "model=mlp"], True), (["data=spiral", "model=linear", "optimizer=adam", "scheduler=onecycle"], True),
    (["data=spiral", "model=mlp", "fused=false"], False), (["data=spiral", "model=mlp", "trainer=ddp"], False),
    (["data=spiral", "model=mlp", "model.batch_norm=true"], False), (["data=mnist", "model=cnn"], True),
    (["data=mnist", "model=linear"], True), (["data=mnist", "model=cnn", "model.batch_norm=true"], False),
    (["data=spiral", "model=mlp", "+trainer.gradient_clip_val=1.0"], False),
    (["data=spiral", "model=mlp", "+callbacks.extra._target_=nnlab.callbacks.EpochLog"], False)])
def test_what_the_population_does_not_train_runs_alone(overrides, trains):
    assert (supported(compose_job(overrides)) is None) == trains


@pytest.mark.parametrize("model,setting,how", [("linear", "auto", "vmap"), ("mlp", "auto", "vmap"), ("cnn", "auto", "loop"),
                                               ("cnn", "vmap", "vmap"), ("mlp", "loop", "loop")])
def test_linear_and_mlp_are_vmapped_and_the_cnn_stepped_in_turn_unless_the_launcher_says(model, setting, how):
    assert vectorized(compose_job(["data=mnist", f"model={model}"]), setting) == how


@pytest.mark.parametrize("accelerator,cuda,device", [("cpu", True, "cpu"), ("auto", False, "cpu"), ("auto", True, "cuda:0"),
                                                     ("gpu", True, "cuda:0"), ("cuda", True, "cuda:0"), ("mps", False, None)])
def test_a_population_trains_on_the_device_lightning_would_give_its_runs(accelerator, cuda, device, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    found = device_of(compose_job(["data=mnist", f"trainer.accelerator={accelerator}"]))
    assert (found and str(found)) == device


def test_on_a_gpu_a_population_is_vmapped_in_one_process_where_the_launcher_allows_it(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cnn = ["data=mnist", "model=cnn", "hydra/launcher=population"]
    assert "hydra.launcher.gpu=true" in supported(compose_job(cnn))  # off by default: jobs one after another
    on = compose_job([*cnn, "hydra.launcher.gpu=true"])
    assert supported(on) is None and supported(compose_job([*cnn, "hydra.launcher.gpu=true",
                                                            "trainer.precision=bf16-mixed"])) is None
    assert vectorized(on) == "vmap" and processes(18, on, workers=16) == 1  # CUDA does not fork
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same sweep on the CPU
    off = compose_job([*cnn, "hydra.launcher.gpu=true"])
    assert supported(off) is None and vectorized(off) == "loop"
    assert processes(18, off, workers=16) == (16 if sys.platform == "linux" else 1)
    assert supported(compose_job([*cnn, "trainer.precision=bf16-mixed"])) is not None  # bf16 only on a GPU


def test_a_population_trains_at_its_runs_precision(tmp_path, monkeypatch, cli):
    # bf16-mixed, which the population takes on a GPU only, runs (slowly) on the CPU: Lightning's precision
    # plugin autocasts the population's steps as it does a run's, from the trainer the members' config gives
    import nnlab.population.launcher
    from nnlab.population.module import Population
    monkeypatch.setattr(nnlab.population.launcher, "supported", lambda cfg: None)  # the CPU's refusal, lifted
    take, autocast = Population.training_step, []
    monkeypatch.setattr(Population, "training_step", lambda self, group, i: autocast.append(
        (self.trainer.precision, torch.is_autocast_enabled("cpu"))) or take(self, group, i))
    done = cli("nnlab.train", "--multirun", "hydra/launcher=population", "hydra.launcher.workers=1", "data=spiral",
               "model=mlp", "optimizer.lr=0.3,1.0", "trainer.precision=bf16-mixed", "trainer.max_epochs=2",
               "data.steps_per_epoch=10", f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert done.returncode == 0 and "population 0: 2 runs differing in optimizer.lr" in done.stdout, done.stderr[-2000:]
    assert autocast and set(autocast) == {("bf16-mixed", True)}
    metrics = [json.loads((run / "metrics.json").read_text()) for run in runs(tmp_path / "sweep").values()]
    assert [m["status"] for m in metrics] == ["ok", "ok"] and all(m["val/acc"] > 0.4 for m in metrics)


@pytest.mark.parametrize("setting", ["hydra.launcher.vectorize=fast", "hydra.launcher.figures=some",
                                     "hydra.launcher.workers=0", "hydra.launcher.gpu=yes"])
def test_a_bad_launcher_setting_is_one_line_before_anything_starts(setting, tmp_path, cli):
    done = cli("nnlab.train", "--multirun", "hydra/launcher=population", setting, "data=spiral", "seed=0,1",
               f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    one_line_refusal(done, f"{setting} is not an option: ")
    assert not (tmp_path / "sweep").exists()


def stop_halfway_into_epoch_2(proc: subprocess.Popen, sweep: Path, logs: str, count: int, epoch_1: str) -> None:
    """SIGTERM to `proc` about halfway into the second epoch, however fast this machine steps: after
    `count` of the `logs` (a glob in `sweep`) have the epoch's end line `epoch_1`, half as long again
    as the first epoch took."""
    deadline = time.monotonic() + 300

    def seen(line: str) -> float:
        while sum(line in log.read_text() for log in sweep.glob(logs)) < count:
            assert proc.poll() is None and time.monotonic() < deadline, "the population ended before it was stopped"
            time.sleep(0.01)
        return time.monotonic()
    began = seen("first batch")
    time.sleep((seen(epoch_1) - began) / 2)
    proc.send_signal(signal.SIGTERM)


@pytest.mark.slow
def test_an_interrupted_population_continues_to_the_uninterrupted_numbers(tmp_path, scalars):
    # SIGTERM mid-epoch: every member stops at a step boundary, `interrupted`, its checkpoint holding what
    # the population needs to go on; RESUME= continues them from there and ends at the unbroken numbers:
    # metrics, weights, TensorBoard scalars (every step once). A member whose checkpoint is unreadable or
    # another run's trains again from its start, saying so, to the same numbers. Members that diverged
    # before the stop ride along, stopped, and end diverged. Shuffled minibatches of 1 (600 steps an
    # epoch), so that continuing mid-epoch replays the epoch's data order drawn before the stop.
    per_epoch = 600
    sweep = ["--multirun", "hydra/launcher=population", "hydra.launcher.figures=all", "hydra.launcher.workers=1",
             "sweep=spiral_grid", "model=mlp", "optimizer.lr=0.03,0.1,1e20", "scheduler.gamma=0.9", "seed=0,1",
             "trainer.max_epochs=3", "data.n=200",
             "data.batch_size=1", "log_interval=50"]
    command = [sys.executable, "-m", "nnlab.train", *sweep]
    subprocess.run([*command, f"hydra.sweep.dir={tmp_path / 'whole'}"], cwd=tmp_path, capture_output=True, timeout=600)
    cut = tmp_path / "cut"
    proc = subprocess.Popen([*command, f"hydra.sweep.dir={cut}"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    # a training member's train.log (a diverging one writes "epoch 1/3" at once)
    stop_halfway_into_epoch_2(proc, cut, "*optimizer.lr=0.1,*/train.log", 1, "epoch 1/3")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1 and "make sweep RESUME=cut" in err, err[-2000:]
    cut_runs = runs(cut)
    names = sorted(cut_runs)  # lr 0.03 seed 0, lr 0.03 seed 1, lr 0.1 seed 0, lr 0.1 seed 1, lr 1e20 seed 0, 1
    assert len(names) == 6 and all("lr=1e+20" in name for name in names[4:])
    cut_metrics = {name: json.loads((run / "metrics.json").read_text()) for name, run in cut_runs.items()}
    assert {m["status"] for m in cut_metrics.values()} == {"interrupted"}
    steps = {cut_metrics[name]["steps"] for name in names[:4]}
    assert len(steps) == 1 and per_epoch < (stopped := steps.pop()) < 3 * per_epoch, steps  # all at one step
    assert stopped % per_epoch, "the stop landed at an epoch's end: the test wants one mid-epoch"
    epoch, done_in_it = divmod(stopped, per_epoch)
    assert all(cut_metrics[name]["steps"] < per_epoch for name in names[4:])  # diverged in epoch 1
    ckpt = cut_runs[names[0]] / "checkpoints" / "last.ckpt"
    assert 0 <= evaluate(ckpt) <= 1  # make evaluate scores an interrupted member
    (cut_runs[names[1]] / "checkpoints" / "last.ckpt").write_bytes(ckpt.read_bytes())  # another run's
    (cut_runs[names[2]] / "checkpoints" / "last.ckpt").write_bytes(b"not a checkpoint")
    # make train RESUME=<a member's folder>: it continues alone, a population of one; another run's checkpoint
    # is refused in one line
    resume = [(subprocess.run([*command[:3], f"resume={cut_runs[names[i]]}"], cwd=tmp_path, capture_output=True,
                              text=True, timeout=300)) for i in (1, 0)]
    refused, alone = resume
    assert refused.returncode == 1 and refused.stderr.strip().count("\n") == 0, refused.stderr[-2000:]
    assert "was saved by a run of another config; make sweep RESUME=<its sweep folder> trains it again" in refused.stderr
    assert alone.returncode == 0, alone.stderr[-2000:]
    done = subprocess.run([*command, f"hydra.sweep.dir={cut}"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"{names[1]} trains again from its start" in done.stdout and "saved by a run of another config" in done.stdout
    assert f"{names[2]} trains again from its start" in done.stdout and "is not a readable checkpoint" in done.stdout
    for name in (names[0], names[3], *names[4:]):
        assert f"continues from step {cut_metrics[name]['steps']} (epoch {epoch + 1}, after {done_in_it} of " \
               f"its {per_epoch} steps)" in (cut_runs[name] / "train.log").read_text()
        assert (cut_runs[name] / "train.log").read_text().count("epoch 1/3") == 1  # not trained again
        assert not (cut_runs[name] / "attempt-1").exists()
    for name in (names[1], names[2]):
        assert (cut_runs[name] / "attempt-1" / "metrics.json").exists()  # the cut-short attempt, kept
    for name, run in runs(tmp_path / "whole").items():
        a, b = (json.loads((r / "metrics.json").read_text()) for r in (run, cut_runs[name]))
        assert a["status"] == ("diverged" if "lr=1e+20" in name else "ok") and \
               {k: v for k, v in a.items() if "/" in k or k in RESULTS} == \
               {k: v for k, v in b.items() if "/" in k or k in RESULTS}, name
        # continued alone, trained again from the start, or continued in the sweep
        assert b["population"]["size"] == (1 if name == names[0] else 2 if name in names[1:3] else 3)
        wa, wb = (torch.load(r / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"] for r in (run, cut_runs[name]))
        assert all(torch.equal(wa[k], wb[k]) for k in wa), name
        assert repr(sorted(scalars(run).items())) == repr(sorted(scalars(cut_runs[name]).items())), name
        for figure in ("losses.png", "regions.png"):  # the curves gathered before the stop, and after
            assert (run / figure).read_bytes() == (cut_runs[name] / figure).read_bytes(), (name, figure)


@pytest.mark.parametrize("stop_after", [6, 8])  # groups of 5 steps, 4 an epoch: mid-epoch 2, and its last group
def test_a_population_stopped_after_any_group_continues_to_the_unbroken_numbers(stop_after, tmp_path, monkeypatch,
                                                                                scalars, cli):
    # SIGTERM as Lightning's loop takes a group of steps: every member stops there, `interrupted`; RESUME=
    # continues from Lightning's state in the members' files (ckpt_path) to the numbers, weights and
    # TensorBoard scalars of the population never stopped. The diverging member rides along, stopped.
    from nnlab.population.module import Population
    sweep = ["--multirun", "hydra/launcher=population", "hydra.launcher.workers=1", "hydra.launcher.figures=none",
             "data=spiral", "model=mlp", "optimizer.lr=0.3,1.0,1e20", "seed=0", "data.steps_per_epoch=20",
             "log_interval=5", "trainer.max_epochs=3"]
    whole = cli("nnlab.train", *sweep, f"hydra.sweep.dir={tmp_path / 'whole'}", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr[-2000:]
    take, taken = Population.training_step, []

    def stopping(self, group: int, batch_idx: int) -> None:
        take(self, group, batch_idx)
        taken.append(group)
        if len(taken) == stop_after:
            signal.raise_signal(signal.SIGTERM)  # Lightning's handler: a flag its loop reads after the batch
    monkeypatch.setattr(Population, "training_step", stopping)
    cut = cli("nnlab.train", *sweep, f"hydra.sweep.dir={tmp_path / 'cut'}", cwd=tmp_path)
    assert cut.returncode == 1 and "make sweep RESUME=" in cut.stderr, cut.stderr[-2000:]
    stopped = {json.loads((run / "metrics.json").read_text())["steps"] for name, run in runs(tmp_path / "cut").items()
               if "1e+20" not in name}
    assert stopped == {stop_after * 5}, stopped
    done = cli("nnlab.train", *sweep, f"hydra.sweep.dir={tmp_path / 'cut'}", cwd=tmp_path)
    assert done.returncode == 0 and "3 runs continue from where they stopped" in done.stdout, done.stderr[-2000:]
    for name, run in runs(tmp_path / "whole").items():
        a, b = (json.loads((r / "metrics.json").read_text()) for r in (run, tmp_path / "cut" / name))
        assert {k: v for k, v in a.items() if "/" in k or k in RESULTS} == \
               {k: v for k, v in b.items() if "/" in k or k in RESULTS}, name
        wa, wb = (torch.load(r / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
                  for r in (run, tmp_path / "cut" / name))
        assert all(torch.equal(wa[k], wb[k]) for k in wa), name
        assert repr(sorted(scalars(run).items())) == repr(sorted(scalars(tmp_path / "cut" / name).items())), name


def test_a_gpus_once_a_group_check_gives_every_steps_numbers(tmp_path, monkeypatch, scalars, cli):
    # On a GPU a population reads its finiteness once a group (module.once_a_group); here, forced on the
    # CPU, against every step's reads: a group in which members diverge (plain SGD and with momentum) is
    # put back and taken again, each stopping where every step's check stops it, and every member's
    # numbers, weights and TensorBoard scalars are the same bits.
    from nnlab.population import module
    sweep = ["--multirun", "hydra/launcher=population", "hydra.launcher.workers=1", "hydra.launcher.figures=none",
             "data=spiral", "model=mlp", "optimizer.lr=0.3,1e8,1e20", "optimizer.momentum=0,0.9", "seed=0",
             "data.steps_per_epoch=20", "log_interval=2", "trainer.max_epochs=2"]
    every = cli("nnlab.train", *sweep, f"hydra.sweep.dir={tmp_path / 'every'}", cwd=tmp_path)
    assert every.returncode == 0, every.stderr[-2000:]
    init, restore, replays = module.Population.__init__, module.restore_group, []

    def once_a_group(self, *args, **kwargs) -> None:
        init(self, *args, **kwargs)
        self.check_every_step = False
    monkeypatch.setattr(module.Population, "__init__", once_a_group)
    monkeypatch.setattr(module, "restore_group", lambda pop, saved: replays.append(1) or restore(pop, saved))
    grouped = cli("nnlab.train", *sweep, f"hydra.sweep.dir={tmp_path / 'grouped'}", cwd=tmp_path)
    assert grouped.returncode == 0 and replays, grouped.stderr[-2000:]
    ends = set()
    for name, run in runs(tmp_path / "every").items():
        a, b = (json.loads((r / "metrics.json").read_text()) for r in (run, tmp_path / "grouped" / name))
        assert {k: v for k, v in a.items() if "/" in k or k in ("status", "steps", "error")} == \
               {k: v for k, v in b.items() if "/" in k or k in ("status", "steps", "error")}, name
        wa, wb = (torch.load(r / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
                  for r in (run, tmp_path / "grouped" / name))
        assert all(torch.equal(wa[k], wb[k]) for k in wa), name
        assert repr(sorted(scalars(run).items())) == repr(sorted(scalars(tmp_path / "grouped" / name).items())), name
        ends.add((a["status"], a["steps"]))
    assert ("ok", 40) in ends and any(s == "diverged" and steps > 2 for s, steps in ends), ends  # past a group


def test_a_members_curves_are_in_tensorboard_while_its_population_trains(tmp_path, monkeypatch, scalars, cli):
    # As a run's: each member's points of an epoch are in its events file once the epoch's checkpoint is
    # saved (MemberRuns), read here as the next epoch starts; the rest when it ends, every step once.
    from nnlab.population.module import Population
    take, seen = Population.training_step, {}

    def reading(self, group: int, batch_idx: int) -> None:
        if batch_idx == 0 and self.trainer.current_epoch not in seen:
            seen[self.trainer.current_epoch] = {m.run_dir.name: scalars(m.run_dir) if (m.run_dir / "tensorboard").exists()
                                                else {} for m in self.members}
        take(self, group, batch_idx)
    monkeypatch.setattr(Population, "training_step", reading)
    done = cli("nnlab.train", "--multirun", "hydra/launcher=population", "hydra.launcher.workers=1", "data=spiral",
               "model=mlp", "optimizer.lr=0.3,1.0", "data.steps_per_epoch=20", "log_interval=5", "trainer.max_epochs=3",
               f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(seen) == [0, 1, 2] and all(not board for board in seen[0].values())  # nothing before any epoch
    for name, run in runs(tmp_path / "sweep").items():
        shown = seen[2][name]  # as epoch 3 starts: epochs 1 and 2
        assert [s for s, _ in shown["train/loss"]] == [5, 10, 15, 20, 25, 30, 35, 40], name
        assert [s for s, _ in shown["val/acc"]] == [20, 40] and shown["val/acc"] == scalars(run)["val/acc"][:2], name
        assert [s for s, _ in scalars(run)["train/loss"]] == list(range(5, 61, 5)), name  # at its end: every step once


def sweep_into(folder: Path, command: list[str], *extra: str) -> None:
    """The sweep `command` run into `folder` (again: its RESUME=), to a good end."""
    done = subprocess.run([*command, *extra, f"hydra.sweep.dir={folder}"], cwd=folder.parent, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]


def assert_results_equal(whole: Path, resumed: Path) -> None:
    """Every run of the `resumed` sweep ended ok with the numbers of its run in the `whole` one."""
    for name, run in runs(whole).items():
        a, b = (json.loads((r / "metrics.json").read_text()) for r in (run, runs(resumed)[name]))
        assert a["status"] == b["status"] == "ok"
        assert {k: v for k, v in a.items() if "/" in k or k in RESULTS} == \
               {k: v for k, v in b.items() if "/" in k or k in RESULTS}, name


@pytest.mark.slow
def test_a_population_in_two_processes_stops_and_continues_as_one_process_would(tmp_path):
    # hydra.launcher.workers=2: each process sets up and trains every other member. SIGTERM to the
    # sweep reaches both (through the sweep's process), each stops at its own step boundary, and
    # RESUME= ends at the numbers of the population trained whole in one process, bit for bit. Four
    # epochs: on a busy machine one process may step 1.5x as fast as the other, and must not be done
    # by the time the slower one is halfway into its second epoch.
    per_epoch, epochs = 600, 4
    sweep = ["--multirun", "hydra/launcher=population", "hydra.launcher.figures=none", "sweep=spiral_grid", "model=mlp",
             "optimizer.lr=0.03,0.1", "scheduler.gamma=0.9", "seed=0", f"trainer.max_epochs={epochs}", "data.n=200",
             "data.batch_size=1", "log_interval=50"]
    command = [sys.executable, "-m", "nnlab.train", *sweep]
    sweep_into(tmp_path / "whole", command, "hydra.launcher.workers=1")
    cut = tmp_path / "cut"
    proc = subprocess.Popen([*command, "hydra.launcher.workers=2", f"hydra.sweep.dir={cut}"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stop_halfway_into_epoch_2(proc, cut, "*/train.log", 2, f"epoch 1/{epochs}")  # both members
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1 and err.count("make sweep RESUME=cut") == 1, err[-2000:]  # one line, not one a process
    for run in runs(cut).values():
        cut_short = json.loads((run / "metrics.json").read_text())
        assert cut_short["status"] == "interrupted" and per_epoch < cut_short["steps"] < epochs * per_epoch
    sweep_into(cut, command, "hydra.launcher.workers=2")
    assert_results_equal(tmp_path / "whole", cut)


@pytest.mark.slow
def test_a_worker_that_dies_fails_its_own_members_only_and_resume_trains_them_again(tmp_path):
    # SIGKILL to one of a population's two worker processes as it trains (the kernel's out-of-memory
    # killer, say): its members fail, naming its exit code; the other worker's finish, its best member's
    # figures drawn without waiting for the dead one; the sweep ends non-zero listing the failed runs,
    # and RESUME= trains those again from their start, to the numbers of the sweep never killed.
    sweep = ["--multirun", "hydra/launcher=population", "hydra.launcher.figures=best", "sweep=spiral_grid",
             "model=mlp", "optimizer.lr=0.03,0.1", "scheduler.gamma=0.9", "seed=0,1", "trainer.max_epochs=4",
             "data.n=200", "data.batch_size=1", "log_interval=50"]
    command = [sys.executable, "-m", "nnlab.train", *sweep]
    sweep_into(tmp_path / "whole", command, "hydra.launcher.workers=1")
    cut = tmp_path / "cut"
    proc = subprocess.Popen([*command, "hydra.launcher.workers=2", f"hydra.sweep.dir={cut}"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while sum("first batch" in log.read_text() for log in cut.glob("*/train.log")) < 4:  # all 4 training
        assert proc.poll() is None and time.monotonic() < deadline, "the population ended before a worker was killed"
        time.sleep(0.01)
    workers = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    assert len(workers) == 2, workers
    os.kill(int(workers[0]), signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1 and "2 of 4 runs did not finish" in err, err[-2000:]
    statuses = {name: json.loads((run / "metrics.json").read_text()) for name, run in runs(cut).items()}
    failed = [name for name, m in statuses.items() if m["status"] == "failed"]
    assert len(failed) == 2 and all(statuses[n]["error"] == "its worker process ended with code -9" for n in failed)
    assert sorted(m["status"] for m in statuses.values()) == ["failed", "failed", "ok", "ok"]
    assert len(list(cut.glob("*/losses.png"))) == 1  # the survivors' best
    sweep_into(cut, command, "hydra.launcher.workers=2")
    assert_results_equal(tmp_path / "whole", cut)
    assert sorted(name for name, run in runs(cut).items() if (run / "attempt-1").is_dir()) == sorted(failed)


def test_jobs_the_population_does_not_train_run_one_by_one_and_it_says_why(tmp_path, cli):
    done = cli("nnlab.train", "--multirun", "hydra/launcher=population", "data=spiral", "model=mlp", "fused=false",
               "seed=0,1", "data.steps_per_epoch=2", "trainer.max_epochs=1", f"hydra.sweep.dir={tmp_path / 'sweep'}",
               cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "population: none of the 2 jobs trains in a population (the population does not train fused=false" in done.stdout
    for run in runs(tmp_path / "sweep").values():
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["status"] == "ok" and metrics["steps"] == 2 and "population" not in metrics


@pytest.mark.slow
def test_shuffled_minibatches_adam_and_a_per_step_schedule_are_bitwise_too(tmp_path):
    # each member draws its own data order from its own copy of torch's RNG, as its run would
    grid = ["data=spiral", "model=mlp", "model.init_std=0.01", "optimizer=adam", "optimizer.lr=0.01,0.1",
            "scheduler=onecycle", "scheduler.max_lr=0.5", "seed=0,1", "trainer.max_epochs=2", "data.batch_size=64",
            "data.steps_per_epoch=null", "log_interval=4"]
    for launcher in ("population", "basic"):
        done = subprocess.run([sys.executable, "-m", "nnlab.train", "--multirun", f"hydra/launcher={launcher}",
                               f"hydra.sweep.dir={tmp_path / launcher}", *grid], cwd=tmp_path, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
    population, basic = runs(tmp_path / "population"), runs(tmp_path / "basic")
    assert population.keys() == basic.keys() and len(population) == 4
    for name, run in population.items():
        a, b = (json.loads((r / "metrics.json").read_text()) for r in (run, basic[name]))
        assert a["population"]["size"] == 4 and a["steps"] == 2 * 5  # 300 points in batches of 64: 5 an epoch
        assert {k: v for k, v in a.items() if "/" in k or k in RESULTS} == \
               {k: v for k, v in b.items() if "/" in k or k in RESULTS}, name
        wa, wb = (torch.load(r / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"] for r in (run, basic[name]))
        assert all(torch.equal(wa[k], wb[k]) for k in wa), name


def test_plain_sgd_steps_of_the_whole_stack_are_torch_optims_own():
    # Stack.sgd_step (every plain SGD member's step in one op a parameter) against torch.optim.SGD's
    # step of each member alone, over learning rates and gradients of many magnitudes, for the whole
    # stack and for some of its rows (the others, stopped or diverged, left as they are)
    gen = torch.Generator().manual_seed(0)
    scale = lambda *shape: 10.0 ** torch.randint(-8, 4, shape, generator=gen).float()  # noqa: E731
    stack = Stack.__new__(Stack)  # the stacked leaves and gradients, without members around them
    stack.leaves = {"w": torch.randn(8, 5, 3, generator=gen).requires_grad_(), "b": torch.randn(8, 3, generator=gen).requires_grad_()}
    stack.device = torch.device("cpu")
    for rows in (list(range(8)), [0, 3, 5]):
        stack.grads = {n: torch.randn(t.shape, generator=gen) * scale(8, *[1] * (t.ndim - 1)) for n, t in stack.leaves.items()}
        lrs = (torch.rand(len(rows), generator=gen) * scale(len(rows))).tolist()
        expected = {n: t.detach().clone() for n, t in stack.leaves.items()}
        for r, lr in zip(rows, lrs):
            params = [torch.nn.Parameter(expected[n][r].clone()) for n in stack.leaves]
            for p, n in zip(params, stack.leaves):
                p.grad = stack.grads[n][r].clone()
            torch.optim.SGD(params, lr=lr, momentum=0.0).step()
            for p, n in zip(params, stack.leaves):
                expected[n][r] = p.detach()
        stack.sgd_step(list(zip(rows, lrs)))
        for n, t in stack.leaves.items():
            assert torch.equal(t.detach(), expected[n]), (n, rows)


@pytest.mark.slow
def test_mnist_members_are_their_separate_runs_within_tolerance(tiny_mnist, tmp_path, cli, scalars):
    # linear and mlp vmapped, the cnn stepped in turn; each against the same job under hydra/launcher=basic
    # (in process: the tiny idx files' MD5s are the monkeypatched ones). 100 training images in batches of
    # 10, 10 epochs: 100 steps, train/loss logged at every one. No threads=: a sweep's runs take one thread
    # under every launcher (a convolution's float sums differ between 1 and 2 threads, as any run's do).
    grid = ["sweep=mnist_grid", f"data.root={tiny_mnist}", "data.val_size=20", "data.batch_size=10", "log_interval=1",
            "trainer.max_epochs=10", "model=linear,mlp,cnn", "optimizer.lr=0.01,0.03", "scheduler.gamma=0.9", "seed=0,1"]
    for launcher in ("basic", "population"):
        done = cli("nnlab.train", "--multirun", f"hydra/launcher={launcher}", f"hydra.sweep.dir={tmp_path / launcher}",
                   *grid, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert "population: 12 jobs, 12 of them in 3 populations" in out
    assert "model=linear sweep=mnist_grid trainer.max_epochs=10: population 0: 4 runs differing in optimizer.lr, " \
           "seed, vmapped" in out and "population 2: 4 runs differing in optimizer.lr, seed, stepped in turn" in out
    population, basic = runs(tmp_path / "population"), runs(tmp_path / "basic")
    assert population.keys() == basic.keys() and len(population) == 12
    bitwise = []
    for name, run in population.items():
        a, b = (json.loads((r / "metrics.json").read_text()) for r in (run, basic[name]))
        assert a["status"] == b["status"] == "ok" and a["steps"] == b["steps"] == 100 and a["population"]["size"] == 4
        assert a["threads"] == b["threads"] == 1, name
        assert a["val/acc"] == pytest.approx(b["val/acc"], abs=0.002), name
        sa, sb = scalars(run), scalars(basic[name])
        assert sa.keys() == sb.keys() and [s for s, _ in sa["train/loss"]] == list(range(1, 101)), name
        assert [v for _, v in sa["train/loss"]] == pytest.approx([v for _, v in sb["train/loss"]], rel=1e-5), name
        wa, wb = (torch.load(r / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"] for r in (run, basic[name]))
        if all(torch.equal(wa[k], wb[k]) for k in wa) and sa == sb:
            bitwise.append(name)
    # The cnn's members run their separate runs' very ops: bitwise. vmapped linear and mlp members' matrix
    # products are batched ones (bmm), whose float sums may differ in the last bit (measured: within 3e-7).
    print(f"bitwise (weights and every scalar): {len(bitwise)} of 12: {bitwise}")
    assert [name for name in population if "model=cnn" in name] == [name for name in bitwise if "model=cnn" in name]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="a CUDA GPU (experiments/gpu.sh runs it)")
def test_gpu_members_are_their_separate_runs_within_tolerance(tiny_mnist, tmp_path, cli, scalars):
    # The jobs above on the GPU: each population vmapped there (the cnn's too), each job alone there under
    # hydra/launcher=basic. cuDNN picks its own kernels for a vmapped convolution (TF32 by default, as
    # for a run): close numbers, not the same bits. Prints the largest train/loss deviation found. The
    # diverging members (lr 1e20) stop where their runs stop, though the population reads its finiteness
    # once a group of 5 steps there (module.once_a_group).
    grid = ["sweep=mnist_grid", f"data.root={tiny_mnist}", "data.val_size=20", "data.batch_size=10", "log_interval=5",
            "trainer.max_epochs=10", "model=linear,mlp,cnn", "optimizer.lr=0.01,0.03,1e20", "scheduler.gamma=0.9",
            "seed=0,1", "trainer.accelerator=gpu"]
    for launcher, extra in (("basic", []), ("population", ["hydra.launcher.gpu=true"])):
        done = cli("nnlab.train", "--multirun", f"hydra/launcher={launcher}", f"hydra.sweep.dir={tmp_path / launcher}",
                   *grid, *extra, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
    assert "population 2: 6 runs differing in optimizer.lr, seed, vmapped, on cuda:0" in done.stdout
    population, basic = runs(tmp_path / "population"), runs(tmp_path / "basic")
    assert population.keys() == basic.keys() and len(population) == 18
    worst = 0.0
    for name, run in population.items():
        a, b = (json.loads((r / "metrics.json").read_text()) for r in (run, basic[name]))
        assert a["device"] == b["device"] == "cuda:0" and a["population"]["size"] == 6, name
        assert a["status"] == b["status"] and a["steps"] == b["steps"], name
        if "1e+20" in name:
            assert a["status"] == "diverged" and a["steps"] < 100, name
            continue
        assert a["status"] == "ok" and a["steps"] == 100, name
        assert a["val/acc"] == pytest.approx(b["val/acc"], abs=0.05), name  # a val image of 20
        la, lb = ([v for _, v in scalars(r)["train/loss"]] for r in (run, basic[name]))
        assert la == pytest.approx(lb, rel=1e-2), name
        worst = max(worst, max(abs(x - y) / abs(y) for x, y in zip(la, lb)))
    print(f"largest train/loss deviation, members against their runs on the GPU: {worst:.2e} relative")


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc settings")
def test_a_population_keeps_the_memory_a_step_frees_for_the_next():
    """keep_freed_memory: a 24 MiB block (a step's activations are MiBs) comes from the heap, not a
    mapping of its own that the kernel zero-fills on every step's first touch, and freeing it keeps
    it in the process. Fresh processes: the settings hold for the rest of a process."""
    probe = """
import ctypes, ctypes.util, sys, torch
from nnlab.population.loop import keep_freed_memory
class Info(ctypes.Structure):  # glibc's struct mallinfo2 (malloc.h): ten size_t fields
    _fields_ = [(k, ctypes.c_size_t) for k in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.mallinfo2.restype = Info
if sys.argv[1] == "kept":
    keep_freed_memory()
mapped = libc.mallinfo2().hblkhd
x = torch.empty(24 << 18)  # 24 MiB of float32
own_mapping = libc.mallinfo2().hblkhd - mapped >= 24 << 20
del x
print(own_mapping, libc.mallinfo2().fordblks >= 24 << 20)  # freed bytes the heap still holds
"""
    seen = {how: subprocess.run([sys.executable, "-c", probe, how], capture_output=True, text=True, timeout=120)
            for how in ("default", "kept")}
    assert all(r.returncode == 0 for r in seen.values()), [r.stderr[-2000:] for r in seen.values()]
    assert seen["default"].stdout.split() == ["True", "False"]  # glibc's defaults: mapped, handed back
    assert seen["kept"].stdout.split() == ["False", "True"]


@pytest.mark.slow
def test_a_population_killed_without_warning_resumes_from_its_members_last_epoch(tmp_path, scalars):
    # SIGKILL mid-sweep (the out-of-memory killer, a node gone without SIGTERM): no member wrote its
    # metrics.json, but each checkpointed its last epoch (hydra.launcher.checkpoint_every=1); RESUME=
    # continues every member from there to the numbers, weights and TensorBoard scalars of the sweep
    # never killed (points an epoch wrote to TensorBoard past the last checkpoint are hidden as the member
    # goes on: TensorBoard's purge_step; the test kills as the members' epoch 2 ends, where they are written).
    epochs = 4
    sweep = ["--multirun", "hydra/launcher=population", "hydra.launcher.figures=none", "hydra.launcher.workers=1",
             "sweep=spiral_grid", "model=mlp", "optimizer.lr=0.03,0.1", "scheduler.gamma=0.9", "seed=0,1",
             f"trainer.max_epochs={epochs}", "data.n=200", "data.batch_size=1", "log_interval=50"]
    command = [sys.executable, "-m", "nnlab.train", *sweep]
    sweep_into(tmp_path / "whole", command)
    cut = tmp_path / "cut"
    proc = subprocess.Popen([*command, f"hydra.sweep.dir={cut}"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while sum(f"epoch 2/{epochs}" in log.read_text() for log in cut.glob("*/train.log")) < 4:  # all past epoch 2
        assert proc.poll() is None and time.monotonic() < deadline, "the population ended before it was killed"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert not list(cut.glob("*/metrics.json"))  # killed: nothing recorded at the end
    done = subprocess.run([*command, f"hydra.sweep.dir={cut}"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    # every member goes on from its last checkpoint: all from epoch 2's, or, when the kill came as the
    # last of them was still writing it, that one from epoch 1's, as a population of its own
    going_on = re.findall(r"population \d+: (\d+) runs? continues? from where they stopped", done.stdout)
    assert sum(map(int, going_on)) == 4, done.stdout
    logs = [log.read_text() for log in cut.glob("*/train.log")]
    assert len(logs) == 4 and all("continues from step" in log and ", after 0 of its 600 steps)" in log for log in logs)
    assert_results_equal(tmp_path / "whole", cut)
    for name, run in runs(tmp_path / "whole").items():
        wa, wb = (torch.load(r / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"] for r in (run, cut / name))
        assert all(torch.equal(wa[k], wb[k]) for k in wa), name
        assert repr(sorted(scalars(run).items())) == repr(sorted(scalars(cut / name).items())), name


def test_members_write_to_every_chosen_logger_as_their_own_runs_do(tmp_path, cli):
    import mlflow
    grid = ["data=spiral", "model=mlp", "optimizer.lr=0.3,1.0", "seed=0", "data.steps_per_epoch=5",
            "trainer.max_epochs=2", "log_interval=5", "logger=[csv,mlflow,wandb]"]
    out = {}
    for launcher, extra in (("population", ["hydra.launcher.workers=1"]), ("basic", [])):
        done = cli("nnlab.train", "--multirun", f"hydra/launcher={launcher}", f"hydra.sweep.dir={tmp_path / launcher}",
                   *grid, *extra, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
        out[launcher] = done.stdout
    assert "population 0: 2 runs differing in optimizer.lr" in out["population"]  # trained together
    population, basic = runs(tmp_path / "population"), runs(tmp_path / "basic")
    assert sorted(population) == sorted(basic) and len(population) == 2

    def logged(run: Path) -> tuple:
        client = mlflow.MlflowClient(f"sqlite:///{run}/mlflow.db")
        (found,) = client.search_runs([client.get_experiment_by_name("nnlab").experiment_id])
        history = {k: [(p.step, p.value) for p in client.get_metric_history(found.info.run_id, k)]
                   for k in found.data.metrics}
        params = {k: v for k, v in found.data.params.items() if not k.startswith("config/")}  # config: paths differ
        (wandb,) = wandb_logged(run)
        assert wandb["run"][1] == run.name and not [p for p in run.rglob("*") if p.is_symlink()]
        wandb = ([{k: v for k, v in row.items() if k != "_step"} for row in wandb["history"]],
                 {k: v for k, v in wandb["config"].items() if k != "config"})  # _step: wandb's count of log calls
        return (run / "csv" / "metrics.csv").read_text(), history, params, wandb
    for name in population:
        assert logged(population[name]) == logged(basic[name]), name
