"""The figures of make compare: validation accuracy against lr, the best runs' curves, the best settings' seeds.

Each function draws one PNG from compare's rows (nnlab.compare.summarize) and writes it to `path`.
"""
import sys
from pathlib import Path

import matplotlib

from nnlab.runs import OK, RunFolderError, refuse_links

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after the backend is chosen


def plot_val_vs_lr(rows: list[dict], path: Path) -> None:
    """One panel per architecture; not drawn when no setting has a finished seed and an lr."""
    if not any(r["n"] and r["lr"] is not None for r in rows):
        return
    archs = sorted({(r["data"], r["model"]) for r in rows})
    fig, axes = plt.subplots(1, len(archs), figsize=(4.5 * len(archs), 4), squeeze=False, sharey=True)
    for ax, arch in zip(axes[0], archs):
        mine = [r for r in rows if (r["data"], r["model"]) == arch and r["n"] and r["lr"] is not None]
        for gamma in sorted({r["gamma"] for r in mine}, key=lambda g: (g is None, g)):
            pts = sorted((r["lr"], r["val_acc_mean"], r["val_acc_std"] or 0.0) for r in mine if r["gamma"] == gamma)
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
        done = [r for r in row["runs"] if r["metrics"].get("status") == OK]
        run = max(done, key=lambda r: r["metrics"]["val/acc"])  # the best seed of the best setting
        if not (run["dir"] / "tensorboard").is_dir():
            continue
        try:
            refuse_links(run["dir"] / "tensorboard")  # a folder from elsewhere: its events are read here
        except RunFolderError as e:
            print(f"nnlab: {e}; its curves left out of best_curves.png", file=sys.stderr)
            continue
        events = EventAccumulator(str(run["dir"] / "tensorboard"), size_guidance={"scalars": 0})
        events.Reload()
        for ax, tag in ((loss_ax, "train/loss"), (acc_ax, "val/acc")):
            if tag in events.Tags()["scalars"]:
                points = events.Scalars(tag)
                ax.plot([p.step for p in points], [p.value for p in points], label=f"{model} on {data}")
    loss_ax.set(xlabel="step", ylabel="train/loss", yscale="log")
    acc_ax.set(xlabel="step", ylabel="val/acc")
    if acc_ax.lines:
        acc_ax.legend()
    fig.suptitle("best run (best seed of the best setting) of each architecture")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_best_seeds(best: dict, fresh: dict, path: Path) -> None:
    """Each architecture's best setting: test/acc of every seed (hollow: the selection's seeds, filled:
    make confirm's fresh ones) and the mean with its 95% t-interval; one panel per data set."""
    datasets = sorted({data for data, _ in best})
    fig, axes = plt.subplots(1, len(datasets), figsize=(max(6.0, 1.2 + 1.6 * len(best)), 4.5), squeeze=False)
    for ax, data in zip(axes[0], datasets):
        archs = [arch for arch in best if arch[0] == data]
        for i, arch in enumerate(archs):
            for shift, row, face in ((-0.12, best[arch][0], "none"), (0.12, fresh.get(arch), "C0")):
                if row is None or not row["n"]:
                    continue
                accs = sorted(r["metrics"]["test/acc"] for r in row["runs"] if r["metrics"].get("status") == OK)
                ax.scatter([i + shift - 0.05] * len(accs), accs, facecolors=face, edgecolors="C0", s=18, zorder=3)
                if row["test_acc_ci_low"] is not None:
                    err = [[row["test_acc_mean"] - row["test_acc_ci_low"]], [row["test_acc_ci_high"] - row["test_acc_mean"]]]
                    ax.errorbar([i + shift + 0.05], [row["test_acc_mean"]], yerr=err, fmt="s", color="k", capsize=4)
        ax.set_xticks(range(len(archs)), [model for _, model in archs])
        ax.set(xlim=(-0.6, len(archs) - 0.4), title=data, ylabel="test/acc")
    fig.suptitle("best setting of each architecture: test/acc per seed\n(hollow: the selection's seeds, "
                 "filled: fresh ones) and the mean with its 95% interval", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


FIGURES = {"best_seeds.png": "each architecture's best setting over seeds, with its 95% interval",
           "val_acc_vs_lr.png": "validation accuracy against lr (mean ± std over seeds)",
           "best_curves.png": "train/loss and val/acc of the best run of each architecture"}
