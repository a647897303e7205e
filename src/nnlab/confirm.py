"""Rerun each architecture's chosen setting on fresh seeds, the measurement a verdict can rest on.

The best of many settings scores higher on the seeds it was chosen on than it will on new ones (the
winner's curse).

    python -m nnlab.confirm [FOLDER] [--seeds 5] [OVERRIDE ...]   # make confirm [DIR=runs/sweeps/<time>] SEEDS=5

Chooses in FOLDER (default: the latest sweep) as make compare does, the best mean val/acc of each
architecture, then runs every chosen setting on SEEDS fresh seeds through Hydra's multirun (its seeds as one
population, as make sweep trains them; OVERRIDE hydra/launcher=basic: one by one) into
FOLDER/confirm/, one run folder per setting and seed as in a sweep (a second call resumes it:
finished runs are skipped). make compare then bases its verdicts on those runs. Fresh means the
selection never saw the seed nor its data: they start 3 past the largest seed the sweep used, because
the spiral draws a run's validation and test sets with seed + 1 and seed + 2. Each setting is rerun
with its exact overrides (its sweep grid included, with the grid's values overridden by the setting's),
so a confirmation run differs from a selection run in its seed alone.
"""
import argparse
import gc
from pathlib import Path

if __name__ == "__main__":  # the command starts as python -m nnlab.train does (see its top): it trains
    gc.disable()
    from nnlab import busy
    busy.settle()  # before torch, which nnlab.compare imports

from nnlab.compare import CONFIRM, best_per_architecture, load_runs, summarize
from nnlab.errors import NnlabError, command
from nnlab.runs import read_yaml, sweep_folder

MAX_SEEDS = 1000  # a setting's fresh runs: more is a typo, not a measurement


def fresh_seeds(used: set[int], count: int) -> list[int]:
    """count consecutive seeds starting 3 past the largest used one (see the module docstring)."""
    start = max(used, default=-3) + 3
    return list(range(start, start + count))


def commands(folder: Path, count: int, extra: list[str]) -> list[list[str]]:
    """One multirun per architecture (nnlab.train's arguments): its chosen setting's overrides on the fresh seeds."""
    runs = load_runs(folder, strict=True)  # the settings it reruns are read from these folders
    best = best_per_architecture(summarize(runs))
    if not best:
        raise NnlabError(f"no setting in {folder} has every seed finished: nothing to confirm "
                         f"(finish the sweep with make sweep RESUME={folder})")
    seeds = ",".join(map(str, fresh_seeds({r["seed"] for r in runs}, count)))
    # a setting's seeds differ only in numbers: they train as one population, as make sweep trains them
    launcher = [] if any(e.startswith("hydra/launcher=") for e in extra) else ["hydra/launcher=population"]
    out = []
    for row, _ in best.values():
        overrides = read_yaml(row["runs"][0]["dir"] / ".hydra" / "overrides.yaml")  # checked by load_runs
        keep = [o for o in overrides if not o.startswith("seed=")]
        out.append(["--multirun", *keep, f"seed={seeds}", f"hydra.sweep.dir={folder / CONFIRM}", *launcher, *extra])
    return out


def launch(argv: list[str]) -> None:
    """`python -m nnlab.train *argv`, in this process: the architectures' sweeps share one start (importing
    torch and Lightning took 3.3 s of a 5 s start on the 2-core VM of experiments/README.md)."""
    from nnlab import train
    train.main(argv)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m nnlab.confirm", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, help="a sweep folder (default: the latest under runs/sweeps/)")
    parser.add_argument("--seeds", type=int, default=5, help="fresh seeds per chosen setting")
    extra = [a for a in argv if "=" in a and not a.startswith("-")]  # Hydra overrides, for every run
    args = parser.parse_args([a for a in argv if a not in extra])
    if args.seeds < 2:
        raise NnlabError(f"--seeds {args.seeds}: a verdict needs at least 2 seeds a side (SEEDS=5 is the default)")
    if args.seeds > MAX_SEEDS:
        raise NnlabError(f"--seeds {args.seeds}: at most {MAX_SEEDS} fresh seeds a setting (SEEDS=5 is the default)")
    folder = sweep_folder(args.folder)
    for line in commands(folder, args.seeds, extra):
        print("confirm: python -m nnlab.train", " ".join(line), flush=True)
        try:
            launch(line)
        except NnlabError as e:
            raise NnlabError(f"{e}; a confirmation run did not finish: rerun make confirm DIR={folder} to finish "
                             "them") from None
    print(f"fresh-seed runs in {folder / CONFIRM}; make compare DIR={folder} bases its verdicts on them")


if __name__ == "__main__":
    import nnlab.train  # noqa: F401  with the garbage collector still off
    gc.freeze()
    gc.enable()
    command(main)
