"""Compare the runs of a sweep, the tuning playbook's way: architecture is the question, lr and gamma
are nuisance parameters tuned per architecture, and each architecture is judged at its best.

    python -m nnlab.compare [FOLDER]       # make compare [DIR=runs/sweeps/<time>]; default: the latest sweep

Reads every run's saved config (.hydra/) and metrics.json under FOLDER and writes there:
  summary.csv / summary.md   one row per setting (every override but the seed): n finished seeds,
                             mean ± sample std of val/acc and test/acc, and the status counts
  val_acc_vs_lr.png          validation accuracy against lr, one panel per architecture, a line per gamma
  best_curves.png            train/loss and val/acc of the best run of each architecture
The best setting of each architecture is chosen on val/acc (never test/acc), among settings whose
every seed finished; its test/acc is then reported. A best lr or gamma on the edge of the grid is
flagged: the optimum may lie outside it. Nothing here depends on timing, so the same sweep run
twice on the same machine gives byte-identical summary.csv files.
"""
import csv
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib
from omegaconf import OmegaConf

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

FIELDS = ["setting", "data", "model", "lr", "gamma", "n", "val_acc_mean", "val_acc_std",
          "test_acc_mean", "test_acc_std", "val_loss_mean", "statuses"]


def load_runs(folder: Path) -> list[dict]:
    runs = []
    for hydra_dir in sorted(folder.rglob(".hydra")):
        run, metrics = hydra_dir.parent, hydra_dir.parent / "metrics.json"
        overrides = OmegaConf.to_container(OmegaConf.load(hydra_dir / "overrides.yaml"))
        cfg = OmegaConf.load(hydra_dir / "config.yaml")
        choices = OmegaConf.load(hydra_dir / "hydra.yaml").hydra.runtime.choices
        runs.append({"dir": run, "metrics": json.loads(metrics.read_text()) if metrics.exists() else {},
                     "setting": ",".join(sorted(o for o in overrides if not o.startswith(("seed=", "sweep="))))
                                or "(defaults)",
                     "data": choices.data, "model": choices.model,
                     "lr": OmegaConf.select(cfg, "optimizer.lr"), "gamma": OmegaConf.select(cfg, "scheduler.gamma")})
    return runs


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(runs: list[dict]) -> list[dict]:
    by_setting = defaultdict(list)
    for r in runs:
        by_setting[r["setting"]].append(r)
    rows = []
    for setting, group in sorted(by_setting.items()):
        ok = [r["metrics"] for r in group if r["metrics"].get("status") == "ok"]
        statuses = defaultdict(int)
        for r in group:
            statuses[r["metrics"].get("status", "unfinished")] += 1
        val, test = mean_std([m["val/acc"] for m in ok]), mean_std([m["test/acc"] for m in ok])
        rows.append({"setting": setting, "data": group[0]["data"], "model": group[0]["model"],
                     "lr": group[0]["lr"], "gamma": group[0]["gamma"], "n": len(ok),
                     "val_acc_mean": val[0], "val_acc_std": val[1], "test_acc_mean": test[0], "test_acc_std": test[1],
                     "val_loss_mean": mean_std([m["val/loss"] for m in ok])[0],
                     "statuses": " ".join(f"{k}:{v}" for k, v in sorted(statuses.items())),
                     "complete": len(ok) == len(group), "runs": group})
    return rows


def best_per_architecture(rows: list[dict]) -> dict[tuple[str, str], tuple[dict, list[str]]]:
    """(data, model) -> (best row by mean val/acc among complete settings, edge-of-grid warnings)."""
    best = {}
    for arch in sorted({(r["data"], r["model"]) for r in rows}):
        mine = [r for r in rows if (r["data"], r["model"]) == arch]
        eligible = [r for r in mine if r["complete"] and r["n"]]
        if not eligible:
            continue
        top = max(eligible, key=lambda r: (r["val_acc_mean"], -r["val_loss_mean"]))
        warnings = []
        for knob, limit in (("lr", None), ("gamma", 1.0)):  # gamma = 1 (no decay) is a true boundary
            grid = sorted({r[knob] for r in mine if r[knob] is not None})
            value = top[knob]
            if len(grid) > 1 and value in (grid[0], grid[-1]) and value != limit:
                side = "smallest" if value == grid[0] else "largest"
                warnings.append(f"best {knob} {value} is the {side} tried: widen the grid past it")
        best[arch] = top, warnings
    return best


def fmt(mean: float | None, std: float | None) -> str:
    return "–" if mean is None else f"{mean:.4f} ± {std:.4f}"


def write_csv(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        out = csv.DictWriter(f, FIELDS, extrasaction="ignore", lineterminator="\n")
        out.writeheader()
        for r in rows:
            out.writerow({k: f"{v:.6f}" if isinstance(v, float) and k.endswith(("mean", "std")) else
                          "" if v is None else v for k, v in r.items()})


def markdown(rows: list[dict], best: dict) -> str:
    lines = ["| setting | n | val/acc | test/acc | statuses |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['setting']} | {r['n']} | {fmt(r['val_acc_mean'], r['val_acc_std'])} | "
                     f"{fmt(r['test_acc_mean'], r['test_acc_std'])} | {r['statuses']} |")
    lines += ["", "Best setting per architecture, chosen on mean val/acc (settings with every seed finished);",
              "test/acc is mean ± sample std over its seeds:", "",
              "| data | model | best setting | n | val/acc | test/acc |", "|---|---|---|---|---|---|"]
    for (data, model), (r, _) in best.items():
        lines.append(f"| {data} | {model} | {r['setting']} | {r['n']} | {fmt(r['val_acc_mean'], r['val_acc_std'])} | "
                     f"{fmt(r['test_acc_mean'], r['test_acc_std'])} |")
    warnings = [f"- {data}/{model}: {w}" for (data, model), (_, ws) in best.items() for w in ws]
    return "\n".join(lines + (["", "Warnings:", *warnings] if warnings else [])) + "\n"


def plot_val_vs_lr(rows: list[dict], path: Path) -> None:
    archs = sorted({(r["data"], r["model"]) for r in rows})
    fig, axes = plt.subplots(1, len(archs), figsize=(4.5 * len(archs), 4), squeeze=False, sharey=True)
    for ax, arch in zip(axes[0], archs):
        mine = [r for r in rows if (r["data"], r["model"]) == arch and r["n"] and r["lr"] is not None]
        for gamma in sorted({r["gamma"] for r in mine}, key=lambda g: (g is None, g)):
            pts = sorted((r["lr"], r["val_acc_mean"], r["val_acc_std"]) for r in mine if r["gamma"] == gamma)
            if pts:
                ax.errorbar(*zip(*pts), marker="o", capsize=3, label=f"gamma {gamma}")
        ax.set(xscale="log", xlabel="lr", title=f"{arch[1]} on {arch[0]}")
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("val/acc (mean ± std over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_best_curves(best: dict, path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for (data, model), (row, _) in best.items():
        done = [r for r in row["runs"] if r["metrics"].get("status") == "ok"]
        run = max(done, key=lambda r: r["metrics"]["val/acc"])  # the best seed of the best setting
        if not (run["dir"] / "tensorboard").is_dir():
            continue
        events = EventAccumulator(str(run["dir"] / "tensorboard"), size_guidance={"scalars": 0})
        events.Reload()
        for ax, tag in ((loss_ax, "train/loss"), (acc_ax, "val/acc")):
            if tag in events.Tags()["scalars"]:
                points = events.Scalars(tag)
                ax.plot([p.step for p in points], [p.value for p in points], label=f"{model} on {data}")
    loss_ax.set(xlabel="step", ylabel="train/loss", yscale="log")
    acc_ax.set(xlabel="step", ylabel="val/acc")
    acc_ax.legend()
    fig.suptitle("best run (best seed of the best setting) of each architecture")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def compare(folder: Path) -> str:
    runs = load_runs(folder)
    if not runs:
        raise SystemExit(f"nnlab: no runs under {folder}: run a sweep first (make sweep SWEEP=spiral_grid)")
    rows = summarize(runs)
    best = best_per_architecture(rows)
    write_csv(rows, folder / "summary.csv")
    text = markdown(rows, best)
    (folder / "summary.md").write_text(f"# {folder}\n\n{text}")
    plot_val_vs_lr(rows, folder / "val_acc_vs_lr.png")
    if best:
        plot_best_curves(best, folder / "best_curves.png")
    return text


def latest_sweep(root: Path = Path("runs/sweeps")) -> Path:
    """The sweep folder started last: a folder holding multirun.yaml, which a sweep writes as it starts
    (summaries written into runs/sweeps/ itself or into an older sweep do not make it the latest)."""
    sweeps = sorted(root.glob("*/multirun.yaml"), key=lambda p: p.stat().st_mtime)
    if not sweeps:
        raise SystemExit(f"nnlab: no sweep folder under {root}: run one first (make sweep), or give DIR=<folder>")
    return sweeps[-1].parent


if __name__ == "__main__":
    if len(sys.argv) > 2:
        sys.exit("nnlab: compare takes one folder: make compare DIR=runs/sweeps/<time>")
    folder = Path(sys.argv[1]) if len(sys.argv) == 2 else latest_sweep()
    if not folder.is_dir():
        sys.exit(f"nnlab: no such folder: {folder} (sweeps land in runs/sweeps/<time>)")
    print(compare(folder))
    print(f"written: {folder}/summary.csv, summary.md, val_acc_vs_lr.png, best_curves.png")
