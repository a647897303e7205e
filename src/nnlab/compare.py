"""Tabulate finished runs, grouped by every override except the seed.

    python -m nnlab.compare [FOLDER ...]        # or: make compare ARGS="runs/sweeps/<time>"

Reads each run folder's .hydra/overrides.yaml and metrics.json under the given folders (default
runs/) and prints a markdown table: one row per configuration, n = how many seeds finished, and
mean ± sample std of each metric over them. Runs that did not finish (status other than ok) are
counted apart, so a diverged seed is visible instead of silently dropped.
"""
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from omegaconf import OmegaConf

COLUMNS = {"train/loss": 4, "train/acc": 4, "val/acc": 4, "test/acc": 4, "seconds": 1}  # name: decimals


def load_runs(folders: list[Path]) -> dict[str, list[dict]]:
    groups = defaultdict(list)
    for metrics_file in sorted(f for folder in folders for f in folder.rglob("metrics.json")):
        overrides = metrics_file.parent / ".hydra" / "overrides.yaml"
        typed = OmegaConf.to_container(OmegaConf.load(overrides)) if overrides.exists() else []
        config = ",".join(sorted(o for o in typed if not o.startswith("seed="))) or "(defaults)"
        groups[config].append(json.loads(metrics_file.read_text()))
    return groups


def cell(values: list[float], decimals: int) -> str:
    if not values:
        return "–"
    spread = f" ± {statistics.stdev(values):.{decimals}f}" if len(values) > 1 else ""
    return f"{statistics.mean(values):.{decimals}f}{spread}"


def table(groups: dict[str, list[dict]]) -> str:
    lines = [f"| config | n | not ok | {' | '.join(COLUMNS)} |", "|---|---|---|" + "---|" * len(COLUMNS)]
    for config, runs in sorted(groups.items()):
        ok = [r for r in runs if r.get("status") == "ok"]
        not_ok = ", ".join(sorted(r.get("status", "?") for r in runs if r.get("status") != "ok")) or "0"
        cells = [cell([r[c] for r in ok if c in r], decimals) for c, decimals in COLUMNS.items()]
        lines.append(f"| {config} | {len(ok)} | {not_ok} | {' | '.join(cells)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    folders = [Path(a) for a in sys.argv[1:]] or [Path("runs")]
    missing = [str(f) for f in folders if not f.is_dir()]
    if missing:
        sys.exit(f"nnlab: no such run folder: {', '.join(missing)} (runs land in runs/ by default)")
    groups = load_runs(folders)
    if not groups:
        sys.exit(f"nnlab: no metrics.json under {', '.join(map(str, folders))}: train something first (make train)")
    print(table(groups))
