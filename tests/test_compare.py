"""compare's rules on hand-made run folders: grouping, spread, choosing on validation, edge warnings."""
import csv
import json
import subprocess
import sys
import time

from nnlab.compare import best_per_architecture, load_runs, summarize


def fake_run(folder, model, lr, gamma, seed, status="ok", val=0.5, test=0.5):
    run = folder / f"model={model},optimizer.lr={lr},scheduler.gamma={gamma},seed={seed}"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(
        f"- model={model}\n- optimizer.lr={lr}\n- scheduler.gamma={gamma}\n- seed={seed}\n")
    (run / ".hydra" / "config.yaml").write_text(f"optimizer:\n  lr: {lr}\nscheduler:\n  gamma: {gamma}\n")
    (run / ".hydra" / "hydra.yaml").write_text(f"hydra:\n  runtime:\n    choices:\n      model: {model}\n      data: spiral\n")
    (run / "metrics.json").write_text(json.dumps({"status": status, "val/acc": val, "test/acc": test, "val/loss": 1 - val}))


def test_best_is_chosen_on_validation_not_test_and_needs_every_seed(tmp_path):
    for seed, val in ((0, 0.80), (1, 0.82)):
        fake_run(tmp_path, "mlp", 0.1, 0.9, seed, val=val, test=0.99)  # best on test, not on validation
        fake_run(tmp_path, "mlp", 1.0, 0.9, seed, val=val + 0.1, test=0.70)
        fake_run(tmp_path, "mlp", 3.0, 0.9, seed, val=0.99, status="ok" if seed else "diverged")  # one seed diverged
        fake_run(tmp_path, "mlp", 1.0, 1.0, seed, val=0.5)
    rows = summarize(load_runs(tmp_path))
    (row, warnings), = best_per_architecture(rows).values()
    assert row["lr"] == 1.0 and row["gamma"] == 0.9 and row["n"] == 2
    assert abs(row["val_acc_mean"] - 0.91) < 1e-9 and abs(row["val_acc_std"] - 0.0141421) < 1e-6
    assert warnings == ["best gamma 0.9 is the smallest tried: widen the grid past it"]  # lr 1.0 is inside
    diverged = next(r for r in rows if r["lr"] == 3.0)
    assert diverged["statuses"] == "diverged:1 ok:1" and diverged["n"] == 1


def test_best_lr_on_the_edge_of_the_grid_is_flagged_but_gamma_one_is_not(tmp_path):
    for lr, val in ((0.1, 0.6), (0.3, 0.7)):
        fake_run(tmp_path, "linear", lr, 1.0, 0, val=val)
        fake_run(tmp_path, "linear", lr, 0.9, 0, val=val - 0.1)
    (_, warnings), = best_per_architecture(summarize(load_runs(tmp_path))).values()
    assert warnings == ["best lr 0.3 is the largest tried: widen the grid past it"]


def test_cli_writes_summary_files_and_names_a_missing_folder(tmp_path):
    fake_run(tmp_path / "sweep", "mlp", 0.1, 0.9, 0)
    done = subprocess.run([sys.executable, "-m", "nnlab.compare", str(tmp_path / "sweep")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(open(tmp_path / "sweep" / "summary.csv")))
    assert rows[0]["setting"] == "model=mlp,optimizer.lr=0.1,scheduler.gamma=0.9" and rows[0]["n"] == "1"
    assert (tmp_path / "sweep" / "summary.md").exists() and (tmp_path / "sweep" / "val_acc_vs_lr.png").exists()
    done = subprocess.run([sys.executable, "-m", "nnlab.compare", str(tmp_path / "nope")], capture_output=True, text=True)
    assert done.returncode == 1 and "no such folder" in done.stderr


def test_the_latest_sweep_is_the_last_sweep_folder_started_not_a_file_or_a_summary(tmp_path):
    sweeps = tmp_path / "runs" / "sweeps"
    for name in ("old", "new"):
        fake_run(sweeps / name, "mlp", 0.1, 0.9, 0)
        (sweeps / name / "multirun.yaml").write_text("hydra: {}\n")  # what a sweep writes as it starts
        time.sleep(0.01)  # distinct mtimes
    compare = [sys.executable, "-m", "nnlab.compare"]
    # The parent of the sweeps means what it says: every run below it, summarised there ...
    done = subprocess.run([*compare, "runs/sweeps"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(open(sweeps / "summary.csv")))
    assert len(rows) == 1 and rows[0]["n"] == "2"  # the two sweeps' runs share one setting
    # ... and neither its files nor a later summary of the older sweep make something else "the latest"
    assert subprocess.run([*compare, "runs/sweeps/old"], cwd=tmp_path, capture_output=True).returncode == 0
    done = subprocess.run(compare, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "written: runs/sweeps/new/summary.csv" in done.stdout
    done = subprocess.run(compare, cwd=tmp_path / "runs", capture_output=True, text=True)  # no runs/sweeps here
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "no sweep folder under runs/sweeps" in done.stderr
