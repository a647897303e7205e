"""A population trained in worker processes, each a share of its members.

They are forked from the sweep's process once the group's config is composed; each sets up and trains
every k-th job, while this process forwards signals and agrees with them the parts of the population
and each part's best member."""
import contextlib
import multiprocessing
import multiprocessing.connection as mp_connection
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from nnlab import runs
from nnlab.app import sweeper_says
from nnlab.errors import Interrupted, NnlabError
from nnlab.population.grouping import Job, derive, device_of
from nnlab.population.member import Member, best, finished, shared_data

if TYPE_CHECKING:
    from nnlab.population.launcher import Population


def train_shares(pop: "Population", n: int, group: list[Job], base: DictConfig, k: int) -> dict[int, JobReturn]:
    """Population n in k processes forked from this one once its config is composed, each setting
    up and training a share of its jobs (every k-th: each share has some of every lr), so that
    the members' fixed costs (folders, configs, checks, outputs) are shared out as well as their
    steps, and nothing is imported or composed again. Members are independent, so a share's
    numbers are those of the whole population, and of the runs it replaces (tests/test_population.py
    compares them with hydra/launcher=basic's bit for bit). This process coordinates: the parts of
    the population by where its members start (a resumed sweep's interrupted members continue
    together, those starting afresh after them), and each part's best member, whose figures the
    worker holding it draws. Signals reach the workers through this process (each is its own
    process group): Ctrl-C or SIGTERM stops each at its step boundary, as one process stops."""
    shared = preload(base, group)
    ctx = multiprocessing.get_context("fork")
    links = []
    for i in range(k):
        mine, theirs = ctx.Pipe()
        proc = ctx.Process(target=share_worker, args=(pop, n, group[i::k], base, shared, theirs), daemon=False)
        links.append((proc, mine, group[i::k]))
    talk = Talk()
    with forward_signals([proc for proc, _, _ in links]):
        for proc, _, _ in links:
            proc.start()
        talk.run({proc.sentinel: (proc, conn) for proc, conn, _ in links})
    returns = job_returns(links, talk, base)
    if talk.exits:
        raise Interrupted(talk.exits[0])
    return returns


def preload(base: DictConfig, group: list[Job]) -> dict:
    """Data members share (MNIST: one split for every seed), loaded here, once: the workers inherit it,
    and its pages stay shared as nothing writes to them. The data's own generator draws it (the
    spiral's, from data.seed), not the run's RNG, so loading it here changes nothing."""
    shared: dict = {}
    try:
        data = lambda cfg: OmegaConf.to_yaml(cfg.data, resolve=True)  # noqa: E731
        if data(base) == data(derive(base, group[-1])):  # as the first job's, so the rest's (MNIST's)
            shared_data(base, shared).setup("fit")
    except (NnlabError, OSError, ValueError):  # the workers meet it again, and fail their members as one
        return {}                                 # process does
    return shared


class Talk:
    """This process's side of the workers' pipes while they train: what each share enlisted; the parts
    of the population, sent to all once every share is set up; each part's best member, chosen once
    every share still running that holds some of the part has asked; the jobs' results; and the line
    an interrupted share ends the sweep with."""

    def __init__(self):
        self.enlisted: dict[int, list] = {}  # pid -> its members' (job idx, start, run folder)
        self.parts, self.holders, self.asked, self.results, self.exits = None, {}, {}, {}, []

    def run(self, running: dict) -> None:
        """Until every worker has ended: `running`, {its sentinel: (process, connection)}."""
        while running:
            ready = mp_connection.wait([*running, *(conn for _, conn in running.values())])
            for key, (proc, conn) in list(running.items()):
                while (conn in ready or key in ready) and conn.poll():  # every message, before its exit
                    try:
                        kind, *value = conn.recv()
                    except EOFError:
                        break
                    self.take(proc.pid, conn, kind, value)
                if key in ready:
                    proc.join()
                    del running[key]
            alive = {proc.pid: conn for proc, conn in running.values()}
            self.send_parts(alive)
            self.choose(alive)

    def take(self, pid: int, conn, kind: str, value: list) -> None:
        if kind == "enlisted":
            self.enlisted[pid] = value[0]
        elif kind == "best":  # (part, its candidates)
            self.asked.setdefault(value[0], {})[pid] = (conn, value[1])
        elif kind == "done":  # job idx -> (completed, why not)
            self.results.update(value[0])
        else:  # interrupted: this process ends the sweep with the same line, once
            self.exits.append(value[0])

    def send_parts(self, alive: dict) -> None:
        if self.parts is None and set(alive) <= set(self.enlisted):  # every share set up: the parts, to all
            self.parts = parts_of([e for share in self.enlisted.values() for e in share])
            self.holders = {i: {pid for pid, share in self.enlisted.items() if any(e[0] in index for e in share)}
                            for i, (_, index) in enumerate(self.parts)}
            for conn in alive.values():
                conn.send(self.parts)

    def choose(self, alive: dict) -> None:
        for part, asks in list(self.asked.items()):
            if set(alive) & self.holders[part] <= set(asks):  # all still running that hold some asked
                candidates = [c for _, cands in asks.values() for c in cands]
                # the first best in job order, as best() picks it in one process
                chosen = max(sorted(candidates), key=lambda c: c[1])[0] if candidates else None
                for conn, _ in asks.values():
                    with contextlib.suppress(OSError):  # one that died since
                        conn.send(chosen)
                del self.asked[part]


def job_returns(links: list, talk: Talk, base: DictConfig) -> dict[int, JobReturn]:
    """Each job's JobReturn from its worker's results. A dead worker's members are runs like any other
    (their metrics.json says failed, and the sweep's report lists them); a job it never set up is a
    failed job."""
    returns = {}
    for proc, _, jobs in links:
        members = {idx: Path(run_dir) for idx, _, run_dir in talk.enlisted.get(proc.pid, [])}
        if proc.exitcode != 0:  # a worker that died (killed, out of memory): its unfinished members failed
            for run_dir in members.values():
                if runs.run_status(run_dir) is None:
                    runs.write_json(run_dir / "metrics.json",
                                    {"status": runs.FAILED, "error": f"its worker process ended with code {proc.exitcode}"})
        for job in jobs:
            completed, why = talk.results.get(job.idx, (job.idx in members, f"its worker process ended with code "
                                                                            f"{proc.exitcode} before setting the job up"))
            returns[job.idx] = JobReturn(overrides=list(job.overrides), working_dir=os.getcwd(),
                                         task_name=base.hydra.job.name, hydra_cfg=hydra_of(base, job),
                                         status=JobStatus.COMPLETED if completed else JobStatus.FAILED)
            returns[job.idx].return_value = None if completed else RuntimeError(why)
    return returns


def hydra_of(base: DictConfig, job: Job) -> DictConfig:
    """The job's Hydra config as run_job leaves it in a JobReturn (its runtime.output_dir: the run folder),
    for a sweeper that reads it (a study finds each trial's metrics.json so)."""
    cfg = derive(base, job)
    run_dir = Path(str(OmegaConf.select(cfg, "hydra.sweep.dir")), str(OmegaConf.select(cfg, "hydra.sweep.subdir")))
    with read_write(cfg.hydra.runtime), open_dict(cfg.hydra.runtime):
        cfg.hydra.runtime.output_dir = os.path.abspath(run_dir)
    return OmegaConf.create({"hydra": cfg.hydra})


def share_worker(pop: "Population", n: int, jobs: list[Job], base: DictConfig, shared: dict, conn) -> None:
    """A worker process of train_shares: its share of the population's jobs, set up and trained."""
    os.setpgid(0, 0)  # Ctrl-C reaches the parent only, which forwards it once
    returns: dict[int, JobReturn] = {}
    try:
        # a signal forwarded while the share is set up ends it there (in training: at a step boundary)
        with signals_to(interrupt):
            pop.run_share(n, jobs, base, Link(conn, shared), returns)
    except Interrupted as e:  # in training: train_population's line
        conn.send(("exit", str(e)))
    except KeyboardInterrupt:  # while it was set up
        conn.send(("exit", runs.resume_line(Path(str(OmegaConf.select(base, "hydra.sweep.dir"))), sweep=True)))
    finally:
        conn.send(("done", {idx: (r.status is JobStatus.COMPLETED, "its job failed in a worker process: see its "
                                  "train.log") for idx, r in returns.items()}))
        conn.close()


# -- The training of a population ----------------------------------------------------------------
def processes(size: int, cfg: DictConfig, workers: int) -> int:
    """How many processes set up and train a population of `size` (Population.train_shares). One where
    forking cannot help or is not safe: a population of one, a GPU's, threads > 1 (a forked OpenMP pool), or
    not Linux (macOS forks badly under some of the libraries torch loads); and a study's trials or PBT's
    members, judged against each other each epoch: one process keeps their order, so the sweep is
    reproducible."""
    judged = sweeper_says(OmegaConf.select(cfg, "hydra.sweeper"), "one_process")
    cpu = getattr(device_of(cfg), "type", None) == "cpu"  # a GPU's population: one process (CUDA does not fork)
    return min(workers, size) if cpu and sys.platform == "linux" and (cfg.threads or 1) == 1 and not judged else 1


def parts_of(enlisted: list[tuple]) -> list[tuple[tuple, dict[int, int]]]:
    """The parts of a population from its members' (job idx, start, run folder): members continue
    together from the same place in training (a resumed population is its interrupted members; members
    starting afresh are another part, trained after it), each part in job order: [(start, {job idx:
    index in the part})]."""
    parts: dict[tuple, dict[int, int]] = {}
    for idx, start, _ in sorted(enlisted):
        part = parts.setdefault(tuple(start), {})
        part[idx] = len(part)
    return list(parts.items())


class Link:
    """A share's line to the others through the process that forked them (Population.train_shares):
    the population's parts, each part's best member. Without a connection the share is the whole
    population, in this process."""

    def __init__(self, conn=None, shared: dict | None = None):
        self.conn, self.shared = conn, shared  # shared: data loaded before the fork (shared_data)

    def parts(self, enlisted: list[tuple]) -> list[tuple[tuple, dict[int, int]]]:
        if self.conn is None:
            return parts_of(enlisted)
        self.conn.send(("enlisted", enlisted))
        return self.conn.recv()

    def choose(self, part: int, members: list[Member]) -> Member | None:
        if self.conn is None:
            return best(members)
        self.conn.send(("best", part, [(m.job.idx, m.metrics["val/acc"]) for m in finished(members)]))
        idx = self.conn.recv()
        return next((m for m in members if m.job.idx == idx), None)


@contextlib.contextmanager
def signals_to(handler):
    """SIGTERM and SIGINT go to `handler` within the block, to what they went to before after it."""
    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def interrupt(signum, frame):
    raise KeyboardInterrupt


def forward_signals(procs: list):
    """SIGTERM and SIGINT to this process, passed on to the workers (in their own process groups)."""
    def handler(signum, frame):
        for proc in procs:
            if proc.pid is not None and proc.exitcode is None:
                os.kill(proc.pid, signum)
    return signals_to(handler)
