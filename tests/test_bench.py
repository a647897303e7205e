"""make bench, shrunk: every row, ratio and machine fact lands in the table and bench.json, and the
plain loop it times does nnlab's arithmetic. Nothing here depends on how fast anything ran."""
import json

import pytest
from conftest import one_line_refusal

from nnlab import bench


@pytest.fixture
def tiny(tiny_mnist, monkeypatch):
    monkeypatch.setattr(bench, "GRID", {"optimizer.lr": (0.3, 1.0), "scheduler.gamma": (0.9,), "seed": (0, 1)})  # 4 members
    return [f"data.root={tiny_mnist}", "data.val_size=20", "data.batch_size=20"]  # 100 training images: 5 batches


@pytest.mark.parametrize("case", ["mnist", "spiral", "population"])
def test_the_plain_loop_gets_nnlabs_numbers_bit_for_bit(case, tiny):
    nnlab = bench.measure(case, "nnlab", 20, tiny)["results"]
    plain = bench.measure(case, "plain", 20, tiny)["results"]
    assert plain == nnlab  # same seed, init, batches, loss, optimizer and sums: the same arithmetic


def test_bench_prints_and_writes_every_row_ratio_and_machine_fact(tiny, tmp_path, monkeypatch, capsys):
    # In-process here: the tiny MNIST files pass their MD5 check only in this (patched) process.
    monkeypatch.setattr(bench, "in_fresh_process", lambda fn, *args: fn(*args))
    bench.run(repeats=2, spiral_steps=20, out=str(tmp_path / "bench.json"), mnist_overrides=tiny)
    report = json.loads((tmp_path / "bench.json").read_text())
    assert [(r["case"], r["way"]) for r in report["rows"]] == [
        ("mnist", "nnlab"), ("mnist", "plain"), ("mnist", "notebook"), ("spiral", "nnlab"), ("spiral", "plain"),
        ("population", "nnlab"), ("population", "plain")]
    for row in report["rows"]:
        assert len(row["seconds"]) == 2 and all(s > 0 for s in row["seconds"]) and row["peak_mib"] > 0
        assert 0 <= row["results"]["test/acc"] <= 1
    median = {(r["case"], r["way"]): sorted(r["seconds"])[0] / 2 + sorted(r["seconds"])[1] / 2 for r in report["rows"]}
    for r in report["ratios"]:  # each ratio is its rows' medians', within its same-repeat range
        a, b = r["ratio"].split(" / ")
        assert r["value"] == pytest.approx(median[r["case"], a] / median[r["case"], b])
        assert r["same_repeat_min"] <= r["value"] * (1 + 1e-9) and r["value"] <= r["same_repeat_max"] * (1 + 1e-9)
    assert [(r["case"], r["ratio"]) for r in report["ratios"]] == [
        ("mnist", "nnlab / plain"), ("mnist", "nnlab / notebook"), ("spiral", "nnlab / plain"),
        ("population", "nnlab / plain")]
    assert {"cpu", "cores", "threads", "torch", "device"} <= set(report["machine"])
    out = capsys.readouterr().out
    assert out.count("| MNIST epoch") == 3 and out.count("| spiral MLP, 20 full-batch steps") == 2
    assert out.count("| 4 spiral MLPs, 2 full-batch steps each") == 2
    assert out.count("nnlab / plain = ") == 3 and out.count("nnlab / notebook = ") == 1


@pytest.mark.slow
def test_a_fresh_process_reports_its_own_time_and_memory():
    run = bench.in_fresh_process(bench.measure, "spiral", "plain", 20, [])
    assert run["seconds"] > 0 and run["peak_mib"] >= run["start_mib"] > 0 and run["threads"] >= 1


@pytest.mark.parametrize("argv", [["steps=5"], ["repeats=0"], ["spiral_steps=15"], ["model=mlp"]])
def test_bad_arguments_are_one_line(argv, cli):
    one_line_refusal(cli("nnlab.bench", *argv), "bench takes")


@pytest.mark.slow
def test_bench_times_a_sweep_through_each_launcher_and_the_fixed_cost_a_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench, "in_fresh_process", lambda fn, *args: fn(*args))
    report = bench.sweeps("spiral_grid", 1, str(tmp_path / "bench.json"),
                          ["model=linear", "optimizer.lr=1.0", "scheduler.gamma=0.9", "trainer.max_epochs=1",
                           "data.steps_per_epoch=2"])
    assert json.loads((tmp_path / "bench.json").read_text()) == json.loads(json.dumps(report))
    rows = {row["way"]: row for row in report["rows"]}
    assert [(w, r["runs"], r["ok"]) for w, r in rows.items()] == [
        ("population", 3, 3), ("population, 1 process", 3, 3), ("basic", 3, 3), ("basic, JOBS=2", 3, 3),
        ("population, 1 step a run", 3, 3), ("population, 1 step a run, seed=0", 1, 1)]
    assert report["basic / population"] == pytest.approx(rows["basic"]["median_s"] / rows["population"]["median_s"])
    assert report["JOBS=2 / population"] == pytest.approx(rows["basic, JOBS=2"]["median_s"] /
                                                          rows["population"]["median_s"])
    assert report["fixed_s_per_run"] == pytest.approx((rows["population, 1 step a run"]["median_s"] -
                                                       rows["population, 1 step a run, seed=0"]["median_s"]) / 2)
    assert all(r["peak_mib"] > 0 for r in rows.values()) and "basic / population = " in capsys.readouterr().out


def test_a_sweeps_one_step_runs_are_cut_by_the_datas_own_setting():
    assert bench.one_batch("spiral_grid", []) == "data.steps_per_epoch=1"
    assert bench.one_batch("mnist_grid", ["data.batch_size=32", "seed=0,1"]) == "data.train_images=32"
