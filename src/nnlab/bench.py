"""nnlab side by side with plain PyTorch doing the same work, timed on this machine.

    python -m nnlab.bench [repeats=3] [spiral_steps=10000] [out=bench.json] [data.<key>=...]   # make bench

1. One MNIST epoch of the notebook's recipe (conf/train.yaml: CNN, SGD lr 0.001, batch 64; 55,000
   training images, 5,000 held out to validate), then the 10,000 test images, three ways:
     nnlab     nnlab.train.train(cfg), as `python -m nnlab.train trainer.max_epochs=1` runs it:
               Lightning, validation, TensorBoard, checkpoint, the printed line, the figures
     plain     the same arithmetic in a plain PyTorch loop over the tensors in memory, nothing more
     notebook  the notebook's own loop: torchvision MNIST with ToTensor, DataLoader(batch_size=64,
               shuffle=True, num_workers=1), on the same images
2. 10,000 full-batch gradient steps of the spiral MLP (experiment=spiral_mlp): nnlab and plain.
3. A population of spiral_grid's 36 MLPs (lr x gamma x seed), 1,000 full-batch steps each (an epoch), built as
   the population launcher builds it: nnlab (Lightning's Trainer fits and tests the population
   module) and plain (the module's own steps, validation and test in a plain loop, no Lightning).

4. `sweep=<grid>` instead (e.g. sweep=spiral_grid): the whole `make sweep SWEEP=<grid>`, from the
   command to its end (imports, composition, every run and its outputs), once through
   hydra/launcher=population and once through hydra/launcher=basic, both with threads=1 (on a busy
   CPU a second thread per run only waits), and the fixed cost a 1-step run adds to a population
   sweep (the grid's runs cut to one step, against half as many: seconds / run). Its own table.
   Any other key=value is an override of the sweep, e.g. a shortened MNIST grid:
     python -m nnlab.bench sweep=mnist_grid trainer.max_epochs=1 data.train_images=6400 seed=0

Each timing runs in a fresh process, from the data files (or the spiral's generator) to test
scores, imports excluded, and its peak memory (max RSS) is its own; the ways alternate within each
repeat, so load from other processes hits them alike. Prints a markdown table (median and min-max
over repeats; ratios of medians, with the range of the same-repeat ratios) and writes it with the
machine facts to bench.json. The ratios' targets are in docs/speed.md (never in a timed test).
"""
import contextlib
import io
import itertools
import json
import logging
import math
import multiprocessing as mp
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from nnlab import CONF_DIR
from nnlab.classifier import Classifier
from nnlab.config import check
from nnlab.errors import NnlabError, command
from nnlab.notebook import run_notebook
from nnlab.population.grouping import Job
from nnlab.population.loop import keep_freed_memory
from nnlab.population.member import Member, MemberRuns, tested
from nnlab.population.module import Groups, Population, Scoring, trainer_for
from nnlab.runs import OK, run_status
from nnlab.train import parts, train

CASES = {"mnist": ("nnlab", "plain", "notebook"), "spiral": ("nnlab", "plain"), "population": ("nnlab", "plain")}
RATIOS = [("mnist", "nnlab", "plain"), ("mnist", "nnlab", "notebook"), ("spiral", "nnlab", "plain"),
          ("population", "nnlab", "plain")]  # targets: docs/speed.md
RESULTS = ("train/loss_epoch", "train/acc", "val/loss", "val/acc", "test/loss", "test/acc")
TITLES = {"mnist": "MNIST epoch, CNN, batch 64", "spiral": "spiral MLP, {steps:,} full-batch steps",
          "population": "{members} spiral MLPs, {steps_each:,} full-batch steps each"}
GRID = {"optimizer.lr": (0.3, 1.0, 3.0, 10.0), "scheduler.gamma": (0.7, 0.9, 1.0), "seed": (0, 1, 2)}  # spiral_grid's


def config(case: str, run_dir: str, spiral_steps: int, mnist_overrides: list[str]) -> DictConfig:
    overrides = (["trainer.max_epochs=1", *mnist_overrides] if case == "mnist" else  # spiral_mlp: 10 epochs
                 ["experiment=spiral_mlp", f"data.steps_per_epoch={spiral_steps // 10}"] if case == "spiral" else
                 ["sweep=spiral_grid", "model=mlp", "trainer.max_epochs=1", f"data.steps_per_epoch={spiral_steps // 10}"])
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=[f"run_dir={run_dir}", *overrides])


def run_nnlab(cfg: DictConfig) -> dict:
    with contextlib.redirect_stdout(io.StringIO()):  # its lines are printed all the same, out of sight
        metrics = train(cfg)
    return {k: metrics[k] for k in RESULTS}


def run_plain(cfg: DictConfig) -> dict:
    """nnlab's arithmetic in a plain loop: the same init, batches (nnlab's TensorLoader over the same
    tensors), step (Classifier.step: loss, L2 and epoch sums, used here without Lightning), optimizer,
    schedule and evaluation, and the train loss read every log_interval steps as the notebook did.
    Nothing more: no guards, logger, checkpoint or figures."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.use_deterministic_algorithms(True)  # as the Trainer's deterministic=True, which also sets:
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's deterministic mode (GPU)
    L.seed_everything(cfg.seed, verbose=False)
    data, module = parts(cfg)  # as a run builds them: the same init
    net = module.net.to(device)
    for sums in module.sums.values():
        sums.to(device)
    data.setup()  # read the files (or draw the spiral), split: tensors in memory
    data.to(device)  # as nnlab holds them: on the GPU, when there is one
    optimizer = module.make_optimizer(net.parameters())
    assert module.hparams.scheduler_interval == "epoch", "the plain loop steps its schedule once an epoch"
    scheduler = module.make_scheduler(optimizer)
    step, logged = 0, []
    for _ in range(cfg.trainer.max_epochs):
        net.train()
        for batch in data.train_dataloader():
            optimizer.zero_grad()
            loss = module.step(batch, "fit")
            loss.backward()
            optimizer.step()
            step += 1
            if step % cfg.log_interval == 0:
                logged.append(loss.item())
        scheduler.step()
        train = module.sums["fit"].pop(lambda t: t)
        val = evaluate(module, data.val_dataloader(), "val")
    test = evaluate(module, data.test_dataloader(), "test")
    return dict(zip(RESULTS, (t.item() for t in (*train, *val, *test))))


@torch.inference_mode()
def evaluate(module: Classifier, loader, stage: str) -> tuple[Tensor, Tensor]:
    module.eval()
    for batch in loader:
        module.step(batch, stage)
    return module.sums[stage].pop(lambda t: t)  # (mean loss, accuracy)


def members() -> int:
    return math.prod(len(values) for values in GRID.values())


def population(cfg: DictConfig) -> Population:
    """spiral_grid's MLP members, each its config with its numbers set, built as the launcher builds them."""
    members, shared = [], {}
    for i, numbers in enumerate(itertools.product(*GRID.values())):
        own = cfg.copy()
        for key, value in zip(GRID, numbers):
            OmegaConf.update(own, key, value)
        folder = Path(cfg.run_dir, str(i))
        folder.mkdir()
        members.append(Member(Job(i, [], {}, ()), check(own), folder, folder / "train.log"))
        members[-1].build(shared)
    torch.set_num_threads(1)  # as a sweep's population (nnlab.population.module.train_population)
    keep_freed_memory()
    return Population(members, "vmap", checkpoint_every=0)


def run_population(cfg: DictConfig) -> dict:
    module = population(cfg)
    trainer = trainer_for(module)
    trainer.fit(module)
    trainer.test(module, verbose=False)
    return members_mean(module)


def run_population_plain(cfg: DictConfig) -> dict:
    """The population module's own steps, validation and test in a plain loop, in Lightning's order: what
    Lightning's loop adds is the difference. The module reads a trainer's should_stop and current_epoch."""
    module = population(cfg)
    module.trainer = SimpleNamespace(should_stop=False, current_epoch=0)
    torch.use_deterministic_algorithms(cfg.trainer.deterministic)  # as the Trainer sets it
    for epoch in range(module.epochs):
        module.trainer.current_epoch = epoch
        for group in Groups(module):
            module.training_step(group, group)
        score(module, "val")
        MemberRuns().on_train_epoch_end(module.trainer, module)  # as Lightning calls it: before the module's
        module.on_train_epoch_end()
        if module.trainer.should_stop:
            break
    score(module, "test")
    return members_mean(module)


@torch.inference_mode()  # as Lightning's evaluation loops
def score(module: Population, stage: str) -> None:
    for i in Scoring(module, stage):
        module.score(i, stage)
    module.end_scoring(stage)


def members_mean(module: Population) -> dict:
    for m in module.members:
        tested(m)
    return {k: statistics.mean(m.metrics[k] for m in module.members) for k in RESULTS}


WAYS = {"nnlab": run_nnlab, "plain": run_plain, "notebook": run_notebook,
        ("population", "nnlab"): run_population, ("population", "plain"): run_population_plain}


def measure(case: str, way: str, spiral_steps: int, mnist_overrides: list[str]) -> dict:
    """One timed run of `way` in this process: seconds, its scores, and peak memory (max RSS of this
    process: the notebook's DataLoader worker process is not in it; on a GPU, also the most memory
    torch allocated there)."""
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    mib = lambda kib: round(kib / 1024)  # noqa: E731  (Linux reports max RSS in KiB)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with tempfile.TemporaryDirectory() as run_dir:
        cfg = config(case, run_dir, spiral_steps, mnist_overrides)
        start = time.perf_counter()
        results = WAYS.get((case, way), WAYS[way])(cfg)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    gpu = {"gpu_peak_mib": round(torch.cuda.max_memory_allocated() / 2**20)} if torch.cuda.is_available() else {}
    return {"seconds": seconds, "peak_mib": mib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss), **gpu,
            "start_mib": mib(before), "threads": torch.get_num_threads(), "results": results}


def in_fresh_process(fn, *args):
    """fn(*args) in a new process forked from a server that has imported nnlab (and torch) and done
    nothing else: no memory, caches or thread pools carried over from the runs before."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["nnlab.train", "nnlab.data"])  # the slow imports (this module: __main__ too)
    with ProcessPoolExecutor(1, mp_context=ctx) as pool:
        return pool.submit(fn, *args).result()


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() \
        else platform.processor()
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "lightning": L.__version__,
            "python": platform.python_version(),
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}


def spread(values: list[float], fmt: str = ".2f") -> str:
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def run(repeats: int = 3, spiral_steps: int = 10_000, out: str = "bench.json", mnist_overrides=()) -> dict:
    runs = {(case, way): [] for case, ways in CASES.items() for way in ways}
    facts = {**machine(), "load_average_before": os.getloadavg()}
    for r in range(repeats):
        for (case, way), done in runs.items():
            done.append(in_fresh_process(measure, case, way, spiral_steps, list(mnist_overrides)))
            print(f"[{r + 1}/{repeats}] {case} {way}: {done[-1]['seconds']:.2f} s", file=sys.stderr, flush=True)
    facts.update(load_average_after=os.getloadavg(), threads=runs["mnist", "nnlab"][0]["threads"])
    seconds = {key: [run["seconds"] for run in done] for key, done in runs.items()}
    rows = [{"case": case, "way": way, "seconds": seconds[case, way], "median_s": statistics.median(seconds[case, way]),
             "peak_mib": max(run["peak_mib"] for run in done), "start_mib": min(run["start_mib"] for run in done),
             "gpu_peak_mib": max(run.get("gpu_peak_mib", 0) for run in done),
             "results": done[0]["results"]}
            for (case, way), done in runs.items()]
    ratios = []
    for case, a, b in RATIOS:
        paired = [x / y for x, y in zip(seconds[case, a], seconds[case, b])]
        ratio = statistics.median(seconds[case, a]) / statistics.median(seconds[case, b])
        ratios.append({"case": case, "ratio": f"{a} / {b}", "value": ratio, "same_repeat_min": min(paired),
                       "same_repeat_max": max(paired)})
    report = {"machine": facts, "repeats": repeats, "spiral_steps": spiral_steps, "rows": rows, "ratios": ratios}
    Path(out).write_text(json.dumps(report, indent=2) + "\n")

    print(f"{facts['cpu']}, {facts['cores']} cores, torch {facts['torch']} ({facts['threads']} threads), "
          f"Lightning {facts['lightning']}, device {facts['device']}; median of {repeats} fresh processes (min-max); "
          f"load average {facts['load_average_before'][0]:.1f} before, {facts['load_average_after'][0]:.1f} after\n")
    gpu = facts["device"] != "cpu"
    print(f"| case | way | seconds | / plain | peak MiB |{' GPU MiB |' * gpu} val/acc | test/acc |\n"
          f"|---|---|---|---|---|{'---|' * gpu}---|---|")
    for row in rows:
        plain = statistics.median(seconds[row["case"], "plain"])
        res = row["results"]
        memory = f"{row['peak_mib']} | {row['gpu_peak_mib']}" if gpu else f"{row['peak_mib']}"
        print(f"| {TITLES[row['case']].format(steps=spiral_steps, steps_each=spiral_steps // 10, members=members())} | {row['way']} | {spread(row['seconds'])} | "
              f"{row['median_s'] / plain:.2f} | {memory} | {res['val/acc']:.4f} | {res['test/acc']:.4f} |")
    print()
    for r in ratios:
        print(f"{r['case']}: {r['ratio']} = {r['value']:.2f} (same-repeat {r['same_repeat_min']:.2f}-"
              f"{r['same_repeat_max']:.2f})")
    print(f"\nwritten: {out}")
    return report


def time_sweep(launcher: str, grid: str, overrides: list[str]) -> dict:
    """One whole sweep in a child process: wall seconds, its runs' statuses, and the peak memory of its
    largest process (called in a fresh process, whose only child it is; a population's workers and
    joblib's are that child's children)."""
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "nnlab.train", "--multirun", f"sweep={grid}", "threads=1",
                               f"hydra/launcher={launcher}", f"hydra.sweep.dir={folder}/sweep", *overrides],
                              cwd=folder, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        statuses = [run_status(p.parent) for p in Path(folder, "sweep").glob("*/metrics.json")]
    if done.returncode:
        raise RuntimeError(f"sweep={grid} through {launcher} failed: {done.stderr.strip().splitlines()[-1:]}")
    return {"seconds": seconds, "runs": len(statuses), "ok": statuses.count(OK),
            "peak_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)}


def sweeps(grid: str, repeats: int = 1, out: str = "bench.json", overrides=()) -> dict:
    """`make bench ARGS="sweep=<grid>"`: the grid through each launcher, and the population's fixed cost
    a run (the grid cut to 1 step a run: all its runs against those of seed=0 only)."""
    facts = {**machine(), "load_average_before": os.getloadavg()}
    one_step = [o for o in overrides
                if o.split("=")[0] not in ("trainer.max_epochs", "data.steps_per_epoch", "data.train_images")]
    one_step += ["trainer.max_epochs=1", one_batch(grid, overrides)]
    ways = {"population": ("population", list(overrides)),
            "population, 1 process": ("population", [*overrides, "hydra.launcher.workers=1"]),
            "basic": ("basic", list(overrides)),
            "basic, JOBS=2": ("joblib", [*overrides, "hydra.launcher.n_jobs=2"]),  # make sweep JOBS=2
            "population, 1 step a run": ("population", one_step),
            "population, 1 step a run, seed=0": ("population", [o for o in one_step if not o.startswith("seed=")]
                                                 + ["seed=0"])}
    runs = {way: [] for way in ways}
    for r in range(repeats):
        for way, (launcher, args) in ways.items():
            runs[way].append(in_fresh_process(time_sweep, launcher, grid, args))
            print(f"[{r + 1}/{repeats}] sweep={grid} {way}: {runs[way][-1]['seconds']:.1f} s", file=sys.stderr, flush=True)
    facts["load_average_after"] = os.getloadavg()
    seconds = {way: [run["seconds"] for run in done] for way, done in runs.items()}
    median = {way: statistics.median(s) for way, s in seconds.items()}
    extra = runs["population, 1 step a run"][0]["runs"] - runs["population, 1 step a run, seed=0"][0]["runs"]
    fixed = (median["population, 1 step a run"] - median["population, 1 step a run, seed=0"]) / extra
    report = {"machine": facts, "repeats": repeats, "sweep": grid, "overrides": list(overrides),
              "rows": [{"way": way, "seconds": seconds[way], "median_s": median[way], "runs": done[0]["runs"],
                        "ok": done[0]["ok"], "peak_mib": max(run["peak_mib"] for run in done)}
                       for way, done in runs.items()],
              "basic / population": median["basic"] / median["population"],
              "JOBS=2 / population": median["basic, JOBS=2"] / median["population"], "fixed_s_per_run": fixed}
    Path(out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"{facts['cpu']}, {facts['cores']} cores, torch {facts['torch']}, threads=1 a run; median of {repeats} "
          f"(min-max); load average {facts['load_average_before'][0]:.1f} before, "
          f"{facts['load_average_after'][0]:.1f} after\n")
    print("| sweep | launcher | runs | seconds | peak MiB |\n|---|---|---|---|---|")
    for row in report["rows"]:
        print(f"| {grid} | {row['way']} | {row['runs']} ({row['ok']} ok) | {spread(row['seconds'], '.1f')} | "
              f"{row['peak_mib']} |")
    print(f"\nbasic / population = {report['basic / population']:.2f}, basic JOBS=2 / population = "
          f"{report['JOBS=2 / population']:.2f}; a population's fixed cost: "
          f"{fixed:.2f} s a run\nwritten: {out}")
    return report


def one_batch(grid: str, overrides) -> str:
    """The override that cuts an epoch of the grid's data to one step: the spiral's steps_per_epoch,
    or an image set's training images (one batch of them)."""
    fixed = [o for o in overrides if o.startswith("data") and "," not in o]  # the sweep's data settings
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        data = compose("train", overrides=[f"sweep={grid}", *fixed]).data
    return "data.steps_per_epoch=1" if "steps_per_epoch" in data else f"data.train_images={data.batch_size}"


def bench_args(argv: list[str]) -> dict:
    """The keyword arguments of `run` (or `sweeps`) from `key=value` words; anything else is refused."""
    args = dict(a.split("=", 1) if "=" in a else (a, "") for a in argv)
    counts = {k: args.pop(k) for k in ("repeats", "spiral_steps") if k in args}
    out, grid = args.pop("out", "bench.json"), args.pop("sweep", None)
    if (not grid and any(not k.startswith("data.") for k in args)  # a sweep takes any override
            or not all(v.isdigit() and int(v) > 0 for v in counts.values())
            or int(counts.get("spiral_steps", 10)) % 10):
        raise NnlabError(f"bench takes repeats=N spiral_steps=N (a multiple of 10) out=FILE data.<key>=VALUE, or "
                 f"sweep=<grid in conf/sweep/> and the sweep's overrides, got: {' '.join(argv)}")
    return {**{k: int(v) for k, v in counts.items()}, "out": out, "mnist_overrides": [f"{k}={v}" for k, v in args.items()],
            **({"sweep": grid} if grid else {})}


def main(argv: list[str]) -> None:
    if {"-h", "--help"} & set(argv):  # key=value words otherwise, not flags: the module's own page
        print(__doc__)
        return
    args = bench_args(argv)
    if args.get("sweep"):
        sweeps(args["sweep"], args.get("repeats", 1), args["out"], args["mnist_overrides"])
    else:
        run(**{k: v for k, v in args.items() if k != "sweep"})


if __name__ == "__main__":
    command(main)
