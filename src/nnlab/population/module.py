"""The population as a LightningModule: Lightning's Trainer runs its epochs, validation, test and stops.

Each Lightning batch is a group of k steps of every member (k divides the steps an epoch and the log
interval, as a fused run's groups: nnlab/fused.py), each step nnlab.steps.step over the members' own
batches; Lightning's validation and test loops score every member on its own data. Lightning's
checkpoints (an epoch's, saved at its end; a stop's, by nnlab.checkpoint.Interrupt as a run's; the
last, after the test) are split by MemberFiles into each member's checkpoints/last.ckpt, and a stopped
population continues through Lightning's own ckpt_path from them. A study's pruner (nnlab.search) and
population-based training (nnlab.pbt) act after each validation: an epoch's, or for PBT every `interval`
steps (Lightning's val_check_interval, counted over the whole run), and once more at the end."""
import copy
import logging
import math
import time
import warnings
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from nnlab import compat, runs, steps
from nnlab.checkpoint import AtomicCheckpointIO, Interrupt, read_checkpoint, stops_outside_fit
from nnlab.config import ConfigError, check
from nnlab.data.loader import TensorLoader
from nnlab.errors import Interrupted
from nnlab.population.grouping import Job, device_of, vectorized
from nnlab.population.loop import epoch_batches, forward_of, keep_freed_memory, place, set_up, steps_per_epoch
from nnlab.population.member import (
    Member,
    MemberRuns,
    best,
    end_group,
    finish,
    member_checkpoint,
    saved_state,
)
from nnlab.train import lightning_logs_to_hydras
from nnlab.train import threads as run_threads

log = logging.getLogger("nnlab")

# The members' optimizers are their own (nnlab.steps.step steps them), not Lightning's
warnings.filterwarnings("ignore", ".*configure_optimizers` returned `None`")


class Population(L.LightningModule):
    """Members of one architecture, each with its own config, data, Classifier, optimizer and schedule;
    their parameters views of the rows of one Stack (loop.py). `how`: vmap or loop (grouping.VECTORIZE)."""

    def __init__(self, members: list[Member], how: str = "vmap", checkpoint_every: int = 1, pbt=None):
        super().__init__()
        self.pbt = pbt  # population-based training's exploit-and-explore step (nnlab.pbt.Exploit), or None
        self.checkpoint_every = checkpoint_every  # epochs between the members' checkpoints (0: none)
        self.automatic_optimization = False
        self.members, cfg = members, members[0].cfg
        self.per_epoch = steps_per_epoch(members[0])
        self.every, self.epochs = cfg.trainer.log_every_n_steps, cfg.trainer.max_epochs
        # a group of k steps ends at every log point, epoch end and PBT interval
        self.k = math.gcd(self.per_epoch, self.every or self.per_epoch, pbt.interval if pbt else 0)
        self.stack, self.sums = set_up(members, self.epochs, self.per_epoch)
        self.step_forward = forward_of(members[0].module.net, how)
        self.start = members[0].start  # every member's (a population continues from one place)
        # the path Lightning saves to and resumes from: MemberFiles writes each member's own, reads the first's
        self.path = members[0].run_dir / "checkpoints" / "last.ckpt"
        # every step's finiteness read on the host: free on the CPU; on a GPU read once a group (once_a_group)
        self.check_every_step = members[0].module.device.type == "cpu"
        self.active: list[Member] = []  # the members training this epoch (a stopped one stops stepping)
        self.judged: list[Member] = []  # the members a validation or test pass scores
        if pbt is not None:
            pbt.start(members)

    def configure_optimizers(self) -> None:
        return None  # each member's own optimizer and schedule, made and restored by set_up

    # -- training: Lightning's batches are groups of k steps of every member -----------------------
    def train_dataloader(self) -> "Groups":
        return Groups(self)

    def begin_epoch(self) -> int:
        """Each active member's batches of this epoch, in its own data order; returns the first group
        (a stopped population goes on mid-epoch at its place)."""
        done, self.start = self.start[1], (None, 0)
        self.active = [m for m in self.members if not m.stopped]
        for m in self.active:
            m.epoch_rng = m.rng  # before the epoch's draw: a run stopped within it draws it again
            m.batches = epoch_batches(m, skip=done)
            if done == 0:
                m.finite_loss = None
        if not self.active:
            self.trainer.should_stop = True
        return done // self.k

    def training_step(self, group: int, batch_idx: int) -> None:
        span = range(group * self.k, min((group + 1) * self.k, self.per_epoch))
        last_group = span[-1] == self.per_epoch - 1
        if self.check_every_step:
            self.take(span, lambda i, going: [next(m.batches) for m in going], last_group)
        else:  # a GPU's: nothing read until the group's end (see once_a_group)
            once_a_group(self, span, last_group)
        if self.pbt is not None and last_group:
            for m in self.active:
                draw_as_validation(m)
        if all(m.stopped for m in self.active):
            self.trainer.should_stop = True

    def take(self, span: range, draw, last_group: bool, check: bool = True):
        """The group's steps of the members still going, each on the batch `draw(i, going)` gives it;
        checked (every step's finiteness read): a member that diverges stops, its group ended there.
        Unchecked: returns whether every step was finite (a bool on the device, not yet read)."""
        finite = None if check else torch.ones((), dtype=torch.bool, device=self.stack.device)
        for i in span:
            going = [m for m in self.active if not m.stopped]
            if not going:
                break
            taken = draw(i, going)
            flag = steps.step(going, taken, self.step_forward, self.stack, self.sums, check=check)
            if not check:
                finite &= flag
            for m, (_, y) in zip(going, taken):
                m.figures.seen += len(y)
                if check and (m.diverged or i == span[-1]):  # a group's end (or where the member stopped)
                    end_group(m, self.every, last_group)
                m.stopped = m.stopped or m.diverged is not None  # its epoch ends with the others'
        return finite

    def on_train_epoch_end(self) -> None:  # after MemberRuns' (the members' epoch ends)
        epoch = self.trainer.current_epoch + 1  # epochs done
        # Lightning's checkpoint, split into the members' files (MemberFiles): a kill loses an epoch at
        # most. (ModelCheckpoint would skip it: it saves only after optimizer steps Lightning counted.)
        if self.checkpoint_every and epoch % self.checkpoint_every == 0:
            self.trainer.save_checkpoint(self.path, weights_only=False)

    # -- validation and test: each member on its own data -------------------------------------------
    def val_dataloader(self) -> "Scoring":
        return Scoring(self, "val")

    def test_dataloader(self) -> "Scoring":
        return Scoring(self, "test")

    def begin_scoring(self, stage: str) -> int:
        """Each judged member's batches of the stage (its loader draws from its own RNG, as its run's
        does); returns how many batches the pass has."""
        self.judged = self.active if stage == "val" else self.members
        pbt = stage == "val" and self.pbt is not None  # PBT's validations draw nothing of a member's (draw_as_validation)
        for m in self.judged:
            x, y = scored_set(m, stage)
            with torch.random.fork_rng(devices=[]) if pbt else m.own_rng():
                m.scored = list(TensorLoader(x, y, m.data.eval_batch_size))
            m.module.eval()
        return max((len(m.scored) for m in self.judged), default=0)

    def score(self, i: int, stage: str) -> None:
        for m in self.judged:
            if i < len(m.scored):
                x, y = m.scored[i]
                out = m.module.net(x)
                m.module.sums[stage].update(F.cross_entropy(out, y), out, y)

    def end_scoring(self, stage: str) -> None:
        for m in self.judged:
            m.module.train()
            loss, acc = m.module.sums[stage].pop(lambda t: t)
            means = {f"{stage}/acc": acc, f"{stage}/loss": loss}
            m.callback_metrics.update(means)
            m.log_point(means, m.step)
            if stage == "val" and m.pruning is not None and m.pruning.judge(m.callback_metrics, m.epoch + 1, self.epochs):
                m.stopped = True  # a study's pruner stopped its trial: its epoch ends with the others'

    def validation_step(self, i: int, batch_idx: int) -> None:
        self.score(i, "val")

    def on_validation_epoch_end(self) -> None:
        self.end_scoring("val")
        if self.pbt is not None and self.trainer.state.fn == "fit":
            step = max(m.step for m in self.members)  # the steps done (a member that stopped took fewer)
            if step < self.epochs * self.per_epoch:  # none after the last
                self.pbt(self.members, step, self.stack)

    def test_step(self, i: int, batch_idx: int) -> None:
        self.score(i, "test")

    def on_test_epoch_end(self) -> None:
        self.end_scoring("test")

    # -- checkpoints: one file a member (MemberFiles) ------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Each member's checkpoint, with the place it continues from: a stop's (every member, where it
        stopped) or an epoch's (the members still training, with their points not yet in their events);
        after the test, the last one, without."""
        trainer, stop = self.trainer, self.trainer.received_sigterm
        if trainer.state.fn == "test":  # the end: the members' last weights, for make evaluate
            checkpoint["members"] = [(m, member_checkpoint(m)) for m in self.members if "checkpoint" in m.cfg.callbacks]
            return
        epoch, done = trainer.current_epoch, compat.batches_done(trainer) * self.k
        if not stop or done >= self.per_epoch:  # an epoch's end
            epoch, done = epoch + 1, 0
        own = []
        for m in self.members if stop else [m for m in self.members if not m.stopped]:
            place = (epoch, done, m.rng if done == 0 else m.epoch_rng)
            if stop:
                m.boundary = place
            own.append((m, member_checkpoint(m, place, None if stop else m.points, checkpoint["loops"])))
        checkpoint["members"] = own


def draw_as_validation(m: Member) -> None:
    """What its run's validation at an epoch's end draws from its RNG (the loader's first batch draws it).
    PBT validates its members every `interval` steps instead, drawing from none of them, and each member
    draws this at its epoch's end: it trains on the data order its run has, whose schedule scheduler=replay
    replays (nnlab/replay.py), wherever the intervals fall."""
    x, y = m.data.val_set
    with m.own_rng():
        next(iter(TensorLoader(x, y, m.data.eval_batch_size)))


def once_a_group(module: Population, span: range, last_group: bool) -> None:
    """A group of steps with one host read, at its end (each read makes the host wait for the GPU's
    queue). What the steps change is saved first; a group in which any member went non-finite is put
    back and taken again on the same batches, every step checked, so each member stops exactly where
    every step's check would have stopped it, and the others' numbers are those of such a run."""
    saved, drawn = save_group(module), {}

    def draw(i: int, going: list[Member]) -> list:
        drawn[i] = {m.slot: next(m.batches) for m in going}
        return list(drawn[i].values())
    if bool(module.take(span, draw, last_group, check=False)):  # the one host read a group
        for m in module.active:
            if not m.stopped:
                m.finite_loss = m.loss
                end_group(m, module.every, last_group)
        return
    restore_group(module, saved)
    module.take(span, lambda i, going: [drawn[i][m.slot] for m in going], last_group)


def save_group(module: Population) -> dict:
    """What a group of steps changes: the stack's weights, the epoch sums, and each member's optimizer
    and schedule state (tensors cloned), step count, losses and samples seen. (Models in a population
    draw no random numbers, and their data order is drawn at the epoch's start.)"""
    members = [m for m in module.active if not m.stopped]
    return {"leaves": {n: t.detach().clone() for n, t in module.stack.leaves.items()},
            "sums": (module.sums.loss.clone(), module.sums.hits.clone()),
            "members": [(m, {p: copy.deepcopy(state) for p, state in m.optimizer.state.items()},
                         [{k: v for k, v in g.items() if k != "params"} for g in m.optimizer.param_groups],
                         copy.deepcopy(m.scheduler.state_dict()) if m.scheduler is not None else None,
                         (m.step, m.loss, m.finite_loss, m.scheduled, m.figures.seen)) for m in members]}


@torch.no_grad()
def restore_group(module: Population, saved: dict) -> None:
    for n, t in module.stack.leaves.items():
        t.copy_(saved["leaves"][n])
    module.sums.loss.copy_(saved["sums"][0]), module.sums.hits.copy_(saved["sums"][1])
    for m, state, groups, scheduler, numbers in saved["members"]:
        m.optimizer.state.clear()  # in place: the optimizer's own dict
        m.optimizer.state.update(state)
        for group, values in zip(m.optimizer.param_groups, groups):
            group.update(values)
        if scheduler is not None:
            m.scheduler.load_state_dict(scheduler)
        m.step, m.loss, m.finite_loss, m.scheduled, m.figures.seen = numbers


class Groups:
    """The training loader: an epoch's group numbers (a group: k steps of every member, taken by
    training_step on the members' own batches)."""

    def __init__(self, module: Population):
        self.module = module

    def __len__(self) -> int:
        return math.ceil(self.module.per_epoch / self.module.k)

    def __iter__(self):  # the epoch begins at the first group taken (Lightning calls iter() to check a loader)
        yield from range(self.module.begin_epoch(), len(self))


class Scoring:
    """The validation or test loader: batch numbers, each member scoring its own batch of that number."""

    def __init__(self, module: Population, stage: str):
        self.module, self.stage = module, stage

    def __len__(self) -> int:
        m = self.module.members[0]
        x, y = scored_set(m, self.stage)
        return math.ceil(len(y) / m.data.eval_batch_size)

    def __iter__(self):
        yield from range(self.module.begin_scoring(self.stage))


def scored_set(m: Member, stage: str) -> tuple:
    """The member's (x, y) that a validation or test pass scores."""
    return m.data.val_set if stage == "val" else m.data.test_set


class MemberFiles(AtomicCheckpointIO):
    """Lightning's checkpoint of a population as its members' own files: each member's
    checkpoints/last.ckpt in a single run's format (make evaluate scores it) plus a "population" entry
    with its place and Lightning's loop state; read back, the first member's file gives Lightning its
    loops (the members restore their own state, set_up)."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        for m, own in checkpoint["members"]:
            super().save_checkpoint(own, m.run_dir / "checkpoints" / "last.ckpt")

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        saved = read_checkpoint(path)
        return {"state_dict": {}, "optimizer_states": [], "lr_schedulers": [], "loops": saved["population"]["loops"],
                **{k: saved[k] for k in ("epoch", "global_step", "pytorch-lightning_version")}}


def trainer_for(module: Population) -> L.Trainer:
    """Lightning's Trainer for a population, on its members' device and at their precision: no logger
    (each member writes its own); a stop at a step boundary checkpointed by nnlab.checkpoint.Interrupt,
    as a run's."""
    cfg, device = module.members[0].cfg, module.members[0].module.device
    gpu = device.type == "cuda"
    # PBT's validations: every `interval` steps, counted over the run (check_val_every_n_epoch=None)
    every = {"val_check_interval": module.pbt.interval // module.k, "check_val_every_n_epoch": None} if module.pbt else {}
    return L.Trainer(accelerator="gpu" if gpu else "cpu", devices=[device.index or 0] if gpu else 1, **every,
                     precision=cfg.trainer.precision, max_epochs=module.epochs, deterministic=cfg.trainer.deterministic,
                     logger=False, callbacks=[MemberRuns(), Interrupt(str(module.path.parent))], enable_checkpointing=False,
                     plugins=[MemberFiles()], enable_progress_bar=False, enable_model_summary=False,
                     num_sanity_val_steps=0, log_every_n_steps=module.every or 1)


def train_population(members: list[Member], group: int, figures: str, how: str = "vmap", choose=None,
                     shared: dict | None = None, checkpoint_every: int = 1, pbt=None) -> None:
    """Population `group` trained and tested by Lightning's Trainer, and its members' outputs written; `checkpoint_every`: epochs between each member's checkpoints (0: only when it ends
    or stops)."""
    start, threads = time.perf_counter(), torch.get_num_threads()
    try:
        cfg = members[0].cfg
        # One thread unless threads= says otherwise, as every sweep's run (nnlab.train.threads): a
        # population's ops are small, and a second thread woken for one spins on after it, taking the
        # core the next op needs (a step took 50x longer on a loaded 2-core VM).
        torch.set_num_threads(run_threads(cfg) or 1)
        keep_freed_memory()
        lightning_logs_to_hydras()  # its notes (devices found, "fit stopped") left out, as a run's
        shared = {} if shared is None else shared  # data modules by their resolved config (shared_data)
        for m in members:  # their "population" entries are the whole population's (run_share)
            m.build(shared)
        place(members, device_of(cfg) or torch.device("cpu"))
        module = Population(members, how, checkpoint_every, pbt)
        trainer = trainer_for(module)
        resumed = members[0].saved is not None  # they continue together, from Lightning's state in their files
        with stops_outside_fit(trainer):  # a signal in the test pass or as fit ends: interrupted
            trainer.fit(module, ckpt_path=module.path if resumed else None, weights_only=True)
            if module.pbt is not None and module.epochs * module.per_epoch % module.pbt.interval:
                trainer.validate(module, verbose=False)  # PBT's last interval ended before the last step
            trainer.test(module, verbose=False)  # MemberRuns: each member's metrics
            trainer.save_checkpoint(module.path, weights_only=False)  # each member's own file (MemberFiles)
    except BaseException as e:
        interrupted = isinstance(e, KeyboardInterrupt | SystemExit)  # SIGTERM: Lightning's SIGTERMException
        for m in members:
            if m.metrics["status"] not in (runs.OK, runs.DIVERGED):
                m.metrics["status"] = runs.INTERRUPTED if interrupted else runs.FAILED
                m.metrics["error"] = f"SIGTERM at step {m.step}" if interrupted and m.boundary else repr(e)
        if not interrupted:  # a bug or a resource, not the person's mistake: its traceback, in each train.log
            log.exception("nnlab: population %d failed; the sweep goes on", group)
            for m in members:
                m.note(f"nnlab: population {group} failed; the sweep goes on", error=True)
    finally:
        seconds = round(time.perf_counter() - start, 2)
        chosen = (choose or best)(members) if figures == "best" else None  # a worker asks its parent
        for m in members:
            draw = "figures" in m.cfg.callbacks and (figures == "all" or m is chosen)
            finish(m, seconds, draw)
        torch.set_num_threads(threads)  # as this process had it: the next job in it starts the same
    if any(m.metrics["status"] == runs.INTERRUPTED for m in members):
        raise Interrupted(runs.resume_line(members[0].run_dir.parent, sweep=True))


def continue_alone(cfg: DictConfig, run_dir: Path) -> dict:
    """make train RESUME=<an interrupted member's folder>: the member continues on its own, a population
    of one, from where it stopped to the numbers it would have reached in its sweep (a member's numbers
    do not depend on the members beside it). `cfg` is its saved config. Returns its metrics."""
    checked = check(cfg)
    saved, why = saved_state(run_dir, checked)
    if saved is None:  # it loaded whole (checkpoint_problem): another version's state, or another config
        raise ConfigError(f"resume={run_dir}: {why}; make sweep RESUME=<its sweep folder> trains it again "
                          "from its start")
    before = runs.read_metrics(run_dir, unusable={}) or {}
    member = Member(Job(0, [], {}, ()), checked, run_dir, run_dir / "train.log", saved)
    group = before.get("population", {}).get("group", 0)
    member.metrics["population"] = {"group": group, "size": 1, "index": 0}  # the part that ends it: itself
    train_population([member], group, "all", vectorized(checked))
    return member.metrics
