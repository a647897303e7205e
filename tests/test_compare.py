"""compare's rules on hand-made run folders: grouping, spread, choosing on validation, edge warnings,
and the statistics of its verdicts, checked against scipy on the same arrays."""
import csv
import json
import math
import shutil
import time

import numpy as np
import pytest
from conftest import fresh_process, in_process, one_line_refusal
from omegaconf import OmegaConf
from scipy import stats as sp

from nnlab import stats
from nnlab.compare import best_per_architecture, compare, load_runs, summarize
from nnlab.confirm import commands
from nnlab.runs import RunFolderError, read_yaml


def fake_run(folder, model, lr, gamma, seed, status="ok", val=0.5, test=0.5, n_test=300):
    run = folder / f"model={model},optimizer.lr={lr},scheduler.gamma={gamma},seed={seed}"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(
        f"- model={model}\n- optimizer.lr={lr}\n- scheduler.gamma={gamma}\n- seed={seed}\n- sweep=spiral_grid\n")
    (run / ".hydra" / "config.yaml").write_text(f"seed: {seed}\noptimizer:\n  lr: {lr}\nscheduler:\n  gamma: {gamma}\n")
    (run / ".hydra" / "hydra.yaml").write_text(f"hydra:\n  runtime:\n    choices:\n      model: {model}\n      data: spiral\n")
    (run / "metrics.json").write_text(json.dumps({"status": status, "val/acc": val, "test/acc": test, "val/loss": 1 - val,
                                                  "test/n": n_test}))


def fake_arch(folder, model, tests, seeds=None, lr=0.1):
    """One setting of `model` with the given test/acc per seed (seeds 0, 1, ... unless given)."""
    for seed, test in zip(seeds or range(len(tests)), tests):
        fake_run(folder, model, lr, 1.0, seed, val=test, test=test)


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


def test_the_extremes_drawn_by_a_pbt_sweep_are_no_grids_edge(tmp_path):
    for lr, val in ((0.1, 0.6), (0.3, 0.7)):  # as above, each run a PBT member (metrics.json: its "pbt" entry)
        fake_run(tmp_path, "linear", lr, 1.0, 0, val=val)
        fake_run(tmp_path, "linear", lr, 0.9, 0, val=val - 0.1)
    for m in tmp_path.glob("*/metrics.json"):
        m.write_text(json.dumps({**json.loads(m.read_text()), "pbt": {"member": 0, "lineage": []}}))
    assert "widen the grid" not in compare(tmp_path) and "Warnings" not in compare(tmp_path)


def test_cli_writes_summary_files_and_names_a_missing_folder(tmp_path):
    # the smoke test of `python -m nnlab.compare`, in a fresh process
    fake_run(tmp_path / "sweep", "mlp", 0.1, 0.9, 0)
    done = fresh_process("nnlab.compare", str(tmp_path / "sweep"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(open(tmp_path / "sweep" / "summary.csv")))
    assert rows[0]["setting"] == "model=mlp,optimizer.lr=0.1,scheduler.gamma=0.9" and rows[0]["n"] == "1"
    assert (tmp_path / "sweep" / "summary.md").exists() and (tmp_path / "sweep" / "val_acc_vs_lr.png").exists()
    one_line_refusal(in_process("nnlab.compare", str(tmp_path / "nope")), f"no such folder: {tmp_path / 'nope'}")


def test_the_latest_sweep_is_the_last_sweep_folder_started_not_a_file_or_a_summary(tmp_path):
    sweeps = tmp_path / "runs" / "sweeps"
    for name in ("old", "new"):
        fake_run(sweeps / name, "mlp", 0.1, 0.9, 0)
        (sweeps / name / "multirun.yaml").write_text("hydra: {}\n")  # what a sweep writes as it starts
        time.sleep(0.01)  # distinct mtimes
    # The parent of the sweeps means what it says: every run below it, summarised there ...
    done = in_process("nnlab.compare", "runs/sweeps", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(open(sweeps / "summary.csv")))
    assert len(rows) == 1 and rows[0]["n"] == "2"  # the two sweeps' runs share one setting
    # ... and neither its files nor a later summary of the older sweep make something else "the latest"
    assert in_process("nnlab.compare", "runs/sweeps/old", cwd=tmp_path).returncode == 0
    done = in_process("nnlab.compare", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "written: runs/sweeps/new/summary.csv" in done.stdout
    done = in_process("nnlab.compare", cwd=tmp_path / "runs")  # no runs/sweeps here
    one_line_refusal(done, "no sweep folder under runs/sweeps")


A = np.array([0.900, 0.910, 0.905, 0.915, 0.920])   # three architectures 1 pt apart with paired noise:
B = A - [0.004, 0.012, 0.001, 0.010, 0.013]          # each pair's paired t p is 0.027-0.030
C = B - [0.003, 0.013, 0.002, 0.009, 0.014]


def test_intervals_and_test_set_error_are_scipys_on_the_same_scores(tmp_path):
    fake_arch(tmp_path, "mlp", A)
    (row,) = summarize(load_runs(tmp_path))
    t = sp.t.interval(0.95, 4, loc=A.mean(), scale=sp.sem(A))
    boot = sp.bootstrap((A,), np.mean, method="percentile", rng=np.random.default_rng(0)).confidence_interval
    assert (row["test_acc_ci_low"], row["test_acc_ci_high"]) == pytest.approx(t, abs=1e-12)
    assert (row["test_acc_boot_low"], row["test_acc_boot_high"]) == pytest.approx((boot.low, boot.high), abs=1e-12)
    assert row["test_acc_boot_low"] > row["test_acc_ci_low"]  # bootstrap intervals run narrow at n = 5
    assert row["test_acc_se"] == pytest.approx((A.mean() * (1 - A.mean()) / 300) ** 0.5)
    assert stats.binomial_se(0.91, 10_000) == pytest.approx(0.00286, abs=1e-5)  # MNIST's test set: about ±0.3 pt
    assert stats.bootstrap_interval(A[:4]) is None and stats.t_interval(A[:1]) is None


def test_a_real_difference_is_called_with_its_interval_and_scipys_paired_tests(tmp_path):
    linear = [0.52, 0.55, 0.50]
    mlp = [0.97, 0.98, 0.96]
    fake_arch(tmp_path, "linear", linear)
    fake_arch(tmp_path, "mlp", mlp)
    text = compare(tmp_path)
    ttest = sp.ttest_rel(mlp, linear)
    assert f"- mlp > linear: +44.7 pt [{100 * ttest.confidence_interval().low:+.1f}, " in text
    assert f"paired t p = {ttest.pvalue:.2g}, Holm p = {ttest.pvalue:.2g}, 3 paired seeds" in text
    # the exact sign-flip test over 3 pairs cannot go below 2/2^3 = 0.25, and says so
    assert "| mlp | linear | 3 paired | +44.7 pt" in text and "| 0.25 (0.25) | 1.00 |" in text
    assert (tmp_path / "best_seeds.png").stat().st_size > 5_000
    assert "![best_seeds.png](best_seeds.png)" in (tmp_path / "summary.md").read_text()


def test_the_same_distribution_is_not_called_and_the_seeds_needed_are_estimated(tmp_path):
    fake_arch(tmp_path, "linear", A)
    fake_arch(tmp_path, "mlp", A[[1, 0, 3, 2, 4]])  # the same five scores, on other seeds
    d = stats.difference("mlp", "linear", dict(enumerate(A[[1, 0, 3, 2, 4]])), dict(enumerate(A)))
    assert d.p == pytest.approx(sp.ttest_rel(A[[1, 0, 3, 2, 4]], A).pvalue) and d.p == 1.0 and d.mean == pytest.approx(0)
    assert "linear vs mlp: no detectable difference with 5 seeds (+0.0 pt" in compare(tmp_path)
    # a 1-pt difference at a 1-pt spread of the paired differences: the noncentral t says 10 seeds
    assert stats.seeds_needed(0.01, 0.01) == 10 and stats.seeds_needed(0.01, 0.02) > 30


def test_seeds_that_do_not_pair_fall_back_to_welch_and_say_so(tmp_path):
    fake_arch(tmp_path, "linear", [0.50, 0.53, 0.52], seeds=[0, 1, 2])
    fake_arch(tmp_path, "mlp", [0.96, 0.98, 0.97, 0.95], seeds=[3, 4, 5, 6])
    text = compare(tmp_path)
    welch = sp.ttest_ind([0.50, 0.53, 0.52], [0.96, 0.98, 0.97, 0.95], equal_var=False)
    assert f"Welch t p = {welch.pvalue:.2g}" in text and "unpaired: the seeds differ" in text
    assert "3+ unpaired (Welch)" in text and "– (unpaired)" in text


def test_holm_matches_a_known_answer_and_turns_a_lone_call_into_none_among_three_pairs(tmp_path):
    assert stats.holm([0.01, 0.02, 0.03, 0.04, 0.05]) == pytest.approx([0.05, 0.08, 0.09, 0.09, 0.09])  # R's p.adjust
    assert stats.holm([0.04, 0.001]) == pytest.approx([0.04, 0.002])
    fake_arch(tmp_path / "two", "cnn", A)
    fake_arch(tmp_path / "two", "mlp", B)
    assert "- cnn > mlp: +0.8 pt" in compare(tmp_path / "two")  # one pair: p = 0.027 is called
    fake_arch(tmp_path / "three", "cnn", A)
    fake_arch(tmp_path / "three", "mlp", B)
    fake_arch(tmp_path / "three", "linear", C)
    text = compare(tmp_path / "three")
    assert "cnn vs mlp: no detectable difference with 5 seeds" in text  # three pairs: Holm p = 0.081
    assert " > " not in text.split("\n\n")[1]


def test_the_same_sweep_compared_twice_gives_byte_identical_summaries(tmp_path):
    fake_arch(tmp_path, "linear", C)
    fake_arch(tmp_path, "mlp", A)
    compare(tmp_path)
    first = [(tmp_path / f).read_bytes() for f in ("summary.csv", "summary.md")]
    compare(tmp_path)
    assert [(tmp_path / f).read_bytes() for f in ("summary.csv", "summary.md")] == first


def test_confirm_runs_fresh_seeds_and_compare_bases_its_verdicts_on_them(tmp_path):
    for seed in (0, 1, 2):
        fake_run(tmp_path, "mlp", 1.0, 0.9, seed, val=0.98, test=0.97)
        fake_run(tmp_path, "mlp", 0.3, 0.9, seed, val=0.90, test=0.99)
        fake_run(tmp_path, "linear", 0.3, 1.0, seed, val=0.52, test=0.52)
    runs = commands(tmp_path, 5, ["threads=1"])
    assert [c[1:] for c in runs] == [
        ["model=linear", "optimizer.lr=0.3", "scheduler.gamma=1.0", "sweep=spiral_grid", "seed=5,6,7,8,9",
         f"hydra.sweep.dir={tmp_path / 'confirm'}", "hydra/launcher=population", "threads=1"],
        ["model=mlp", "optimizer.lr=1.0", "scheduler.gamma=0.9", "sweep=spiral_grid", "seed=5,6,7,8,9",
         f"hydra.sweep.dir={tmp_path / 'confirm'}", "hydra/launcher=population", "threads=1"]]
    # seeds 0-2 and their data draws (to 4) unused; a setting's seeds train as one population
    for seed, (lin, mlp) in zip(range(5, 10), ((0.50, 0.96), (0.51, 0.95), (0.52, 0.97), (0.49, 0.94), (0.50, 0.96))):
        fake_run(tmp_path / "confirm", "linear", 0.3, 1.0, seed, test=lin)
        fake_run(tmp_path / "confirm", "mlp", 1.0, 0.9, seed, test=mlp)
    text = compare(tmp_path)
    assert "on the fresh seeds of make confirm" in text and "5 paired seeds" in text and "- mlp > linear: +45.2 pt" in text
    assert "| spiral | mlp | model=mlp,optimizer.lr=1.0,scheduler.gamma=0.9 | 3 | 0.9800 ± 0.0000 | 0.9700 [0.9700, 0.9700] " \
           "| ±0.0098 | 5 | 0.9560 [" in text  # selection-time beside fresh: the winner's curse, measured
    assert len(summarize(load_runs(tmp_path))) == 3  # the fresh runs are not selection runs
    assert commands(tmp_path, 2, [])[0][5] == "seed=5,6"  # a second call picks the same seeds: it resumes


def test_several_folders_are_compared_on_equal_terms_in_their_own_folder(tmp_path):
    fake_arch(tmp_path / "runs/sweeps/grid", "mlp", B)
    fake_arch(tmp_path / "runs/sweeps/search", "mlp", A)
    done = in_process("nnlab.compare", "runs/sweeps/grid", "runs/sweeps/search", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "- mlp@search > mlp@grid: +0.8 pt" in done.stdout
    out = tmp_path / "runs/comparisons/grid+search"
    assert (out / "summary.md").read_text().startswith("# runs/sweeps/grid + runs/sweeps/search\n")
    assert not (tmp_path / "runs/sweeps/grid/summary.md").exists()


def test_confirm_passes_overrides_given_before_the_folder_to_every_run(tmp_path, monkeypatch):
    from nnlab import confirm
    for seed in (0, 1):
        fake_run(tmp_path, "mlp", 1.0, 0.9, seed)
    launched = []
    monkeypatch.setattr(confirm, "launch", launched.append)
    confirm.main(["hydra/launcher=joblib", str(tmp_path), "--seeds", "2", "threads=1"])
    assert launched[0][-4:] == ["seed=4,5", f"hydra.sweep.dir={tmp_path / 'confirm'}", "hydra/launcher=joblib", "threads=1"]
    one_line_refusal(in_process("nnlab.confirm", str(tmp_path), "--seeds", "1"), "--seeds 1: a verdict needs at least 2 seeds")


def test_the_summary_reads_at_a_glance(tmp_path):
    # lr sorted as numbers, the chosen setting starred, an interval near 1 clipped to it, one seed's
    # spread a dash, and a finished run no better than guessing counted as such
    for lr, vals in ((10.0, (0.95, 0.99, 0.999)), (3.0, (0.50, 0.52, 0.51))):
        for seed, v in enumerate(vals):
            fake_run(tmp_path / "sweep", "mlp", lr, 0.9, seed, val=v, test=v)
    fake_run(tmp_path / "sweep", "linear", 1.0, 0.9, 0, val=0.34, test=0.33)
    metrics = tmp_path / "sweep" / "model=linear,optimizer.lr=1.0,scheduler.gamma=0.9,seed=0" / "metrics.json"
    metrics.write_text(json.dumps({**json.loads(metrics.read_text()), "classes": 3}))  # chance: 1/3
    text = compare(tmp_path / "sweep")
    table = text.split("Every setting")[1]
    assert table.index("optimizer.lr=3.0") < table.index("optimizer.lr=10.0")
    assert "| ★ | model=mlp,optimizer.lr=10.0,scheduler.gamma=0.9 | 3 |" in table
    assert "| ★ | model=linear,optimizer.lr=1.0,scheduler.gamma=0.9 | 1 | 0.3400 ± – |" in table
    assert "ok at chance:1" in table
    rows = {r["setting"]: r for r in csv.DictReader(open(tmp_path / "sweep" / "summary.csv"))}
    high = rows["model=mlp,optimizer.lr=10.0,scheduler.gamma=0.9"]
    assert float(high["test_acc_ci_high"]) == 1.0 < sp.t.interval(0.95, 2, loc=np.mean([0.95, 0.99, 0.999]),
                                                                  scale=sp.sem([0.95, 0.99, 0.999]))[1]


def test_compare_names_only_the_figures_it_drew(tmp_path):
    for seed in (0, 1):  # no run finished: no setting to plot, no best to draw
        fake_run(tmp_path / "sweep", "mlp", 1.0, 0.9, seed, status="failed")
    (tmp_path / "sweep" / "best_curves.png").write_bytes(b"an earlier compare's")
    done = in_process("nnlab.compare", "sweep", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "written: sweep/summary.csv, summary.md"
    assert not list((tmp_path / "sweep").glob("*.png")) and ".png" not in (tmp_path / "sweep" / "summary.md").read_text()
    fake_run(tmp_path / "sweep", "mlp", 1.0, 0.9, 2, val=0.9)  # one finished seed: a point, and a best
    done = in_process("nnlab.compare", "sweep", cwd=tmp_path)
    assert done.stdout.splitlines()[-1].startswith("written: sweep/summary.csv, summary.md, ")
    named = done.stdout.splitlines()[-1].split("summary.md, ")[1].split(", ")
    assert sorted(named) == sorted(p.name for p in (tmp_path / "sweep").glob("*.png")) and "val_acc_vs_lr.png" in named


def test_an_edge_best_with_a_flat_neighbour_gets_no_widen_advice_and_the_runner_up_gets_a_verdict(tmp_path):
    # lr 10 is chosen on the edge, but lr 3 scores the same on every seed: accuracy is flat in lr there
    for seed, val in enumerate((0.534, 0.530, 0.541)):
        fake_run(tmp_path, "linear", 10.0, 1.0, seed, val=val, test=0.55 + seed / 100)
        fake_run(tmp_path, "linear", 3.0, 1.0, seed, val=val - 0.001 * (seed % 2), test=(0.56, 0.55, 0.575)[seed])
        fake_run(tmp_path, "linear", 1.0, 1.0, seed, val=0.40, test=0.40)
    rows = summarize(load_runs(tmp_path))
    (row, warnings), = best_per_architecture(rows).values()
    assert row["lr"] == 10.0 and warnings == []
    text = compare(tmp_path)
    assert "Warnings:" not in text
    assert "- linear lr 10.0 gamma 1.0 (chosen) vs linear lr 3.0 gamma 1.0: no detectable difference with 3 seeds" \
        in text
    # the same edge with a real slope towards it keeps its advice
    for seed in range(3):
        for lr in (3.0, 1.0):
            shutil.rmtree(tmp_path / f"model=linear,optimizer.lr={lr},scheduler.gamma=1.0,seed={seed}")
            score = {3.0: 0.45, 1.0: 0.40}[lr] + seed / 1000
            fake_run(tmp_path, "linear", lr, 1.0, seed, val=score, test=score)
    (row, warnings), = best_per_architecture(summarize(load_runs(tmp_path))).values()
    assert row["lr"] == 10.0 and warnings == ["best lr 10.0 is the largest tried: widen the grid past it"]
    assert "- linear lr 10.0 gamma 1.0 (chosen) > linear lr 3.0 gamma 1.0: +" in compare(tmp_path)


def test_the_same_gap_on_every_seed_is_judged_by_the_exact_sign_flip_test_not_called_from_three_seeds():
    # +1 pt on each of 3 seeds: no spread, so no t-test; the sign-flip test cannot go below 2/2^3 = 0.25
    d = stats.difference("a", "b", {0: 0.91, 1: 0.92, 2: 0.93}, {0: 0.90, 1: 0.91, 2: 0.92})
    d.p_holm = d.p
    assert d.p == pytest.approx(0.25) and d.interval == pytest.approx((0.01, 0.01))
    line = stats.verdict(d)
    assert line.startswith("a vs b: no detectable difference with 3 seeds (+1.0 pt [+1.0, +1.0], sign-flip p = 0.25")
    assert line.endswith("about 6 seeds would detect 1.0 pt at this spread")  # 2/2^6 = 0.031 < 0.05


@pytest.mark.parametrize("text", [
    "l2: 1e-5\nlr: 1.0e-05\nsteps: 1_000\nhalf: .5\nlow: -.inf\nlimit: 1e3\nsixty: 1:00\n",
    "day: 2026-12-08\nwhen: 2026-12-08 10:00:00\nflag: on\nother: no\nnothing: null\n1: one\n",
    "- seed=0\n- optimizer.lr=1e-3\n- 'model=mlp'\n",
    "hydra: {runtime: {choices: {model: mlp, data: spiral}}, job: {num: 3, env_set: {}}}\n"])
def test_a_run_folders_yaml_is_read_as_omegaconf_reads_it(text, tmp_path):
    # runs.RunYaml: OmegaConf.load's rules (floats such as 1e-5, dates as strings) on libyaml's parser
    path = tmp_path / "file.yaml"
    path.write_text(text)
    assert read_yaml(path) == OmegaConf.to_container(OmegaConf.load(path))


def test_a_run_folders_yaml_refuses_what_omegaconf_refuses(tmp_path):
    path = tmp_path / "file.yaml"
    path.write_text("seed: 0\nseed: 1\n")
    with pytest.raises(Exception, match="duplicate key seed"):
        OmegaConf.load(path)
    with pytest.raises(RunFolderError, match="duplicate key seed"):
        read_yaml(path)
    path.write_text("nan: .nan\n")
    assert math.isnan(read_yaml(path)["nan"]) and math.isnan(OmegaConf.load(path).nan)
