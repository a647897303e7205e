"""Studies (nnlab/search.py) end to end through the command, shrunk: the search space read from Hydra's
sweep syntax, pruned and finished trials with their statuses, the same trials asked again from the
same seed, RESUME, the best trial's rerun line, compare's study report, the dashboard, and every
refusal before any work."""
import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from conftest import fresh_process, in_process, one_line_refusal
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

import nnlab.train
from nnlab import search
from nnlab.config import ConfigError

# spiral_search shrunk to trials of 3 epochs of 5 full-batch steps; a learning rate range wide
# enough that some trials are hopeless after an epoch and are pruned. No bootstrap: spiral_search's
# would stop the first 4 trials of these studies of 3-5 at epoch 1.
TINY = ["sweep=spiral_search", "data.steps_per_epoch=5", "trainer.max_epochs=3", "log_interval=1",
        "optimizer.lr=tag(log, interval(0.01, 30.0))", "hydra.sweeper.bootstrap=0"]


def study_sweep(*overrides: str, cwd: Path):
    """The study's command, in this process."""
    return in_process("nnlab.train", "--multirun", *TINY, *overrides, cwd=cwd)


def load(folder: Path) -> optuna.Study:
    return optuna.load_study(study_name=search.STUDY, storage=search.open_storage(search.storage_file(folder)))


def folder_of(out: str) -> Path:
    return Path(re.search(r"sweep folder: (\S+)", out).group(1))


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    """One study of 5 trials; another from the same seed stopped after 3, then RESUMEd to 5."""
    cwd = tmp_path_factory.mktemp("studies")
    full = study_sweep("hydra.sweeper.n_trials=5", cwd=cwd)
    assert full.returncode == 0, full.stderr[-3000:]
    part = study_sweep("hydra.sweeper.n_trials=3", cwd=cwd)
    assert part.returncode == 0, part.stderr[-3000:]
    resumed_folder = cwd / folder_of(part.stdout)
    before = {p: p.stat().st_mtime_ns for p in resumed_folder.glob("*/metrics.json")}
    # as a sweep killed during its fourth trial leaves it: asked, never told
    load(resumed_folder).ask({"optimizer.lr": FloatDistribution(0.01, 30.0, log=True)})
    resumed = study_sweep("hydra.sweeper.n_trials=5", f"hydra.sweep.dir={resumed_folder}", cwd=cwd)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return cwd, full, cwd / folder_of(full.stdout), resumed_folder, before


def test_trials_end_pruned_or_finished_and_the_study_agrees_with_the_run_folders(studies):
    _, full, folder, _, _ = studies
    study = load(folder)
    assert len(study.trials) == 5 and (folder / "study.db").exists()
    runs = {Path(t.user_attrs["run_dir"]).name: t for t in study.trials}
    statuses = {}
    for name, trial in runs.items():
        run = folder / name
        metrics = json.loads((run / "metrics.json").read_text())
        statuses[name] = metrics["status"]
        assert trial.state.name.lower() == {"ok": "complete", "pruned": "pruned"}[metrics["status"]]
        assert (run / "checkpoints" / "last.ckpt").exists() and list((run / "tensorboard").glob("events.*"))
        reported, loss = trial.intermediate_values[metrics["epochs"]], metrics["val/loss"]
        # the last report is the last val/acc, ties broken by val/loss
        assert reported < metrics["val/acc"]
        assert reported == pytest.approx(metrics["val/acc"] - 1e-6 * loss / (1 + loss), rel=0, abs=1e-12)
        if metrics["status"] == "pruned":  # stopped after the epoch it was pruned at, before the last
            assert metrics["pruned_epoch"] == metrics["epochs"] == max(trial.intermediate_values) < 3
        else:
            assert metrics["epochs"] == 3 and trial.value == metrics["val/acc"]
    assert set(statuses.values()) == {"ok", "pruned"}, statuses
    assert "pruned" in full.stdout and "(5 runs:" in full.stdout  # pruned trials are not failures: exit 0


def test_best_yaml_names_the_best_finished_trial_and_its_command_reruns_it(studies):
    cwd, full, folder, _, _ = studies
    best = OmegaConf.load(folder / "best.yaml")
    done = [t for t in load(folder).trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert best["val/acc"] == max(t.value for t in done)
    assert best.command == f'make train ARGS="{" ".join(best.overrides)}"'
    assert f"rerun it with: {best.command}" in full.stdout
    rerun = in_process("nnlab.train", *best.overrides, cwd=cwd)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    run = cwd / re.search(r"run folder: (.+)", rerun.stderr + rerun.stdout).group(1).strip()
    assert json.loads((run / "metrics.json").read_text())["val/acc"] == best["val/acc"]  # same seed, same number


def test_the_same_seed_asks_the_same_trials_and_resume_runs_the_study_on(studies):
    _, _, full, resumed, before = studies
    a, b = load(full).trials, load(resumed).trials
    assert len(b) == 5 and [t.params for t in a[:3]] == [t.params for t in b[:3]]
    assert [t.state for t in a[:3]] == [t.state for t in b[:3]]
    # the trial left running was run (with its own parameters) and told, then one new trial asked
    assert b[3].state.name in ("COMPLETE", "PRUNED") and list(b[3].params) == ["optimizer.lr"]
    assert f"optimizer.lr={b[3].params['optimizer.lr']!r}" in Path(b[3].user_attrs["run_dir"]).name
    # the resumed sweep left the first three trials' folders alone and added two
    assert {p: p.stat().st_mtime_ns for p in before} == before and not list(resumed.glob("*/attempt-*"))
    assert len(list(resumed.glob("*/metrics.json"))) == 5


def test_compare_on_a_study_folder_lists_trials_importances_and_plots_the_history(studies):
    cwd, _, folder, _, _ = studies
    assert load(folder).metric_names == ["val/acc"]  # the dashboard's name for the objective
    done = in_process("nnlab.compare", str(folder), cwd=cwd)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"written: {folder}/study.md, optimization_history.png" in done.stdout
    study = (folder / "study.md").read_text()
    for t in load(folder).trials:
        assert f"| {t.number} | {t.state.name.lower()} |" in study
    assert "| optimizer.lr |" in study and "| scheduler.gamma |" in study  # importances of what was searched
    assert "## Study: 5 trials" in done.stdout
    assert (folder / "optimization_history.png").stat().st_size > 5_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_dashboard_serves_the_study_on_loopback(studies):
    cwd, _, folder, _, _ = studies
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "nnlab.search", str(folder), "--port", str(port)], cwd=cwd,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, studies_json = time.monotonic() + 120, None
        while studies_json is None and time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as r:
                    studies_json = json.loads(r.read())["study_summaries"]
            except OSError:
                time.sleep(0.5)
        assert studies_json is not None, "the dashboard never answered on 127.0.0.1"
        (summary,) = studies_json
        assert summary["study_name"] == search.STUDY
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{summary['study_id']}", timeout=10) as r:
            trials = json.loads(r.read())["trials"]
        states = {t.number: t.state.name.capitalize() for t in load(folder).trials}
        assert {t["number"]: t["state"] for t in trials} == states and "Pruned" in states.values()
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_search_space_is_read_in_hydras_sweep_syntax_and_the_command_line_wins():
    fixed, space = search.search_space(
        {"optimizer.lr": "tag(log, interval(0.03, 30))", "scheduler.gamma": "interval(0.5, 1.0)",
         "model.hidden": "range(50, 201, 50)", "optimizer": "choice(sgd, adam)", "l2": "0.001"},
        ["scheduler.gamma=0.9,1.0", "trainer.max_epochs=3", "+flag=choice(true,false)", "model.depth=choice(1,2)",
         "+name=choice('a b',c)"])
    assert fixed == ["l2=0.001", "trainer.max_epochs=3"]
    assert space == {"optimizer.lr": FloatDistribution(0.03, 30.0, log=True),
                     "scheduler.gamma": CategoricalDistribution([0.9, 1.0]),
                     "model.hidden": IntDistribution(50, 200, step=50),
                     "optimizer": CategoricalDistribution(["sgd", "adam"]),
                     "+flag": CategoricalDistribution([True, False]), "model.depth": CategoricalDistribution([1, 2]),
                     "+name": CategoricalDistribution(["a\\ b", "c"])}
    for choices in (space["scheduler.gamma"].choices, space["model.depth"].choices, space["+flag"].choices):
        assert [type(c) for c in choices] == [type(c) for c in choices[:1]] * 2 and not isinstance(choices[0], str)


def refusal(settings: dict | None = None, params: dict | None = None, cfg: dict | None = None) -> str:
    s = OmegaConf.merge(OmegaConf.load(search.Path(__file__).parents[1] / "conf/hydra/sweeper/optuna.yaml"),
                        {"batch": 1}, settings or {})
    with pytest.raises(ConfigError) as e:
        search.study_settings(s, OmegaConf.create(cfg or {}))
        fixed, space = search.search_space(params or {"optimizer.lr": "interval(0.1, 1.0)"}, [])
        search.make_sampler(s.sampler, s.seed, space)
    assert "\n" not in str(e.value)
    return str(e.value)


@pytest.mark.parametrize("settings, params, cfg, says", [
    ({"sampler": "bayes"}, None, None, "hydra.sweeper.sampler=bayes is not a sampler: use one of tpe"),
    ({"pruner": "asha"}, None, None, "hydra.sweeper.pruner=asha is not a pruner: use one of none"),
    ({"n_trials": 0}, None, None, "hydra.sweeper.n_trials=0 is invalid: it must be a whole number >= 1"),
    ({"batch": 0}, None, None, "hydra.sweeper.batch=0 is invalid: trials run at once, a whole number >= 1"),
    ({"bootstrap": -1}, None, None, "hydra.sweeper.bootstrap=-1 is invalid: trials that set a rung's bar"),
    ({"metric": "test/acc"}, None, None, "hydra.sweeper.metric=test/acc is never logged after a validation"),
    ({"pruner": "median"}, None, {"trainer": {"limit_val_batches": 0}}, "needs val/acc after every epoch"),
    (None, {"optimizer.lr": "interval(1.0, 0.1)"}, None, "optimizer.lr=interval(1.0, 0.1) is an empty interval"),
    (None, {"l2": "tag(log, interval(0, 0.01))"}, None, "is a log interval that includes 0"),
    (None, {"optimizer.lr": "interval(0.1)"}, None, "optimizer.lr=interval(0.1) is not a valid override"),
    ({"sampler": "grid"}, None, None, "sampler=grid cannot search an interval (optimizer.lr)"),
])
def test_bad_settings_are_refused_in_one_line(settings, params, cfg, says):
    assert says in refusal(settings, params, cfg)


def test_a_refused_study_writes_nothing(tmp_path):
    one_line_refusal(study_sweep("hydra.sweeper.pruner=asha", cwd=tmp_path), "hydra.sweeper.pruner=asha is not a pruner")
    assert not (tmp_path / "runs").exists()


def trial_jobs(folder: Path) -> dict[int, Path]:
    """{Hydra job number: run folder} over the run folders of a sweep; a job number is its trial's."""
    runs = [p for p in folder.iterdir() if (p / ".hydra" / "hydra.yaml").exists()]
    jobs = {OmegaConf.load(p / ".hydra" / "hydra.yaml").hydra.job.num: p for p in runs}
    assert len(jobs) == len(runs), "two run folders of one trial"
    return jobs


def assert_one_journal_of_told_trials(folder: Path, n_trials: int) -> optuna.Study:
    """The study is one journal holding exactly n_trials trials, each run once in its own folder and told."""
    assert (folder / "study.journal").exists() and not (folder / "study.db").exists()
    storage = search.open_storage(folder / "study.journal")
    assert [s.study_name for s in storage.get_all_studies()] == [search.STUDY]
    study = load(folder)
    assert [t.number for t in study.trials] == list(range(n_trials))
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in study.trials), [t.state for t in study.trials]
    jobs = trial_jobs(folder)
    assert sorted(jobs) == list(range(n_trials)) and not list(folder.glob("*/attempt-*"))
    for t in study.trials:  # reported from its own run: one value an epoch, as many as that run trained
        metrics = json.loads((jobs[t.number] / "metrics.json").read_text())
        assert Path(t.user_attrs["run_dir"]).name == jobs[t.number].name
        assert sorted(t.intermediate_values) == list(range(1, metrics["epochs"] + 1))
    return study


@pytest.mark.slow
def test_jobs_2_runs_two_trials_at_once_into_one_journal(tmp_path):
    # 3 trials, 2 at once: a batch of two, then one (never a fourth asked for a full batch)
    done = fresh_process("nnlab.train", "--multirun", *TINY, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "threads=1", "hydra.sweeper.n_trials=3",
                       cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    folder = tmp_path / folder_of(done.stdout)
    assert_one_journal_of_told_trials(folder, 3)
    assert "(0 of 3 trials done" in done.stdout and "best: trial" in done.stdout


@pytest.mark.slow
def test_launcher_processes_share_one_journal_as_slurm_array_tasks_do(tmp_path):
    """hydra/launcher=slurm and hydra/launcher=local are submitit's launchers, one submitting to sbatch,
    the other starting each task as a local process: here two tasks at a time, each its own process,
    write the one study."""
    done = fresh_process("nnlab.train", "--multirun", *TINY, "hydra/launcher=local", "hydra.launcher.max_parallel=2",
                         "hydra.sweeper.batch=2", "hydra.sweeper.n_trials=4", "threads=1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    folder = tmp_path / folder_of(done.stdout)
    assert_one_journal_of_told_trials(folder, 4)
    tasks = sorted((folder / ".submitit").glob("*/*_log.out"))
    assert len(tasks) == 4, tasks  # each trial ran as its own submitit task


def test_resume_asks_a_failed_trials_parameters_again_in_place_of_it(tmp_path, monkeypatch):
    # the study's second trial fails once, as a trial fails when its disk fills or its node goes away:
    # nothing in the study's settings is wrong, a RESUME can finish it
    real, trials = nnlab.train.train, []
    def train(cfg, *args):
        trials.append(cfg.run_dir)
        if len(trials) == 2:
            raise OSError("No space left on device")
        return real(cfg, *args)
    monkeypatch.setattr(nnlab.train, "train", train)
    first = study_sweep("hydra.sweeper.n_trials=3", cwd=tmp_path)
    assert first.returncode == 1, first.stderr[-3000:]
    monkeypatch.setattr(nnlab.train, "train", real)
    folder = tmp_path / folder_of(first.stdout)
    advice = f"make sweep RESUME={folder_of(first.stdout)} (and the same SWEEP/ARGS)"
    assert "1 of 3 runs did not finish" in first.stderr and advice in first.stderr
    trials = load(folder).trials
    assert [t.state.name for t in trials][1] == "FAIL" and len(trials) == 3

    again = study_sweep("hydra.sweeper.n_trials=3", f"hydra.sweep.dir={folder}", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "(2 of 3 trials done, 1 failed asked again;" in again.stdout
    study = load(folder)
    assert len(study.trials) == 4  # the failed one stays in the study's history, three results
    retry = study.trials[3]
    assert retry.user_attrs["retry_of"] == 1 and retry.params == trials[1].params
    assert retry.state.name in ("COMPLETE", "PRUNED") and retry.user_attrs["run_dir"] == trials[1].user_attrs["run_dir"]
    run = Path(retry.user_attrs["run_dir"])
    assert json.loads((run / "metrics.json").read_text())["status"] in ("ok", "pruned")
    assert [t.state for t in study.trials[:3]] == [t.state for t in trials]  # the others untouched
    assert "(3 runs: " in again.stdout and "did not finish" not in again.stderr

    # a RESUME of a study with nothing left to do runs nothing
    done = study_sweep("hydra.sweeper.n_trials=3", f"hydra.sweep.dir={folder}", cwd=tmp_path)
    assert done.returncode == 0 and "(3 of 3 trials done;" in done.stdout and len(load(folder).trials) == 4


@pytest.mark.parametrize("launcher", ["basic", "population"])
def test_mnist_search_composes_and_runs_its_first_trials(launcher, tiny_mnist, tmp_path):
    """conf/sweep/mnist_search.yaml as written, in process on the tiny idx files: 3 trials of 2 epochs of
    5 batches, each with the optimizer the study chose, its lr and gamma in the file's intervals; through
    the population launcher (make sweep's) the 3 trials are one batch, a population for each optimizer."""
    done = in_process("nnlab.train", "--multirun", "sweep=mnist_search", f"data.root={tiny_mnist}", "data.val_size=20",
                      "data.batch_size=20", "trainer.max_epochs=2", "hydra.sweeper.n_trials=3",
                      f"hydra/launcher={launcher}", "hydra.sweep.dir=runs/sweeps/mnist_search", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert ("population: 3 jobs" in done.stdout) == (launcher == "population"), done.stdout[-2000:]
    folder = tmp_path / "runs" / "sweeps" / "mnist_search"
    study = load(folder)
    assert len(study.trials) == 3 and all(t.state.name in ("COMPLETE", "PRUNED") for t in study.trials)
    targets = {"sgd": "torch.optim.SGD", "adam": "torch.optim.Adam"}
    for t in study.trials:
        assert 1e-4 <= t.params["optimizer.lr"] <= 1.0 and 0.5 <= t.params["scheduler.gamma"] <= 1.0
        run = Path(t.user_attrs["run_dir"])
        cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
        assert cfg.optimizer._target_ == targets[t.params["optimizer"]] and cfg.optimizer.lr == t.params["optimizer.lr"]
        assert cfg.model._target_.endswith("CNN") and cfg.data.root == str(tiny_mnist)
        assert json.loads((run / "metrics.json").read_text())["steps"] in (5, 10)
    best = OmegaConf.load(folder / "best.yaml")  # the first trial always finishes: a rung needs rivals
    assert "sweep=mnist_search" in best.overrides and best.command.startswith("make train")


def test_a_study_whose_trials_are_all_pruned_runs_its_leader_on_to_the_end(tmp_path):
    # a bootstrap of 4 stops the first 4 trials at epoch 1: a study of 4 would finish none. Its best
    # trial at epoch 1 goes on from that epoch's checkpoint as trial 4, unpruned, to a best.yaml.
    done = study_sweep("hydra.sweeper.n_trials=4", "hydra.sweeper.bootstrap=4", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    folder = tmp_path / folder_of(done.stdout)
    trials = load(folder).trials
    assert [t.state.name for t in trials] == ["PRUNED"] * 4 + ["COMPLETE"]
    leader = max(trials[:4], key=lambda t: t.intermediate_values[1])
    assert trials[4].params == leader.params and trials[4].user_attrs["finishes"] == leader.number
    assert f"no trial finished; trial {leader.number}, the best at the last epoch any trial reached (epoch 1)" \
        in done.stdout
    assert sorted(trials[4].intermediate_values) == [2, 3]  # it went on from epoch 1, not from scratch
    run = Path(trials[4].user_attrs["run_dir"])
    metrics = json.loads((run / "metrics.json").read_text())
    assert run == Path(leader.user_attrs["run_dir"]) and metrics["status"] == "ok" and metrics["epochs"] == 3
    best = OmegaConf.load(folder / "best.yaml")
    assert best.trial == 4 and best["val/acc"] == metrics["val/acc"]
    # going on from the pruned epoch's checkpoint is exact: the same numbers as the run never pruned
    rerun = in_process("nnlab.train", *best.overrides, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    again = tmp_path / re.search(r"run folder: (.+)", rerun.stderr + rerun.stdout).group(1).strip()
    assert json.loads((again / "metrics.json").read_text())["val/acc"] == metrics["val/acc"]


def test_a_grid_study_ends_when_every_point_is_tried(tmp_path):
    done = study_sweep("hydra.sweeper.sampler=grid", "optimizer.lr=choice(0.3,3.0)", "scheduler.gamma=choice(0.5,1)",
                       "l2=0.0001", "hydra.sweeper.n_trials=6", "hydra.sweeper.pruner=none", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "the grid has 4 points, fewer than n_trials=6: it ends when each is tried" in done.stdout
    trials = load(tmp_path / folder_of(done.stdout)).trials
    points = {(t.params["optimizer.lr"], t.params["scheduler.gamma"]) for t in trials}
    assert points == {(0.3, 0.5), (0.3, 1), (3.0, 0.5), (3.0, 1)} and len(trials) == 4  # each once, typed
    assert all(t.state.name == "COMPLETE" for t in trials) and (tmp_path / folder_of(done.stdout) / "best.yaml").exists()


def test_a_batch_of_trials_trains_as_one_population_each_trial_its_own_run(tmp_path):
    # hydra.sweeper.batch=4 through the population launcher: the 4 trials of a batch train together, in
    # one process (hydra.launcher.workers=2 notwithstanding: the pruner's order of reports stays the
    # same), each still exactly its own run (no pruner: the basic launcher gives every trial the same value)
    values, out = {}, {}
    for launcher in ("population", "basic"):
        done = study_sweep(f"hydra/launcher={launcher}", "hydra.sweeper.pruner=none", "hydra.sweeper.n_trials=4",
                           "hydra.sweeper.batch=4", f"hydra.sweep.dir={tmp_path / launcher}",
                           *(["hydra.launcher.workers=2"] if launcher == "population" else []), cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        values[launcher] = [(t.params, t.value) for t in load(tmp_path / launcher).trials]
        out[launcher] = done.stdout
    assert "population 0: 4 runs differing in l2, optimizer.lr, scheduler.gamma, vmapped\n" in out["population"]
    assert values["population"] == values["basic"] and len(values["basic"]) == 4


def test_a_study_prunes_members_of_its_population_and_the_rest_train_on(tmp_path):
    done = study_sweep("hydra/launcher=population", "hydra.launcher.workers=1", "hydra.sweeper.n_trials=6",
                       "hydra.sweeper.batch=6", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "population 0: 6 runs differing in l2, optimizer.lr, scheduler.gamma, vmapped" in done.stdout
    folder = tmp_path / folder_of(done.stdout)
    states = {t.user_attrs["run_dir"]: t for t in load(folder).trials}
    assert len(states) == 6
    pruned = 0
    for run_dir, trial in states.items():
        metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
        assert metrics["population"]["size"] == 6
        if trial.state == optuna.trial.TrialState.PRUNED:
            pruned += 1
            epoch = metrics["pruned_epoch"]
            assert metrics["status"] == "pruned" and metrics["steps"] == 5 * epoch < 15
            assert max(trial.intermediate_values) == epoch
        else:
            assert trial.state == optuna.trial.TrialState.COMPLETE and metrics["status"] == "ok"
            assert metrics["steps"] == 15 and sorted(trial.intermediate_values) == [1, 2, 3]
    assert 1 <= pruned < 6


def test_a_leader_pruned_in_a_population_trains_again_from_its_start_to_the_end(tmp_path):
    # all 4 trials of one population pruned at epoch 1 (bootstrap 4): the leader's last.ckpt is its
    # member's, which Lightning cannot continue, so the leader's trial trains again from its start,
    # unpruned, to the numbers of the same run never pruned; its pruned attempt is kept
    done = study_sweep("hydra/launcher=population", "hydra.launcher.workers=1", "hydra.sweeper.n_trials=4",
                       "hydra.sweeper.batch=4", "hydra.sweeper.bootstrap=4", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    folder = tmp_path / folder_of(done.stdout)
    trials = load(folder).trials
    assert [t.state.name for t in trials] == ["PRUNED"] * 4 + ["COMPLETE"]
    assert sorted(trials[4].intermediate_values) == [1, 2, 3]  # from its start
    run = Path(trials[4].user_attrs["run_dir"])
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["epochs"] == 3 and (run / "attempt-1" / "metrics.json").exists()
    rerun = in_process("nnlab.train", *OmegaConf.load(folder / "best.yaml").overrides, cwd=tmp_path)
    again = tmp_path / re.search(r"run folder: (.+)", rerun.stderr + rerun.stdout).group(1).strip()
    assert json.loads((again / "metrics.json").read_text())["val/acc"] == metrics["val/acc"]
