"""make tensorboard: TensorBoard over every run below a folder, each named by what tells it apart.

    python -m nnlab.board [FOLDER] [TENSORBOARD FLAG ...]   # make tensorboard [RUNS=runs] [ARGS="--port 6007"]

TensorBoard names a run by its path below --logdir: runs/sweeps/<time>/data.steps_per_epoch=5,data=spiral,
model=mlp,optimizer.lr=1.0,... cut off in its run list before the parts that differ. Here each run is
named by the overrides that differ between the runs of its sweep (its folder's runs), short keys first
("mlp lr=1.0 gamma=0.7 seed=2"), then where it lies, and TensorBoard reads them through a folder of
links of those names (TensorBoard's advice for naming runs), made in a temporary folder and deleted
when TensorBoard stops. Served on 127.0.0.1 only: TensorBoard has no login.
"""
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

from nnlab.errors import NnlabError, command
from nnlab.runs import RunFolderError, read_yaml, refuse_links

GROUPS = ("model", "data", "optimizer", "scheduler", "trainer", "logger", "experiment", "sweep")


def short(override: str) -> str:
    """model=mlp -> mlp, optimizer.lr=1.0 -> lr=1.0: a group's choice by its option, a key by its last part."""
    key, _, value = override.partition("=")
    key = key.lstrip("+~")
    return value if key in GROUPS else f"{key.rsplit('.', 1)[-1]}={value}"


def runs_below(folder: Path) -> dict[Path, list[str]]:
    """{run folder: its overrides} of every run below `folder` with TensorBoard events; a run whose
    events or overrides cannot be read as nnlab wrote them (a link, not YAML) is left out, said on stderr."""
    found = {}
    for events in sorted(folder.rglob("tensorboard")):  # rglob enters no linked folder
        run = events.parent
        if not events.is_dir() or not (run / ".hydra" / "overrides.yaml").exists():
            continue  # not a run's (an attempt set aside keeps its events beside its own .hydra)
        try:
            refuse_links(events)
            overrides = read_yaml(run / ".hydra" / "overrides.yaml")
        except RunFolderError as e:
            print(f"nnlab: {e}; {run} left out", file=sys.stderr)
            continue
        if isinstance(overrides, list):
            found[run] = [str(o) for o in overrides]
    return found


def names(runs: dict[Path, list[str]], root: Path) -> dict[Path, str]:
    """Each run's name, unique: in a sweep, the overrides that differ between its runs, shortened, then
    the sweep's folder in parentheses (unless it is `root`); a run of its own, its overrides and its time."""
    sweeps = defaultdict(list)
    for run in runs:
        sweeps[run.parent].append(run)
    named, taken = {}, set()
    for parent, group in sweeps.items():
        sweep = (parent / "multirun.yaml").exists()
        shared = set.intersection(*(set(runs[r]) for r in group)) if sweep and len(group) > 1 else set()
        for run in group:
            label = " ".join(short(o) for o in runs[run] if o not in shared)
            if not sweep:
                label = f"{label} {run.name}".strip()  # runs/<overrides>/<time>: the time tells them apart
            elif parent != root:
                label = f"{label or run.name} ({parent.relative_to(root).as_posix()})"
            name, n = label.replace("/", "|"), 2  # one path part
            while name in taken:
                name, n = f"{label.replace('/', '|')} #{n}", n + 1
            named[run] = name
            taken.add(name)
    return named


def main(argv: list[str]) -> None:
    folder = Path(argv[0]) if argv and not argv[0].startswith("-") else Path("runs")
    flags = argv[1:] if argv and not argv[0].startswith("-") else argv
    if "--help" in flags or "-h" in flags:
        print(__doc__)
        return
    if not folder.is_dir():
        raise NnlabError(f"no such folder: {folder} (make tensorboard RUNS=<folder of runs>; default runs/)")
    if any(f.startswith(("--logdir", "--host", "--bind_all")) for f in flags):
        raise NnlabError("make tensorboard chooses --logdir (RUNS=) and --host 127.0.0.1 itself: pass other flags")
    runs = runs_below(folder.resolve())
    if not runs:
        raise NnlabError(f"no run with TensorBoard events below {folder}: train one first (make train)")
    with tempfile.TemporaryDirectory(prefix="nnlab-board-") as view:
        for run, name in names(runs, folder.resolve()).items():
            (Path(view) / name).symlink_to(run / "tensorboard", target_is_directory=True)
        print(f"tensorboard: {len(runs)} runs below {folder}, named by what tells them apart", flush=True)
        serve(["--logdir", view, "--host", "127.0.0.1", *flags])


def serve(flags: list[str]) -> None:
    """TensorBoard's own command with `flags`, as its executable runs it (until Ctrl-C)."""
    from tensorboard.main import run_main  # absl's app and logging: imported only to serve
    sys.argv = ["tensorboard", *flags]
    run_main()


if __name__ == "__main__":
    command(main)
