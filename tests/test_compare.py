import json
import subprocess
import sys

from nnlab.compare import load_runs, table


def fake_run(folder, overrides, **metrics):
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (folder / "metrics.json").write_text(json.dumps({"status": "ok", **metrics}))


def test_groups_by_overrides_except_seed_with_mean_and_spread(tmp_path):
    for seed, acc in ((0, 0.90), (1, 0.92), (2, 0.94)):
        fake_run(tmp_path / f"a{seed}", ["model=mlp", f"seed={seed}"], **{"test/acc": acc, "seconds": 3.0})
    fake_run(tmp_path / "b0", ["seed=0", "model=linear"], **{"test/acc": 0.8})
    fake_run(tmp_path / "b1", ["model=linear", "seed=1"], status="diverged")
    groups = load_runs([tmp_path])
    assert sorted(groups) == ["model=linear", "model=mlp"] and len(groups["model=mlp"]) == 3
    rows = table(groups).splitlines()
    assert "| model=mlp | 3 | 0 |" in rows[3] and "0.9200 ± 0.0200" in rows[3] and "3.0 ± 0.0" in rows[3]
    assert "| model=linear | 1 | diverged |" in rows[2] and "0.8000 |" in rows[2]


def test_cli_names_a_missing_folder(tmp_path):
    done = subprocess.run([sys.executable, "-m", "nnlab.compare", str(tmp_path / "nope")], capture_output=True, text=True)
    assert done.returncode == 1 and "no such run folder" in done.stderr
