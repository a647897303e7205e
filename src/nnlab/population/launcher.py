"""Hydra's side of hydra/launcher=population: jobs grouped, composed and given their folders.

Each group is composed once; each member gets what Hydra's run_job gives a job, then trains (module.py)
here or in worker processes (shares.py). Everything the population does not train runs through
Hydra's own run_job, one job after another, exactly as hydra/launcher=basic runs it."""
import contextlib
import copy
import logging
import os
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import (
    JobReturn,
    JobStatus,
    configure_log,
    env_override,
    run_job,
    setup_globals,
)
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from nnlab import runs
from nnlab.app import sweeper_says
from nnlab.callbacks import Pruning
from nnlab.checkpoint import (
    checkpoint_problem,
)
from nnlab.config import ConfigError, check
from nnlab.population.grouping import (
    Job,
    derive,
    device_of,
    group_jobs,
    job_of,
    launcher_settings,
    supported,
    vectorized,
)
from nnlab.population.member import Member, file_handler, saved_state
from nnlab.population.module import train_population
from nnlab.population.shares import Link, processes, train_shares

log = logging.getLogger("nnlab")


class Population:
    """hydra/launcher=population (hydra_plugins/nnlab_population.py holds the Launcher class)."""

    def __init__(self, settings: dict, *, hydra_context, task_function, config: DictConfig,
                 composed: dict | None = None):
        self.figures, self.vectorize, self.workers, self.every = launcher_settings(settings)
        self.hydra_context, self.task_function, self.config = hydra_context, task_function, config
        # a job's overrides -> its config, composed by the sweeper's check (hydra/sweeper=grouped)
        self.composed: dict[tuple, DictConfig] = {} if composed is None else composed

    # -- Hydra's side: compose, group, run jobs -------------------------------------------------
    def launch(self, job_overrides, initial_job_idx: int) -> list[JobReturn]:
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        jobs = [job_of(initial_job_idx + i, list(o)) for i, o in enumerate(job_overrides)]
        plan = []
        for group in group_jobs(jobs):
            base = self.compose(group[0])
            why = "a group of one" if len(group) == 1 else supported(base)
            plan.append((group, base, why))
        self.show(plan)
        returns: dict[int, JobReturn] = {}
        for n, (group, base, why) in enumerate(plan):
            if why:
                for job in group:
                    returns[job.idx] = self.run_alone(job, base if job is group[0] else self.compose(job))
            else:
                returns.update(self.run_group(n, group, base))
        return [returns[job.idx] for job in jobs]

    def show(self, plan) -> None:
        together = sum(len(g) for g, _, why in plan if not why)
        total = sum(len(g) for g, _, _ in plan)
        if not together:  # one line, not one a job (a study launches its trials a few at a time)
            reasons = sorted({why for _, _, why in plan})
            print(f"population: none of the {total} jobs trains in a population ({'; '.join(reasons)}): "
                  "one after another, as hydra/launcher=basic", flush=True)
            return
        groups = sum(1 for _, _, why in plan if not why)
        print(f"population: {total} jobs, {together} of them in {groups} population{'s' * (groups != 1)}",
              flush=True)
        for n, (group, base, why) in enumerate(plan):
            shared = " ".join(group[0].structure[0]) or "(no overrides)"
            numbers = ", ".join(k for k in group[0].structure[1]
                                if len({job.numbers[k] for job in group}) > 1) or "nothing"
            ids = f"#{group[0].idx}" + (f"..#{group[-1].idx}" if len(group) > 1 else "")
            how = {"vmap": "vmapped", "loop": "stepped in turn"}[vectorized(base, self.vectorize)] if not why else ""
            what = f"alone ({why})" if why else f"population {n}: {len(group)} runs differing in {numbers}, {how}"
            if not why and (k := processes(len(group), base, self.workers)) > 1:
                what += f", in {k} processes"
            if not why and (device := device_of(base)).type != "cpu":
                what += f", on {device}"
            print(f"  {ids} {shared}: {what}", flush=True)

    def compose(self, job: Job) -> DictConfig:
        cfg = self.composed.pop(tuple(job.overrides), None)  # the sweeper's check composed it (grouped.yaml)
        if cfg is None:
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, job.overrides)
        with open_dict(cfg):
            cfg.hydra.job.id = cfg.hydra.job.num = job.idx
        return cfg

    def run_alone(self, job: Job, cfg: DictConfig) -> JobReturn:
        """What Hydra's basic launcher does for a job."""
        ret = run_job(hydra_context=self.hydra_context, task_function=self.task_function, config=cfg,
                      job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return ret

    def run_group(self, n: int, group: list[Job], base: DictConfig) -> dict[int, JobReturn]:
        """Population n: its jobs set up and trained here, or in `processes` forked ones (train_shares)."""
        k = processes(len(group), base, self.workers)
        if k > 1:
            return train_shares(self, n, group, base, k)
        returns: dict[int, JobReturn] = {}
        self.run_share(n, group, base, Link(), returns)
        return returns

    def run_share(self, n: int, jobs: list[Job], base: DictConfig, link: "Link", returns: dict) -> None:
        """These jobs of population n (all of them, or a worker's share): each job's folder, .hydra/
        and check (start_group: a job's place, alone or a member), then the members' places in the
        population agreed with the other shares (`link`), then their training, one part after another."""
        members: list[Member] = []
        outer = HydraConfig.instance().cfg
        with contextlib.ExitStack() as locks:
            def enlist(job: Job, cfg: DictConfig, run_dir: Path, log_file: Path) -> None:
                """A member's task function: its folder and .hydra/ exist by now."""
                if (member := enlisted(job, cfg, run_dir, log_file, locks)) is not None:
                    members.append(member)
            try:
                self.start_group(jobs, base, returns, enlist)
            finally:
                HydraConfig.instance().cfg = outer
            parts = link.parts([(m.job.idx, m.start, str(m.run_dir)) for m in members])
            for part, (_, index) in enumerate(parts):
                mine = [m for m in members if m.job.idx in index]  # in job order
                for m in mine:  # the whole part's size and the member's place in it, whichever process trains it
                    m.metrics["population"] = {"group": n, "size": len(index), "index": index[m.job.idx]}
                if resumed := [m for m in mine if m.saved is not None]:  # a resumed sweep's cut-short members
                    epoch, done = resumed[0].start  # one place for all: they stopped together
                    runs_go_on = "1 run continues" if len(resumed) == 1 else f"{len(resumed)} runs continue"
                    print(f"population {n}: {runs_go_on} from where they stopped (epoch {epoch + 1}, "
                          f"after {done} of its steps; each run's train.log says more)", flush=True)
                if mine:
                    train_population(mine, n, self.figures, vectorized(base, self.vectorize),
                                     lambda done, part=part: link.choose(part, done), link.shared, self.every,
                                     exploit(base))

    def start_group(self, jobs: list[Job], base: DictConfig, returns: dict, enlist) -> None:
        """Each job's folder and .hydra/, and its place: alone (a resumed sweep's finished or resumable
        run) or enlisted into the population."""
        for job in jobs:
            cfg = base if job.idx == base.hydra.job.num else derive(base, job)  # base: the group's first job's
            run_dir = Path(str(OmegaConf.select(cfg, "hydra.sweep.dir")), str(OmegaConf.select(cfg, "hydra.sweep.subdir")))
            status, ckpt = runs.run_status(run_dir), run_dir / "checkpoints" / "last.ckpt"
            if status in runs.FINISHED or status == runs.INTERRUPTED and ckpt.exists() and checkpoint_problem(ckpt) is None:
                # make sweep RESUME=: skipped, or continued from its checkpoint, as nnlab.train.main does
                returns[job.idx] = self.run_alone(job, cfg)
                continue
            returns[job.idx] = self.start_job(cfg, run_dir, lambda c, f, job=job, d=run_dir: enlist(job, c, d, f))

    def start_job(self, cfg: DictConfig, run_dir: Path, task) -> JobReturn:
        """What Hydra's run_job (hydra/core/utils.py) does for a job, by the same public calls, less
        what a member does without: deep copies of its Hydra config, and a logging setup a job (a
        member's train.log gets its lines through its own handler). The .hydra/ files are the same
        bytes as run_job's (tests/test_population.py compares them with hydra/launcher=basic's)."""
        with read_write(cfg.hydra.runtime), open_dict(cfg.hydra.runtime):
            cfg.hydra.runtime.output_dir = os.path.abspath(run_dir)
        HydraConfig.instance().set_config(cfg)  # ${hydra:...} of the job's config resolve to its own
        task_cfg = copy.deepcopy(cfg)
        with read_write(task_cfg), open_dict(task_cfg):
            del task_cfg["hydra"]
        ret = JobReturn(overrides=list(cfg.hydra.overrides.task), cfg=task_cfg, hydra_cfg=HydraConfig.instance().cfg,
                        working_dir=os.getcwd(), task_name=cfg.hydra.job.name)
        run_dir.mkdir(parents=True, exist_ok=True)
        if cfg.hydra.output_subdir is not None:
            saved = run_dir / str(cfg.hydra.output_subdir)
            saved.mkdir(parents=True, exist_ok=True)
            for name, node in (("config.yaml", task_cfg), ("hydra.yaml", ret.hydra_cfg),
                               ("overrides.yaml", cfg.hydra.overrides.task)):
                (saved / name).write_text(OmegaConf.to_yaml(node), encoding="utf-8")
        self.hydra_context.callbacks.on_job_start(config=cfg, task_function=self.task_function)
        with env_override(cfg.hydra.job.env_set):
            log_file = run_dir / f"{cfg.hydra.job.name}.log"
            try:
                ret.return_value = task(task_cfg, log_file)
                ret.status = JobStatus.COMPLETED
            except Exception as e:  # as run_job: the job failed, not the sweep; its traceback in its train.log
                ret.return_value, ret.status = e, JobStatus.FAILED
                handler = file_handler(log_file)
                handler.handle(logging.LogRecord("nnlab", logging.ERROR, __file__, 0, "nnlab: %s could not be set up",
                                                 (run_dir.name,), sys.exc_info()))
                handler.close()
        self.hydra_context.callbacks.on_job_end(config=cfg, job_return=ret)
        return ret


def exploit(base: DictConfig):
    """Population-based training's exploit-and-explore step where the sweeper is nnlab's PBT, else None."""
    if not sweeper_says(OmegaConf.select(base, "hydra.sweeper"), "pbt"):
        return None
    from nnlab.pbt import Exploit, pbt_space  # Optuna's distributions: imported by PBT sweeps only
    return Exploit(base.hydra.sweeper, pbt_space(base.hydra.sweeper, [])[1])


def enlisted(job: Job, cfg: DictConfig, run_dir: Path, log_file: Path, locks: contextlib.ExitStack) -> Member | None:
    """The member a job's folder becomes, its lock held in `locks`; None for a folder another process
    holds, or a bad value (its record: invalid_config). A member stopped earlier (make sweep RESUME=)
    continues from its checkpoint where it can, and starts over where it cannot, saying why."""
    try:
        locks.enter_context(runs.hold(run_dir))
    except runs.FolderBusy as e:
        log.info(f"{run_dir.name}: {e}, skipped")
        return None
    status = runs.run_status(run_dir)  # an earlier attempt's, if any (make sweep RESUME=)
    try:
        checked = check(cfg)
    except ConfigError as e:
        if status is not None:
            runs.set_aside(run_dir)  # the old outputs kept in attempt-<n>/
        runs.write_json(run_dir / "metrics.json", {"status": runs.INVALID_CONFIG, "error": str(e)})
        handler = file_handler(log_file)
        handler.handle(logging.LogRecord("nnlab", logging.ERROR, __file__, 0, "nnlab: %s", (e,), None))
        handler.close()
        return None
    # interrupted, or killed (no metrics.json) after an epoch's checkpoint: it continues from there
    stopped = status == runs.INTERRUPTED or status is None and (run_dir / "checkpoints" / "last.ckpt").exists()
    saved, why = saved_state(run_dir, checked) if stopped else (None, None)
    if saved is None and status is not None:  # it starts over, the old outputs kept in attempt-<n>/
        runs.set_aside(run_dir)
    member = Member(job, checked, run_dir, log_file, saved)
    sweeper = HydraConfig.get().sweeper  # the job's own (Population.start_job set it)
    if sweeper_says(sweeper, "study"):  # a trial of a study: judged after each epoch
        from nnlab.search import job_trial  # Optuna: imported by studies only
        member.pruning = Pruning(job_trial(checked), sweeper.metric)
    if why:
        why = f"{run_dir.name} trains again from its start, its earlier outputs kept in attempt-<n>/: {why}"
        print(f"nnlab: {why}", flush=True)
        member.note(f"nnlab: {why}")
    return member
