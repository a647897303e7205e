"""nnlab on a GPU: the notebook recipe's epoch time under each GPU option, and the fast recipe's
time to 99% test accuracy. experiments/gpu.sh runs it on a GPU machine, with `make bench` and the
GPU tests (docs/speed.md records what it printed).

    python experiments/gpu.py OUT_DIR [override ...]   # overrides go to every run (a CPU dry run:
                                                        # +trainer.limit_train_batches=5)

Each variant is one `python -m nnlab.train` process, as a user runs it (logging, checkpoints,
figures on). The notebook recipe runs 2 epochs: the first pays the one-off costs (CUDA context,
cuDNN/compile warm-up), the second is the steady-state epoch, validation included. Writes
OUT_DIR/gpu.json and OUT_DIR/runs/<variant>/ (each a normal run folder); prints a markdown table.
"""
import json
import re
import subprocess
import sys
import time
from pathlib import Path

NOTEBOOK = ["trainer.max_epochs=2"]  # conf/train.yaml's defaults are the notebook's recipe
FAST = ["experiment=mnist_cnn_fast"]
VARIANTS = [  # (recipe, option, overrides)
    ("notebook", "fp32", NOTEBOOK),
    ("notebook", "fp32, Lightning's loop (fused=false)", [*NOTEBOOK, "fused=false"]),
    ("notebook", "fp32, cuDNN autotuned (not bitwise reproducible)",
     [*NOTEBOOK, "trainer.deterministic=false", "+trainer.benchmark=true"]),
    ("notebook", "bf16 autocast", [*NOTEBOOK, "trainer.precision=bf16-mixed"]),
    ("notebook", "bf16 + channels-last", [*NOTEBOOK, "trainer.precision=bf16-mixed", "channels_last=true"]),
    ("notebook", "torch.compile", [*NOTEBOOK, "compile=default"]),
    ("notebook", "torch.compile + CUDA graphs", [*NOTEBOOK, "compile=reduce-overhead"]),
    ("fast", "fp32", FAST),
    ("fast", "bf16 autocast", [*FAST, "trainer.precision=bf16-mixed"]),
    ("fast", "fp32, Lightning's loop (fused=false)", [*FAST, "fused=false"]),
]
EPOCH_LINE = re.compile(r"epoch (\d+)/\d+ .*\((\d+(?:\.\d+)?) s\)$")  # nnlab.callbacks.EpochLog's


def run(out: Path, name: str, overrides: list[str]) -> dict:
    run_dir = out / "runs" / name
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "nnlab.train", *overrides, f"hydra.run.dir={run_dir}"],
                          capture_output=True, text=True, timeout=300)
    wall = time.perf_counter() - start
    (out / f"{name}.log").write_text(done.stdout + done.stderr)
    metrics = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").exists() else {}
    ends = [float(m[2]) for line in (run_dir / "train.log").read_text().splitlines() if (m := EPOCH_LINE.search(line))] \
        if (run_dir / "train.log").exists() else []
    epochs = [b - a for a, b in zip([0.0, *ends], ends)]  # seconds of each epoch, its validation included
    return {"returncode": done.returncode, "status": metrics.get("status", "none"), "epoch_s": epochs,
            "run_s": metrics.get("seconds"), "process_s": round(wall, 2), "test/acc": metrics.get("test/acc"),
            "device": metrics.get("device"), "error": metrics.get("error") or (done.stderr.strip().splitlines() or [""])[-1]}


def main(out: Path, extra: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (recipe, option, overrides) in enumerate(VARIANTS):
        row = {"recipe": recipe, "option": option, "overrides": [*overrides, *extra],
               **run(out, f"{i}_{recipe}", [*overrides, *extra])}
        rows.append(row)
        print(f"{recipe} / {option}: {row['status']}, epochs {row['epoch_s']} s", file=sys.stderr, flush=True)
        (out / "gpu.json").write_text(json.dumps(rows, indent=2) + "\n")  # kept as it grows: a timeout loses one row
    print("| recipe | option | first epoch s | steady epoch s | fit + test s | test/acc | status |\n|---|---|---|---|---|---|---|")
    for r in rows:
        first, later = (f"{r['epoch_s'][0]:.2f}", f"{min(r['epoch_s'][1:]):.2f}" if r["epoch_s"][1:] else "-") \
            if r["epoch_s"] else ("-", "-")
        acc = f"{r['test/acc']:.4f}" if r["test/acc"] is not None else "-"
        status = r["status"] if r["status"] == "ok" else f"{r['status']}: {r['error'][:80]}"
        print(f"| {r['recipe']} | {r['option']} | {first} | {later} | {r['run_s']} | {acc} | {status} |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python experiments/gpu.py OUT_DIR [override ...]")
    main(Path(sys.argv[1]), sys.argv[2:])
