"""Sweeps end to end through the command: folders that never collide, identical numbers when repeated,
failures recorded without stopping the sweep, RESUME, compare's summary, and what TensorBoard reads."""
import csv
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import fresh_process, in_process, make_dry_run, one_line_refusal
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

SHORT, EPOCHS = "data.steps_per_epoch=5,log_interval=1", "trainer.max_epochs=2"  # in every run's name
# The spiral grid, shrunk: 2 models x 2 lr x 2 gamma x 2 seeds = 16 runs of 10 full-batch steps.
TINY_GRID = ["sweep=spiral_grid", "model=linear,mlp", "optimizer.lr=0.3,1.0", "scheduler.gamma=0.9,1.0",
             "seed=0,1", "data.steps_per_epoch=5", "trainer.max_epochs=2", "log_interval=1"]


def sweep(*overrides: str, cwd: Path):
    """`python -m nnlab.train --multirun *overrides`, in this process."""
    return in_process("nnlab.train", "--multirun", *overrides, cwd=cwd)


def sweep_folder(out: str) -> Path:
    return Path(re.search(r"sweep folder: (\S+)", out).group(1))


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory) -> Path:
    """The tiny grid through the population launcher (in this process), compared: its sweep folder."""
    cwd = tmp_path_factory.mktemp("sweep")
    done = sweep(*TINY_GRID, "hydra/launcher=population", "hydra.launcher.workers=1", cwd=cwd)
    assert done.returncode == 0, done.stderr[-3000:]
    (cwd / "out.txt").write_text(done.stdout)  # what the console showed
    folder = cwd / sweep_folder(done.stdout)
    compared = in_process("nnlab.compare", str(folder), cwd=cwd)
    assert compared.returncode == 0, compared.stderr[-2000:]
    assert "| spiral | mlp |" in compared.stdout  # the best-per-architecture table is printed
    return folder


@pytest.mark.slow
def test_two_sweeps_started_together_get_their_own_folders_and_identical_numbers(tmp_path):
    # Both ask for the same folder name, as two sweeps started in the same second do: two commands at once
    same = "hydra.sweep.dir=${nnlab.claim:null,runs/sweeps/same-second}"
    cmd = [sys.executable, "-m", "nnlab.train", "--multirun", *TINY_GRID, same]
    procs = [subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    a, b = [tmp_path / sweep_folder(out) for out, _ in outs]
    assert sorted([a.name, b.name]) == ["same-second", "same-second_2"]
    for folder in (a, b):
        runs = sorted(d.name for d in folder.iterdir() if d.is_dir())
        assert len(runs) == 16 and f"{SHORT},model=mlp,optimizer.lr=1.0,scheduler.gamma=0.9,seed=1,{EPOCHS}" in runs
        done = fresh_process("nnlab.compare", str(folder), cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
    assert (a / "summary.csv").read_bytes() == (b / "summary.csv").read_bytes()


def test_the_summary_has_a_row_a_setting_and_its_figures(tiny_sweep):
    rows = list(csv.DictReader(open(tiny_sweep / "summary.csv")))
    assert len(rows) == 8 and {r["n"] for r in rows} == {"2"} and {r["statuses"] for r in rows} == {"ok:2"}
    for png in ("val_acc_vs_lr.png", "best_curves.png"):
        assert (tiny_sweep / png).stat().st_size > 10_000


def test_summary_means_are_the_runs_means_and_best_is_chosen_on_validation(tiny_sweep):
    folder = tiny_sweep
    rows = {r["setting"]: r for r in csv.DictReader(open(folder / "summary.csv"))}
    setting = f"{SHORT},model=linear,optimizer.lr=0.3,scheduler.gamma=0.9,{EPOCHS}"
    accs = [json.loads((folder / f"{setting.removesuffix(EPOCHS)}seed={s},{EPOCHS}" / "metrics.json").read_text())["test/acc"]
            for s in (0, 1)]
    assert float(rows[setting]["test_acc_mean"]) == pytest.approx(sum(accs) / 2, abs=1e-6)
    best_linear = max((r for r in rows.values() if r["model"] == "linear"), key=lambda r: float(r["val_acc_mean"]))
    summary = (folder / "summary.md").read_text()
    assert f"| spiral | linear | {best_linear['setting']} | 2 |" in summary


def hparams_of(events: EventAccumulator) -> tuple[dict, set]:
    """The run's HPARAMS as TensorBoard's hparams plugin reads them: {name: value}, the kinds of its records."""
    data = [plugin_data_pb2.HParamsPluginData.FromString(c) for c in events.PluginTagToContent("hparams").values()]
    start = next(d.session_start_info for d in data if d.HasField("session_start_info"))
    params = {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}
    return params, {d.WhichOneof("data") for d in data}


def test_every_run_carries_its_hparams_and_final_metrics_for_tensorboard(tiny_sweep):
    folder = tiny_sweep
    runs = [d for d in folder.iterdir() if d.is_dir()]
    assert len(runs) == 16
    for run in runs:
        events = EventAccumulator(str(run / "tensorboard"))
        events.Reload()
        params, records = hparams_of(events)
        cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
        assert params["lr"] == cfg.optimizer.lr and params["gamma"] == cfg.scheduler.gamma, run
        assert params["seed"] == cfg.seed and params["model"] == cfg.model._target_.rsplit(".")[-1].lower()
        assert params["batch_size"] == "full" and params["epochs"] == 2
        # a session's start and end, and no experiment summary: TensorBoard builds that from all the runs
        assert records == {"session_start_info", "session_end_info"}
        metrics = json.loads((run / "metrics.json").read_text())
        final = events.Scalars("hp/test_acc")[-1]
        assert final.value == pytest.approx(metrics["test/acc"]) and final.step == metrics["steps"] == 10
        assert events.Scalars("hp/val_loss")[-1].value == pytest.approx(metrics["val/loss"])
        val = events.Scalars("val/acc")  # one point per epoch, at its last step
        assert [p.step for p in val] == [5, 10] and val[-1].value == pytest.approx(metrics["val/acc"])
        assert [p.step for p in events.Scalars("lr")] == [p.step for p in events.Scalars("train/loss")]


def test_diverged_and_crashed_runs_do_not_stop_the_sweep_and_resume_reruns_only_those(tmp_path):
    # lr 1e30 overflows (diverged: a result); a validation interval past the epoch's 5 batches makes
    # Lightning raise inside fit (a crash the config check cannot know of)
    grid = ["data=spiral", "model=mlp", "optimizer.lr=0.3,1e30", "+trainer.val_check_interval=1.0,1000",
            "data.steps_per_epoch=5", "trainer.max_epochs=2"]
    def run(lr: str, interval: str) -> str:  # the run's folder: its overrides, sorted
        return ",".join(sorted(["data=spiral", "model=mlp", f"optimizer.lr={lr}", f"+trainer.val_check_interval={interval}",
                                "data.steps_per_epoch=5", "trainer.max_epochs=2"]))
    first = sweep(*grid, cwd=tmp_path)
    assert first.returncode == 1 and "2 of 4 runs did not finish" in first.stderr
    folder = tmp_path / sweep_folder(first.stdout)
    status = {d.name: json.loads((d / "metrics.json").read_text()) for d in folder.iterdir() if d.is_dir()}
    ok, diverged = status[run("0.3", "1.0")], status[run("1e+30", "1.0")]
    assert ok["status"] == "ok" and diverged["status"] == "diverged" and "at step" in diverged["error"]
    crashed = status[run("0.3", "1000")]
    assert crashed["status"] == "failed" and "must be less than or equal to" in crashed["error"]
    assert "must be less than or equal to" in (folder / run("0.3", "1000") / "train.log").read_text()

    # RESUME: the finished two are skipped untouched, the failed two run again, a deleted one is redone
    stamps = {n: (folder / n / "metrics.json").stat().st_mtime_ns for n in status}
    (folder / run("0.3", "1.0") / "metrics.json").unlink()
    again = sweep(*grid, f"hydra.sweep.dir={folder}", cwd=tmp_path)
    assert again.returncode == 1 and "diverged already, skipped" in (folder / run("1e+30", "1.0") / "train.log").read_text()
    assert (folder / run("1e+30", "1.0") / "metrics.json").stat().st_mtime_ns == \
        stamps[run("1e+30", "1.0")]
    redone = json.loads((folder / run("0.3", "1.0") / "metrics.json").read_text())
    assert redone["status"] == "ok" and redone["test/acc"] == ok["test/acc"]
    retried = folder / run("0.3", "1000")
    assert (retried / "attempt-1" / "metrics.json").exists()  # the first attempt kept, not overwritten
    assert json.loads((retried / "metrics.json").read_text())["status"] == "failed"


def test_make_sweep_jobs_gives_each_job_its_thread_share():
    make = make_dry_run("sweep", "SWEEP=spiral_grid", "JOBS=2", "CORES=4")
    assert "hydra/launcher=joblib hydra.launcher.n_jobs=2" in make.stdout and "threads=2" in make.stdout


@pytest.mark.slow
def test_jobs_run_side_by_side_through_joblib_each_with_its_thread_share(tmp_path):
    done = fresh_process("nnlab.train", "--multirun", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "threads=1", "data=spiral",
                         "model=linear,mlp", "data.steps_per_epoch=5", "trainer.max_epochs=2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    folder = tmp_path / sweep_folder(done.stdout)
    metrics = [json.loads(p.read_text()) for p in folder.glob("*/metrics.json")]
    assert len(metrics) == 2 and all(m["status"] == "ok" and m["threads"] == 1 for m in metrics)


def make_sweep_line(*variables: str) -> list[str]:
    """The overrides `make sweep VARIABLES...` hands to `python -m nnlab.train --multirun`."""
    done = make_dry_run("sweep", *variables)
    assert done.returncode == 0, done.stderr
    line, = (x.split() for x in done.stdout.replace("\\\n", " ").splitlines() if "--multirun" in x)
    return line[line.index("--multirun") + 1:]


def test_make_sweep_runs_the_default_grid_alone_exactly_args_without_sweep_and_args_on_top_of_sweep(tmp_path):
    population = "hydra/launcher=population"  # the default launcher, unless JOBS or ARGS name another
    assert make_sweep_line() == ["sweep=mnist_grid", population]
    (tmp_path / "multirun.yaml").touch()  # a sweep folder, as RESUME= must name
    assert make_sweep_line("JOBS=1", f"RESUME={tmp_path}") == ["sweep=mnist_grid", f"hydra.sweep.dir={tmp_path}",
                                                               population]
    assert make_sweep_line("ARGS=experiment=spiral_mlp seed=0,1,2") == [population, "experiment=spiral_mlp", "seed=0,1,2"]
    assert make_sweep_line("SWEEP=spiral_grid", "ARGS=seed=0") == ["sweep=spiral_grid", population, "seed=0"]
    assert make_sweep_line("SWEEP=spiral_grid", "ARGS=hydra/launcher=basic") == ["sweep=spiral_grid", "hydra/launcher=basic"]
    # choosing the launcher alone is no grid of its own: the default grid, through that launcher
    assert make_sweep_line("ARGS=hydra/launcher=basic") == ["sweep=mnist_grid", "hydra/launcher=basic"]
    assert make_sweep_line("ARGS=hydra.launcher.workers=1") == ["sweep=mnist_grid", population, "hydra.launcher.workers=1"]
    # where it goes and on how many threads choose no runs: the default grid still runs
    assert make_sweep_line("ARGS=hydra.sweep.dir=/tmp/s threads=1") == ["sweep=mnist_grid", population,
                                                                       "hydra.sweep.dir=/tmp/s", "threads=1"]
    assert population not in make_sweep_line("SWEEP=spiral_grid", "JOBS=2")


def test_job_count_is_the_grid_with_the_command_line_on_top():
    from nnlab.sweep import jobs
    grid = {"model": "linear,mlp", "optimizer.lr": "0.3,1.0,3.0,10.0", "scheduler.gamma": "0.7,0.9,1.0", "seed": "0,1,2"}
    assert len(jobs(grid, ["sweep=spiral_grid"])) == 72
    assert len(jobs(grid, ["sweep=spiral_grid", "seed=0", "trainer.max_epochs=2"])) == 24  # seed replaced, not added
    assert jobs({}, ["experiment=spiral_mlp", "seed=0,1,2"]) == [["experiment=spiral_mlp", f"seed={s}"] for s in range(3)]
    assert len(jobs({}, ["model=linear,mlp", "seed=range(0,3)"])) == 6


def test_a_plain_multirun_runs_exactly_its_jobs_of_the_experiment_and_says_so_first(tmp_path):
    done = sweep("experiment=spiral_mlp", "seed=0,1,2", "data.steps_per_epoch=5", "trainer.max_epochs=1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("sweep: 3 jobs from experiment=spiral_mlp seed=0,1,2")
    runs = sorted((tmp_path / sweep_folder(done.stdout)).glob("*/.hydra/config.yaml"))
    assert len(runs) == 3
    for saved in runs:  # the experiment's own settings, only the seed swept
        cfg = OmegaConf.load(saved)
        assert cfg.model.hidden == 100 and cfg.optimizer.lr == 1.0 and cfg.l2 == 0.001 and cfg.log_interval == 100
        assert cfg.data._target_.endswith("SpiralDataModule") and cfg.scheduler.factor == 1.0  # constant lr


def test_an_experiment_wins_over_the_settings_a_grid_fixes(make_cfg):
    cfg = make_cfg("sweep=spiral_grid", "experiment=spiral_mlp")
    assert cfg.log_interval == 100 and cfg.data.steps_per_epoch == 1000  # spiral_mlp's, not the grid's 10 and 100
    assert cfg.model.init_std == 0.01 and cfg.l2 == 0.001


def test_a_grid_sweeping_what_an_experiment_sets_is_refused_before_any_folder(tmp_path):
    done = sweep("sweep=spiral_grid", "experiment=spiral_mlp", cwd=tmp_path)
    one_line_refusal(done, "sweep=spiral_grid sweeps model, optimizer.lr, scheduler.gamma, which experiment=spiral_mlp "
                           'sets: sweep what you want in ARGS alone, e.g. make sweep ARGS="experiment=spiral_mlp')
    assert not (tmp_path / "runs").exists()


def test_resume_of_a_folder_that_is_not_there_is_refused_in_one_line(tmp_path):
    for target, variables, says in (("sweep", [f"RESUME={tmp_path / 'nope'}"], "is not a sweep folder"),
                                     ("train", [f"RESUME={tmp_path / 'nope'}"], "is not a run folder")):
        done = make_dry_run(target, *variables)
        (line,) = done.stderr.strip().splitlines()
        assert done.returncode != 0 and f"RESUME={tmp_path / 'nope'} {says}" in line
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "multirun.yaml").write_text("hydra: {}\n")  # what a sweep writes as it starts
    assert make_dry_run("sweep", f"RESUME={tmp_path / 'sweep'}").returncode == 0


def test_a_sweeps_console_holds_its_progress_not_its_runs_lines(tiny_sweep):
    # tiny_sweep's 16 runs, its console not a terminal: a plain progress line at each tenth and the last,
    # the runs' own lines in their train.log
    out = (tiny_sweep.parent.parent.parent / "out.txt").read_text()
    progress = [line for line in out.splitlines() if " runs ended" in line]
    assert progress and progress[-1].startswith("sweep: 16/16 runs ended, ") and len(progress) <= 11
    assert "status: ok" not in out and "epoch 1/2" not in out and len(out.splitlines()) <= 30
    assert all("status: ok" in (run / "train.log").read_text() for run in tiny_sweep.glob("*,seed=*"))


@pytest.mark.slow
def test_a_72_run_sweep_on_a_terminal_shows_one_live_progress_line_and_at_most_30_lines(tmp_path):
    import pty
    main, child = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "nnlab.train", "--multirun", "sweep=spiral_grid",
                             "hydra/launcher=population", "hydra.sweep.dir=sweep"], cwd=tmp_path, stdin=child,
                            stdout=child, stderr=child)
    os.close(child)
    chunks = []
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:  # the terminal closed: the sweep ended
            break
        if not chunk:
            break
        chunks.append(chunk)
    assert proc.wait(timeout=600) == 0
    out = b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")
    lines = out.split("\n")
    shown = [line.rsplit("\r", 1)[-1] for line in lines]  # what a line reads once its \r rewrites are done
    live = [line for line, last in zip(lines, shown) if "runs ended" in last]
    assert len(live) == 1 and live[0].count("\r") >= 2, out[-3000:]  # one line, rewritten in place
    assert "left]" in live[0] and "72/72 runs ended" in live[0]  # with the time left, to the end
    assert len([last for last in shown if last.strip()]) <= 30, out[-3000:]
    assert "population: 72 jobs" in out and not any("population" in last for last in live)  # above the line
    assert "(72 runs: 72 ok)" in out


@pytest.mark.slow
def test_tensorboard_names_runs_by_what_differs_and_shows_the_hparams_that_differ_first(tiny_sweep):
    # TensorBoard itself, as make tensorboard starts it, asked for its runs and the HPARAMS tab's columns
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "nnlab.board", str(tiny_sweep.parent), "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, experiment = time.monotonic() + 120, None
        while experiment is None and time.monotonic() < deadline and server.poll() is None:
            ask = urllib.request.Request(f"http://127.0.0.1:{port}/data/plugin/hparams/experiment",
                                         data=b'{"experimentName": ""}', headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(ask, timeout=5) as r:
                    experiment = json.loads(r.read()) or None
                    experiment = experiment if experiment and experiment.get("hparamInfos") else None
            except OSError:
                pass
            time.sleep(0.5)
        assert experiment is not None, "TensorBoard never showed the sweep's hparams"
        columns = [(h["name"], h.get("differs", False)) for h in experiment["hparamInfos"]]
        assert columns[:4] == [("gamma", True), ("lr", True), ("model", True), ("seed", True)], columns
        assert {name for name, differs in columns[4:]} >= {"batch_size", "data", "epochs"} and \
            not any(differs for _, differs in columns[4:])
        assert {"hp/val_acc", "hp/test_acc"} <= {m["name"]["tag"] for m in experiment["metricInfos"]}
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/runs", timeout=10) as r:
            names = json.loads(r.read())
        # 16 runs: 2 models x 2 lr x 2 gamma x 2 seeds, told apart within their first 30 characters
        assert len(names) == len({n[:30] for n in names}) == 16, names
        assert f"linear lr=0.3 gamma=0.9 seed=0 ({tiny_sweep.name})" in names, names
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_glob_sweeps_a_groups_options_and_its_mistakes_are_one_line(tmp_path):
    done = sweep("experiment=glob(spiral_*)", "trainer.max_epochs=1", "hydra/launcher=population", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "sweep: 2 jobs from experiment=glob(spiral_*)" in done.stdout
    runs = sorted(p.parent.name for p in (tmp_path / sweep_folder(done.stdout)).glob("*/metrics.json"))
    assert runs == ["experiment=spiral_linear,trainer.max_epochs=1", "experiment=spiral_mlp,trainer.max_epochs=1"]
    # the sweep's base config is composed without the swept experiments (Hydra's multirun): data=mnist,
    # which has no steps_per_epoch; ++ sets it in every job
    one_line_refusal(sweep("experiment=glob(spiral_*)", "data.steps_per_epoch=2", cwd=tmp_path),
                     "data.steps_per_epoch is a key of every job, but not of the sweep's base config (Hydra composes "
                     "it first, with the swept groups' defaults): write ++data.steps_per_epoch=..., which sets it")
    done = sweep("experiment=glob(spiral_*)", "++data.steps_per_epoch=2", "trainer.max_epochs=1", cwd=tmp_path)
    assert done.returncode == 0 and "(2 runs: 2 ok)" in done.stdout, done.stderr[-2000:]
    one_line_refusal(sweep("experiment=glob(spiral_*)", "model.hidden=10", cwd=tmp_path),
                     "model.hidden is a key of some of the sweep's jobs only: experiment=spiral_linear has none")
    before = sorted((tmp_path / "runs" / "sweeps").iterdir())
    one_line_refusal(sweep("experiment=glob(nomatch_*)", cwd=tmp_path),
                     "experiment=glob(nomatch_*) sweeps no value: it matches no option of experiment, which is one "
                     "of mnist_cnn_fast, mnist_mlp")
    assert sorted((tmp_path / "runs" / "sweeps").iterdir()) == before  # no sweep folder for no job
