"""Compare the architectures of a sweep, each at its best setting, and say how sure the verdict is.

This is the tuning playbook's way: architecture is the question, lr and gamma are nuisance parameters
tuned per architecture, and each architecture is judged at its best.

    python -m nnlab.compare [FOLDER ...]   # make compare [DIR=runs/sweeps/<time>]; default: the latest sweep

Reads every run's saved config (.hydra/) and metrics.json under FOLDER and writes there:
  summary.csv / summary.md   one row per setting (every override but the seed): n finished seeds,
                             mean ± sample std of val/acc and test/acc, test/acc's 95% t-interval over
                             seeds (and a bootstrap one from 5 seeds), the test set's binomial standard
                             error, and the status counts; summary.md opens with the verdicts and
                             embeds the figures
  val_acc_vs_lr.png          validation accuracy against lr, one panel per architecture, a line per gamma
  best_curves.png            train/loss and val/acc of the best run of each architecture
  best_seeds.png             each architecture's best-setting test/acc per seed, with its interval
The best setting of each architecture is chosen on val/acc (never test/acc), among settings whose
every seed finished; its test/acc is then reported. A best lr or gamma on the edge of the grid is
flagged (the optimum may lie outside it) unless its neighbour inside the grid scores the same within
noise (val/acc: flat there, nothing to follow outward). Every pair of architectures on the same data
gets a verdict on test/acc (nnlab/stats.py: paired by seed, Holm-corrected across the pairs), and
within each architecture the chosen setting gets one against its runner-up. When `make confirm`
has rerun the chosen settings on fresh seeds (FOLDER/confirm/), the verdicts use those runs, which
the choice never saw, and the selection-time score is shown beside the fresh one.
Several folders are compared on equal terms (each architecture's best in each folder) into
runs/comparisons/<names>/. Nothing here depends on timing, so the same sweep compared twice gives
byte-identical summary files.
"""
import argparse
import csv
import os
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from nnlab import search, stats, study
from nnlab.errors import NnlabError, command
from nnlab.figures import FIGURES, plot_best_curves, plot_best_seeds, plot_val_vs_lr
from nnlab.runs import OK, MetricsError, RunFolderError, read_metrics, read_yaml, sweep_folder

FIELDS = ["setting", "data", "model", "lr", "gamma", "n", "val_acc_mean", "val_acc_std",
          "test_acc_mean", "test_acc_std", "val_loss_mean", "statuses",
          "test_acc_ci_low", "test_acc_ci_high", "test_acc_boot_low", "test_acc_boot_high", "test_acc_se"]
CONFIRM = "confirm"  # make confirm's runs, inside the sweep folder they confirm


def load_runs(folder: Path, label: str | None = None, strict: bool = False) -> list[dict]:
    """Every run under folder except make confirm's (FOLDER/confirm/). With a label (several folders
    compared), models and settings carry it, so each folder's architectures are contenders of their own.
    A folder may come from elsewhere: a run whose files nnlab cannot use (a link, values of the wrong
    kind: run_record) is left out with a note on stderr, or, `strict`, refused."""
    runs = []
    for root, dirs, _ in os.walk(folder):  # links to folders are never entered
        dirs.sort()
        if ".hydra" not in dirs or Path(root).relative_to(folder).parts[:1] == (CONFIRM,):
            continue
        try:
            runs.append(run_record(Path(root), label))
        except NnlabError as e:
            if strict:
                raise
            print(f"nnlab: {e}; left out of the comparison", file=sys.stderr)
    return runs


def run_record(run: Path, label: str | None) -> dict:
    """What compare reads of a run folder, each file checked: metrics.json (runs.read_metrics), and in
    .hydra/ the overrides (a list of strings), the config (a whole-number seed; lr and gamma numbers or
    absent) and Hydra's record of the model and data chosen. RunFolderError names the file and the fault."""
    metrics = read_metrics(run) or {}
    if metrics.get("status") == OK and (missing := [k for k in ("val/acc", "test/acc", "val/loss") if k not in metrics]):
        raise MetricsError(f"{run / 'metrics.json'} is not usable (status ok without {', '.join(missing)})")
    hydra = run / ".hydra"
    overrides, cfg, recorded = (read_yaml(hydra / f) for f in ("overrides.yaml", "config.yaml", "hydra.yaml"))
    if not (isinstance(overrides, list) and all(isinstance(o, str) for o in overrides)):
        raise RunFolderError(f"{hydra / 'overrides.yaml'} is not a list of overrides")
    cfg = cfg if isinstance(cfg, dict) else {}
    seed, lr, gamma = cfg.get("seed"), (cfg.get("optimizer") or {}).get("lr"), (cfg.get("scheduler") or {}).get("gamma")
    number = lambda v: v is None or isinstance(v, int | float) and not isinstance(v, bool)  # noqa: E731
    if type(seed) is not int or not number(lr) or not number(gamma):
        raise RunFolderError(f"{hydra / 'config.yaml'} has no whole-number seed, or an lr or gamma that is not a number")
    choices = recorded
    for key in ("hydra", "runtime", "choices"):
        choices = choices.get(key) if isinstance(choices, dict) else None
    if not (isinstance(choices, dict) and isinstance(choices.get("model"), str) and isinstance(choices.get("data"), str)):
        raise RunFolderError(f"{hydra / 'hydra.yaml'} does not record the model and data chosen")
    setting = ",".join(sorted(o for o in overrides if not o.startswith(("seed=", "sweep=")))) or "(defaults)"
    return {"dir": run, "metrics": metrics, "setting": f"{label}: {setting}" if label else setting, "seed": seed,
            "data": choices["data"], "model": f"{choices['model']}@{label}" if label else choices["model"], "lr": lr,
            "gamma": gamma}


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample std; the std is None for one value (no spread is measured by one seed)."""
    if not values:
        return None, None
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else None


def at_chance(metrics: dict) -> bool:
    """A finished run that learned nothing: its val/acc within 0.02 of guessing, 1 / classes (a spiral
    MLP stuck at 0.333), or below it. Runs recorded before `classes` was written are never flagged."""
    classes = metrics.get("classes")
    return bool(classes) and metrics["val/acc"] <= 1 / classes + 0.02


def order(row: dict) -> tuple:
    """Rows by data, model, then lr and gamma as numbers (10.0 after 3.0), then the setting."""
    number = lambda v: (v is None, v if isinstance(v, int | float) else 0)  # noqa: E731
    return row["data"], row["model"], number(row["lr"]), number(row["gamma"]), row["setting"]


def summarize(runs: list[dict]) -> list[dict]:
    by_setting = defaultdict(list)
    for r in runs:
        by_setting[r["setting"]].append(r)
    rows = []
    for setting, group in sorted(by_setting.items()):
        ok = [r["metrics"] for r in group if r["metrics"].get("status") == OK]
        statuses = defaultdict(int)
        for r in group:
            statuses[r["metrics"].get("status", "unfinished")] += 1
        if chance := sum(at_chance(m) for m in ok):  # ok, yet no better than guessing: say so
            statuses["ok at chance"] = chance
        val, test = mean_std([m["val/acc"] for m in ok]), mean_std([m["test/acc"] for m in ok])
        ci, boot = stats.t_interval([m["test/acc"] for m in ok]), stats.bootstrap_interval([m["test/acc"] for m in ok])
        n_test = {m.get("test/n") for m in ok}  # one test set size for the setting, or no SE
        se = stats.binomial_se(test[0], n_test.pop()) if len(n_test) == 1 and None not in n_test else None
        rows.append({"setting": setting, "data": group[0]["data"], "model": group[0]["model"],
                     "lr": group[0]["lr"], "gamma": group[0]["gamma"], "n": len(ok),
                     "val_acc_mean": val[0], "val_acc_std": val[1], "test_acc_mean": test[0], "test_acc_std": test[1],
                     "val_loss_mean": mean_std([m["val/loss"] for m in ok])[0],
                     "statuses": " ".join(f"{k}:{v}" for k, v in sorted(statuses.items())),
                     "test_acc_ci_low": ci and ci[0], "test_acc_ci_high": ci and ci[1],
                     "test_acc_boot_low": boot and boot[0], "test_acc_boot_high": boot and boot[1], "test_acc_se": se,
                     "complete": len(ok) == len(group), "runs": group})
    return sorted(rows, key=order)


def best_per_architecture(rows: list[dict], drawn: bool = False) -> dict[tuple[str, str], tuple[dict, list[str]]]:
    """(data, model) -> (best row by mean val/acc among complete settings, edge-of-grid warnings).
    `drawn`: the settings are draws from a space (a study's trials, PBT's members), whose extremes are
    no grid's edge: no warnings."""
    best = {}
    for arch in sorted({(r["data"], r["model"]) for r in rows}):
        mine = [r for r in rows if (r["data"], r["model"]) == arch]
        eligible = [r for r in mine if r["complete"] and r["n"]]
        if not eligible:
            continue
        top = max(eligible, key=lambda r: (r["val_acc_mean"], -r["val_loss_mean"]))
        warnings = []
        for knob, limit in (() if drawn else (("lr", None), ("gamma", 1.0))):  # gamma = 1 (no decay): a true boundary
            grid = sorted({r[knob] for r in mine if r[knob] is not None})
            value = top[knob]
            if len(grid) > 1 and value in (grid[0], grid[-1]) and value != limit:
                inward = grid[1] if value == grid[0] else grid[-2]
                other = "gamma" if knob == "lr" else "lr"
                beside = [r for r in eligible if r[knob] == inward and r[other] == top[other]]
                if beside and flat(top, beside[0]):  # no trend to follow past the edge
                    continue
                side = "smallest" if value == grid[0] else "largest"
                warnings.append(f"best {knob} {value} is the {side} tried: widen the grid past it")
        best[arch] = top, warnings
    return best


def val_scores(row: dict) -> dict[int, float]:
    """{seed: val/acc} of a setting's finished runs."""
    return {r["seed"]: r["metrics"]["val/acc"] for r in row["runs"] if r["metrics"].get("status") == OK}


def flat(a: dict, b: dict) -> bool:
    """Whether two settings' val/acc cannot be told apart: the 95% interval of their difference (paired
    by seed where they share seeds) holds 0. One seed a side tells nothing: not flat."""
    x, y = val_scores(a), val_scores(b)
    if min(len(x), len(y)) < 2:
        return False
    d = stats.difference("a", "b", x, y)
    return d.interval[0] <= 0 <= d.interval[1]


def runners_up(rows: list[dict], best: dict) -> list[stats.Difference]:
    """Within each architecture, its chosen setting against the next best on val/acc, on test/acc over
    the selection's seeds: whether the choice is a real one or a coin toss among equals. Each is its own
    question (Holm over one p is that p)."""
    diffs = []
    for arch, (top, _) in best.items():
        others = [r for r in rows if (r["data"], r["model"]) == arch and r["complete"] and r["n"] and r is not top]
        if not others:
            continue
        second = max(others, key=lambda r: (r["val_acc_mean"], -r["val_loss_mean"]))
        a, b = test_scores(top), test_scores(second)
        if min(len(a), len(b)) < 2:
            continue
        d = stats.difference(f"{arch[1]} {label(top)} (chosen)", f"{arch[1]} {label(second)}", a, b)
        d.p_holm = d.p
        diffs.append(d)
    return diffs


def label(row: dict) -> str:
    """A setting as its lr and gamma, what tells settings of one architecture apart in a grid."""
    return f"lr {row['lr']} gamma {row['gamma']}" if row["lr"] is not None else row["setting"]


def test_scores(row: dict) -> dict[int, float]:
    """{seed: test/acc} of a setting's finished runs."""
    return {r["seed"]: r["metrics"]["test/acc"] for r in row["runs"] if r["metrics"].get("status") == OK}


def confirmed(folder: Path, best: dict, label: str | None = None) -> dict:
    """arch -> the row of make confirm's fresh-seed runs of its chosen setting, where there are any."""
    fresh = {r["setting"]: r for r in summarize(load_runs(folder / CONFIRM, label))} if (folder / CONFIRM).is_dir() else {}
    for setting in sorted(set(fresh) - {row["setting"] for row, _ in best.values()}):
        print(f"nnlab: {folder / CONFIRM} holds runs of {setting}, no architecture's chosen setting: not used "
              f"(make confirm DIR={folder} runs the chosen ones)", file=sys.stderr)
    return {arch: fresh[row["setting"]] for arch, (row, _) in best.items() if fresh.get(row["setting"], {}).get("n")}


def differences(best: dict, fresh: dict) -> list[stats.Difference]:
    """Every pair of architectures on the same data, on the fresh seeds where both have them (else
    the selection's), Holm-corrected together. Pairs with fewer than 2 seeds a side are left out."""
    diffs = []
    for (data_a, a), (data_b, b) in ((x, y) for i, x in enumerate(best) for y in list(best)[i + 1:]):
        if data_a != data_b:
            continue
        use_fresh = (data_a, a) in fresh and (data_b, b) in fresh
        rows = [fresh[arch] if use_fresh else best[arch][0] for arch in ((data_a, a), (data_b, b))]
        scores = [test_scores(r) for r in rows]
        if min(len(x) for x in scores) < 2:
            continue
        if statistics.mean(scores[1].values()) > statistics.mean(scores[0].values()):  # A is the higher: A - B >= 0
            (a, b), scores = (b, a), scores[::-1]
        diffs.append(stats.difference(a, b, *scores))
    for d, p in zip(diffs, stats.holm([d.p for d in diffs])):
        d.p_holm = p
    return diffs


def fmt(mean: float | None, std: float | None) -> str:
    """mean ± std; a dash for a spread one seed cannot measure."""
    return "–" if mean is None else f"{mean:.4f} ± {'–' if std is None else f'{std:.4f}'}"


def fmt_interval(low: float | None, high: float | None) -> str:
    return "–" if low is None else f"[{low:.4f}, {high:.4f}]"


def fmt_test(r: dict) -> str:
    """test/acc of a row: mean [95% t-interval over seeds], then the bootstrap interval from 5 seeds."""
    if not r["n"]:
        return "–"
    boot = f" boot {fmt_interval(r['test_acc_boot_low'], r['test_acc_boot_high'])}" if r["test_acc_boot_low"] else ""
    return f"{r['test_acc_mean']:.4f} {fmt_interval(r['test_acc_ci_low'], r['test_acc_ci_high'])}{boot}"


def fmt_se(r: dict) -> str:
    return "–" if r["test_acc_se"] is None else f"±{r['test_acc_se']:.4f}"


def write_csv(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        out = csv.DictWriter(f, FIELDS, extrasaction="ignore", lineterminator="\n")
        out.writeheader()
        for r in rows:
            out.writerow({k: f"{v:.6f}" if isinstance(v, float) and k.startswith(("val_", "test_")) else
                          "" if v is None else v for k, v in r.items()})


def markdown(rows: list[dict], best: dict, fresh: dict, diffs: list[stats.Difference]) -> str:
    on = "the fresh seeds of make confirm" if fresh else "the selection's seeds (make confirm reruns on fresh ones)"
    lines = [f"Verdicts on test/acc, 95% intervals in percentage points, on {on}:", ""]
    lines += [f"- {stats.verdict(d)}" for d in diffs] or ["- none: no two architectures on the same data with 2+ seeds each"]
    if seconds := runners_up(rows, best):
        lines += ["", "Within each architecture, its chosen setting against the runner-up on val/acc (test/acc, the "
                  "selection's seeds):", "", *[f"- {stats.verdict(d)}" for d in seconds]]
    lines += ["", "Best setting per architecture, chosen on mean val/acc (settings with every seed finished); test/acc",
              "as mean [95% t-interval over seeds] (bootstrap interval from 5 seeds) and the test set's own",
              "binomial standard error:", "",
              "| data | model | best setting | n | val/acc | test/acc [95% CI] | test set SE | fresh n | fresh test/acc [95% CI] |",
              "|---|---|---|---|---|---|---|---|---|"]
    for arch, (r, _) in best.items():
        f = fresh.get(arch)
        again = f"{f['n']} | {fmt_test(f)}" if f else "– | –"
        lines.append(f"| {arch[0]} | {arch[1]} | {r['setting']} | {r['n']} | {fmt(r['val_acc_mean'], r['val_acc_std'])} | "
                     f"{fmt_test(r)} | {fmt_se(r)} | {again} |")
    if diffs:
        lines += ["", "Pairs (A - B in test/acc; p-values two-sided; Holm across the pairs; the sign-flip test is exact,",
                  "and with n pairs it cannot go below 2/2^n):", "",
                  "| A | B | seeds | A - B [95% CI] | t-test p | Holm p | sign-flip p (smallest possible) | P(A > B) |",
                  "|---|---|---|---|---|---|---|---|"]
        for d in diffs:
            kind = f"{d.n} paired" if d.paired else f"{d.n}+ unpaired (Welch)"
            flips = f"{d.p_sign_flip:.3g} ({d.p_min_sign_flip:.3g})" if d.paired else "– (unpaired)"
            lines.append(f"| {d.a} | {d.b} | {kind} | {stats.pt(d.mean)} pt [{stats.pt(d.interval[0])}, "
                         f"{stats.pt(d.interval[1])}] | {d.p:.2g} | {d.p_holm:.2g} | {flips} | {d.p_better:.2f} |")
    chosen = {id(r) for r, _ in best.values()}
    lines += ["", "Every setting, by architecture then lr and gamma; ★ marks each architecture's chosen one (test/acc",
              "as above; accuracy intervals are clipped to [0, 1]; \"ok at chance\": finished no better than guessing):",
              "", "| | setting | n | val/acc | test/acc [95% CI] | test set SE | statuses |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {'★' if id(r) in chosen else ''} | {r['setting']} | {r['n']} | "
                     f"{fmt(r['val_acc_mean'], r['val_acc_std'])} | {fmt_test(r)} | {fmt_se(r)} | {r['statuses']} |")
    warnings = [f"- {data}/{model}: {w}" for (data, model), (_, ws) in best.items() for w in ws]
    return "\n".join(lines + (["", "Warnings:", "", *warnings] if warnings else [])) + "\n"


def compare(folders: Path | list[Path], out: Path | None = None) -> str:
    """Summarise one sweep folder into itself, or several into `out` (their architectures side by side)."""
    folders = [folders] if isinstance(folders, Path) else folders
    labels = [f.name for f in folders] if len(folders) > 1 else [None]
    runs = [run for folder, label in zip(folders, labels) for run in load_runs(folder, label)]
    if not runs:
        raise NnlabError(f"no runs under {' '.join(map(str, folders))}: run a sweep first (make sweep SWEEP=spiral_grid)")
    out = out or folders[0]
    out.mkdir(parents=True, exist_ok=True)
    rows = summarize(runs)
    drawn = any(study.storage_file(f) for f in folders) or any("pbt" in r["metrics"] for r in runs)
    best = best_per_architecture(rows, drawn)
    fresh = {}
    for folder, label in zip(folders, labels):
        fresh.update(confirmed(folder, {a: b for a, b in best.items() if label is None or a[1].endswith(f"@{label}")}, label))
    diffs = differences(best, fresh)
    write_csv(rows, out / "summary.csv")
    for name in FIGURES:  # those of an earlier compare: what is there afterwards was drawn now
        (out / name).unlink(missing_ok=True)
    plot_val_vs_lr(rows, out / "val_acc_vs_lr.png")
    if best:
        plot_best_curves(best, out / "best_curves.png")
        plot_best_seeds(best, fresh, out / "best_seeds.png")
    text = markdown(rows, best, fresh, diffs)
    figures = [f"![{name}]({name})  \n{what}" for name, what in FIGURES.items() if (out / name).exists()]
    (out / "summary.md").write_text(f"# {' + '.join(map(str, folders))}\n\n{text}\n" + "\n\n".join(figures) + "\n")
    for folder in folders:  # a study's folder (make sweep SWEEP=spiral_search): its trials and history too
        if study.storage_file(folder):
            text += "\n" + search.report(folder)
        elif (folder / "best.yaml").exists() and (pbt := pbt_report(folder)):  # PBT's: its winner and lineage
            text += "\n" + pbt
    return text


def pbt_report(folder: Path) -> str | None:
    from nnlab import pbt  # Optuna's distributions: imported for PBT folders only
    return pbt.report(folder)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m nnlab.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="*", type=Path, metavar="FOLDER",
                        help="sweep folders (default: the latest under runs/sweeps/)")
    folders = [sweep_folder(f) for f in parser.parse_args(argv).folders or [None]]
    # several folders: their own report folder, named by theirs, so no sweep folder is written into
    out = Path("runs/comparisons") / "+".join(f.name for f in folders) if len(folders) > 1 else folders[0]
    print(compare(folders, out))
    print(f"written: {out}/" + ", ".join(["summary.csv", "summary.md", *(f for f in FIGURES if (out / f).exists())]))
    for folder in folders:
        if study.storage_file(folder):
            print(f"written: {folder}/" + ", ".join(f for f in search.REPORT if (folder / f).exists()))
        elif (folder / "lineage.png").exists():
            print(f"written: {folder}/lineage.png")


if __name__ == "__main__":
    command(main)
