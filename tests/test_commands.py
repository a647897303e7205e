"""One end-to-end smoke test of each command, in a fresh process as a person runs it (the others are in
the files of their topics: nnlab.train's run in test_train.py, nnlab.evaluate there too, nnlab.compare
in test_compare.py, nnlab.data in test_mnist_raw.py). Everything else about a command is tested in
this process (the `cli` fixture), where it costs no imports."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import fresh_process, one_line_refusal
from test_compare import fake_run

TINY = ["data=spiral", "data.steps_per_epoch=2", "trainer.max_epochs=1", "scheduler=none"]


def test_a_sweep_trains_its_populations_and_reports_the_runs(tmp_path):
    done = fresh_process("nnlab.train", "--multirun", "hydra/launcher=population", *TINY, "model=linear,mlp",
                         "seed=0,1", "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "population: 4 jobs, 4 of them in 2 populations" in done.stdout and "(4 runs: 4 ok)" in done.stdout
    assert len(list((tmp_path / "sweep").glob("*/metrics.json"))) == 4


def test_confirm_reruns_the_chosen_setting_on_fresh_seeds(tmp_path):
    for seed in (0, 1):  # a finished sweep of one setting; confirm runs it again on seeds 4 and 5
        fake_run(tmp_path / "sweep", "mlp", 1.0, 0.9, seed, val=0.9)
    done = fresh_process("nnlab.confirm", "sweep", "--seeds", "2", "data.steps_per_epoch=2", "trainer.max_epochs=1",
                         cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "population 0: 2 runs differing in seed," in done.stdout  # one population, not two runs in turn
    runs = sorted((tmp_path / "sweep" / "confirm").glob("*/metrics.json"))
    assert [json.loads(r.read_text())["status"] for r in runs] == ["ok", "ok"]
    assert [r.parent.name.split("seed=")[1].split(",")[0] for r in runs] == ["4", "5"]


def test_bench_refuses_what_it_does_not_take_in_one_line(tmp_path):
    done = fresh_process("nnlab.bench", "steps=5", cwd=tmp_path)
    assert done.returncode == 1 and done.stderr.startswith("nnlab: bench takes") and done.stderr.count("\n") == 1


def test_dashboard_names_a_folder_without_a_study(tmp_path):
    (tmp_path / "sweep").mkdir()
    done = fresh_process("nnlab.search", "sweep", cwd=tmp_path)
    assert done.returncode == 1 and done.stderr == "nnlab: sweep holds no study: give a sweep folder of make sweep " \
                                                   "SWEEP=spiral_search, e.g. make dashboard DIR=runs/sweeps/<time>\n"


@pytest.mark.parametrize("module,says", [
    ("nnlab.train", "== Configuration groups =="), ("nnlab.compare", "usage: python -m nnlab.compare"),
    ("nnlab.confirm", "usage: python -m nnlab.confirm"), ("nnlab.evaluate", "usage: python -m nnlab.evaluate"),
    ("nnlab.search", "usage: python -m nnlab.search"), ("nnlab.bench", "python -m nnlab.bench [repeats=3]"),
    ("nnlab.data.__main__", "python -m nnlab.data [overrides]"), ("nnlab.board", "python -m nnlab.board [FOLDER]")])
def test_every_command_answers_help(module, says, cli, tmp_path):
    done = cli(module, "--help", cwd=tmp_path)
    assert says in done.stdout and not list(tmp_path.iterdir()), done.stdout[:500] + done.stderr[-500:]


def test_nnlab_train_executable_installs_hydras_tab_completion_and_completes_groups_and_keys(tmp_path):
    # what a person types: eval "$(nnlab-train -sc install=bash)", then nnlab-train model=m<TAB>
    bin_dir = Path(sys.executable).parent
    assert (bin_dir / "nnlab-train").is_file(), "make install puts the nnlab-train executable in .venv/bin"
    script = ('eval "$(nnlab-train -sc install=bash)"; for line in "model=m" "optimizer.l"; do '
              'COMP_LINE="nnlab-train $line"; COMP_POINT=${#COMP_LINE}; COMP_CWORD=1; hydra_bash_completion; '
              'echo "${COMPREPLY[@]}"; done')
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert done.stdout.splitlines() == ["model=mlp", "optimizer.lr="], done.stdout + done.stderr[-2000:]
    assert not list(tmp_path.iterdir())  # completing writes nothing


def test_tensorboards_run_names_say_what_differs_first_and_bad_folders_are_one_line(tmp_path, cli):
    from nnlab.board import names, runs_below

    def run(folder: Path, *overrides: str) -> Path:
        (folder / ".hydra").mkdir(parents=True)
        (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
        (folder / "tensorboard").mkdir()
        return folder
    sweep = tmp_path / "runs" / "sweeps" / "2026-12-07_10-00-00"
    sweep.mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    for model in ("linear", "mlp"):
        for lr in ("0.3", "10.0"):
            run(sweep / f"{model}{lr}", "sweep=spiral_grid", f"model={model}", f"optimizer.lr={lr}",
                "scheduler.gamma=0.9", "data.steps_per_epoch=5")
    alone = run(tmp_path / "runs" / "data=spiral,model=mlp" / "2026-12-07_11-00-00", "data=spiral", "model=mlp")
    (sweep / "attempt-1" / "tensorboard").mkdir(parents=True)  # an attempt set aside: no run of its own
    found = names(runs_below(tmp_path / "runs"), tmp_path / "runs")
    assert sorted(found.values()) == ["linear lr=0.3 (sweeps|2026-12-07_10-00-00)", "linear lr=10.0 (sweeps|2026-12-07_10-00-00)",
                                      "mlp lr=0.3 (sweeps|2026-12-07_10-00-00)", "mlp lr=10.0 (sweeps|2026-12-07_10-00-00)",
                                      "spiral mlp 2026-12-07_11-00-00"]
    assert found[alone] == "spiral mlp 2026-12-07_11-00-00"
    assert sorted(names(runs_below(sweep), sweep).values()) == ["linear lr=0.3", "linear lr=10.0", "mlp lr=0.3", "mlp lr=10.0"]
    one_line_refusal(cli("nnlab.board", "nope", cwd=tmp_path), "no such folder: nope")
    one_line_refusal(cli("nnlab.board", "runs", "--logdir=x", cwd=tmp_path), "make tensorboard chooses --logdir")
    (tmp_path / "empty").mkdir()
    one_line_refusal(cli("nnlab.board", "empty", cwd=tmp_path), "no run with TensorBoard events below empty")
