"""Population-based training (Jaderberg et al. 2017): one population whose weakest members copy the
strongest and perturb their numbers as they train, so that it finds a schedule, not a constant.

    make sweep SWEEP=spiral_pbt        # conf/sweep/spiral_pbt.yaml; settings: conf/hydra/sweeper/pbt.yaml

The sweeper draws `members` settings from the search space (Hydra's sweep syntax under
hydra.sweeper.params, as for the Optuna sweeper) and launches them as one population
(hydra/launcher=population). Every `interval` optimizer steps Lightning validates the members (within
an epoch too: nnlab.population.module.trainer_for), and they are ranked by val/acc (ties: val/loss);
each of the bottom `quantile` copies a member drawn from the top quantile (its weights, its optimizer's
and schedule's state: rows of the population's stack) and explores: each searched number times 0.8 or
1.2, or with probability `resample` drawn anew from the space (defaults: Ray Tune's PBT). A perturbed
lr scales the learning rate the member trains with from there. Draws come from random.Random(seed, n)
at the n-th exploit: the same sweep gives the same members and numbers, bit for bit on the CPU. Each
member stays a run folder; its metrics.json holds its lineage (at which step it copied whom, and the
numbers it switched to) and TensorBoard its numbers as pbt/<key> scalars over steps. The sweep writes
best.yaml: the winner (best val/acc at the end), its schedule step by step, and the command that
trains one run on that schedule from scratch (scheduler=replay: nnlab/replay.py)."""
import copy
import math
import random
from pathlib import Path

import torch
from hydra.core.plugins import Plugins
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from nnlab.config import ConfigError
from nnlab.errors import NnlabError
from nnlab.population.loop import train_loader
from nnlab.replay import KEYS, parse, rates
from nnlab.runs import read_metrics, read_yaml
from nnlab.study import search_space

PERTURB = (0.8, 1.2)
SEARCHABLE = ("optimizer.", "scheduler.", "l2")  # what a member can change as it trains


class Exploit:
    """The exploit-and-explore step of a population's members (nnlab.population.Member), every
    `interval` optimizer steps; `space`: {key: distribution} of the searched numbers."""

    def __init__(self, s: DictConfig, space: dict[str, BaseDistribution]):
        self.space, self.interval, self.quantile, self.resample, self.seed = (
            space, s.interval, s.quantile, s.resample_probability, s.seed)

    def start(self, members: list) -> None:
        """Each member's searched numbers as its config set them, logged at step 0 (a continued
        member's come from its checkpoint)."""
        for m in members:
            if m.pbt is None:
                numbers = {k: m.job.numbers[k] for k in self.space}
                m.pbt = {"member": m.job.idx, "start": dict(numbers), "numbers": numbers, "lineage": []}
                m.log_point({f"pbt/{k}": v for k, v in numbers.items()}, 0)

    def __call__(self, members: list, step: int, stack) -> None:
        """After the validation at `step` steps: the bottom quantile of the members still training copy
        the top's and explore. Nothing between intervals (the caller: nor after the last step)."""
        going = [m for m in members if not m.stopped]
        if step % self.interval or len(going) < 2:
            return
        ranked = sorted(going, key=lambda m: (-m.callback_metrics["val/acc"].item(),
                                              m.callback_metrics["val/loss"].item(), m.job.idx))
        n = max(1, int(len(ranked) * self.quantile))
        rng = random.Random(f"{self.seed}:{step // self.interval}")
        for m in ranked[-n:]:
            source = rng.choice(ranked[:n])
            numbers = self.explore(source.pbt["numbers"], rng)
            copy_member(source, m, stack)
            for key, value in numbers.items():
                apply(m, key, source.pbt["numbers"][key], value)
            m.pbt["numbers"] = numbers
            m.pbt["lineage"].append({"step": step, "copied": source.job.idx, "numbers": numbers})
        for m in going:
            m.log_point({f"pbt/{k}": v for k, v in m.pbt["numbers"].items()}, m.step)

    def explore(self, numbers: dict, rng: random.Random) -> dict:
        out = {}
        for key, dist in self.space.items():
            if rng.random() < self.resample or isinstance(dist, CategoricalDistribution):
                out[key] = draw(dist, rng)
            else:
                value = numbers[key] * rng.choice(PERTURB)
                value = min(max(value, dist.low), dist.high)
                out[key] = round(value) if isinstance(dist, IntDistribution) else value
        return out


def draw(dist: BaseDistribution, rng: random.Random):
    """A value of `dist`, drawn from `rng` (log-uniform for a log interval)."""
    if isinstance(dist, FloatDistribution):
        if dist.log:
            return math.exp(rng.uniform(math.log(dist.low), math.log(dist.high)))
        return rng.uniform(dist.low, dist.high)
    if isinstance(dist, IntDistribution):
        return rng.randrange(dist.low, dist.high + 1, dist.step)
    return rng.choice(dist.choices)


@torch.no_grad()
def copy_member(source, m, stack) -> None:
    """`m` takes `source`'s weights (its row of the population's stack), optimizer and schedule state
    (copies: no tensor shared), and the numbers that go with them."""
    for leaf in stack.leaves.values():
        leaf[m.slot].copy_(leaf[source.slot])
    m.optimizer.load_state_dict(copy.deepcopy(source.optimizer.state_dict()))
    if m.scheduler is not None:
        m.scheduler.load_state_dict(copy.deepcopy(source.scheduler.state_dict()))
    m.module.hparams.l2 = source.module.hparams.l2


def apply(m, key: str, old, new) -> None:
    """The searched number `key` changed from `old` to `new` in a training member: an lr scales the
    learning rate it trains with now (a schedule's decay so far kept); another optimizer or schedule
    number is set; l2 is the objective's."""
    if key == "l2":
        m.module.hparams.l2 = new
    elif key.startswith("scheduler."):
        setattr(m.scheduler, key.split(".", 1)[1], new)
    else:
        name = key.split(".", 1)[1]
        for group in m.optimizer.param_groups:
            group[name] = group[name] * new / old if name == "lr" else new
    m.plain_sgd = m.is_plain_sgd()  # momentum or weight decay may have changed


class PBT:
    """hydra/sweeper=pbt (hydra_plugins/nnlab_search.py holds the Sweeper class): draw the members,
    launch them as one population, name the winner."""

    def __init__(self, settings: dict, *, hydra_context, task_function, config: DictConfig) -> None:
        self.s, self.config = OmegaConf.create(settings), config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def run(self, arguments: list[str]) -> list:
        fixed, space = pbt_space(self.s, arguments)
        per_epoch = epoch_steps(self.config)
        epochs = OmegaConf.select(self.config, "trainer.max_epochs", default=None)
        if isinstance(epochs, int) and per_epoch and self.s.interval >= epochs * per_epoch:
            raise ConfigError(f"hydra.sweeper.interval={self.s.interval} is not below the members' {epochs * per_epoch} "
                              f"steps ({epochs} epochs of {per_epoch}): no member would ever copy another; lower "
                              "the interval or train longer")
        if not hasattr(self.launcher, "population"):
            raise ConfigError("hydra/sweeper=pbt trains its members as one population: use "
                              "hydra/launcher=population (make sweep's default)")
        rng = random.Random(self.s.seed)
        jobs = [fixed + [f"{k}={draw(d, rng)!r}" for k, d in space.items()] for _ in range(self.s.members)]
        folder = Path(self.config.hydra.sweep.dir)  # resolving it claims the folder: after every refusal
        folder.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, folder / "multirun.yaml")
        returns = self.launcher.launch(jobs, initial_job_idx=0)
        self.winner(folder, returns, fixed, per_epoch)
        return [returns]

    def winner(self, folder: Path, returns: list, fixed: list[str], per_epoch: int | None) -> None:
        """best.yaml: the member with the best val/acc at the end, and the schedule its weights trained
        on (through the members it copied: schedule)."""
        ended, pbt = [], {}
        for ret in returns:
            run = Path(ret.hydra_cfg.hydra.runtime.output_dir) if ret.hydra_cfg is not None else None
            metrics = read_metrics(run, unusable={}) if run is not None else None
            if metrics and "pbt" in metrics:
                pbt[metrics["pbt"]["member"]] = metrics["pbt"]
                if "val/acc" in metrics and metrics["status"] == "ok":
                    ended.append((metrics["val/acc"], run, metrics))
        if not ended:
            print("pbt: no member finished: no winner")
            return
        acc, run, metrics = max(ended, key=lambda e: e[0])
        command = f'make train ARGS="{" ".join(fixed)} scheduler=replay scheduler.schedule={folder / "best.yaml"}"'
        OmegaConf.save(OmegaConf.create({"member": run.name, "val/acc": acc, "fixed": fixed, "command": command,
                                         "steps_per_epoch": per_epoch,
                                         "schedule": schedule(pbt, metrics["pbt"]["member"], math.inf)}),
                       folder / "best.yaml")
        print(f"pbt: winner {run.name}, val/acc {acc:.4f} ({len(ended)} members ended); its schedule is in "
              f"{folder / 'best.yaml'}; one run of its own on it (add seed= for another):\n{command}")


def schedule(pbt: dict, member: int, until: float) -> list[dict]:
    """The numbers the weights of `member` trained on up to step `until`: [{step, numbers}] from step 0,
    each entry's numbers in effect from its step on. Copying at step s, a member took its source's
    weights, so before s its schedule is the source's, whose own copies came before s (an exploit's
    top and bottom quantiles are apart; `<` also ends the cycle of a lineage no sweep writes)."""
    copies = [e for e in pbt[member]["lineage"] if e["step"] < until]
    if not copies:
        return [{"step": 0, "numbers": pbt[member]["start"]}]
    last = copies[-1]
    return schedule(pbt, last["copied"], last["step"]) + [{"step": last["step"], "numbers": last["numbers"]}]


def epoch_steps(cfg: DictConfig) -> int | None:
    """Optimizer steps in an epoch of the members' data (its training set read as a member reads it), or
    None where it cannot be read here: the members then meet the problem and fail with it."""
    try:
        data = instantiate(cfg.data)
        data.prepare_data()
        data.setup("fit")
    except (NnlabError, InstantiationException, OSError, ValueError):
        return None
    return train_loader(data).minibatches()


def report(folder: Path) -> str | None:
    """make compare on a PBT sweep's folder: the winner, its schedule's replay command, and lineage.png
    (each member's learning rate over the steps, on the schedule its weights trained on, coloured by its
    val/acc at the end; the winner drawn thick). None for a folder that is not a PBT sweep's."""
    import matplotlib.pyplot as plt

    runs = [(run, read_metrics(run, unusable={})) for run in sorted(folder.glob("*/")) if (run / "metrics.json").exists()]
    runs = [(run, m) for run, m in runs if m and isinstance(m.get("pbt"), dict)]
    best = folder / "best.yaml"
    if not runs or not best.exists():
        return None
    head = f"## Population-based training: {len(runs)} members\n\n"
    try:  # a folder made elsewhere: any problem of its best.yaml is one line
        winner = read_yaml(best)  # a link refused
        name, acc, command, per_epoch = (str(winner["member"]), float(winner["val/acc"]), str(winner["command"]),
                                         winner["steps_per_epoch"])
        path = lr_path(winner["schedule"])
        if type(per_epoch) is not int or per_epoch < 1:
            raise ValueError(f"steps_per_epoch {per_epoch!r}, not a whole number of steps >= 1")
    except (NnlabError, OSError, ValueError, TypeError, KeyError) as e:
        return f"{head}{best} does not read as this nnlab's best.yaml ({str(e).splitlines()[0]}): no lineage.png.\n"
    pbt = {m["pbt"].get("member"): m["pbt"] for _, m in runs}
    steps = max((m["steps"] for _, m in runs if type(m.get("steps")) is int), default=1)
    drawn = [(run, m) for run, m in runs if type(m.get("val/acc")) in (float, int)]
    lost = len(runs) - len(drawn)
    fig, ax = plt.subplots(figsize=(7, 4))
    accs = [m["val/acc"] for _, m in drawn] or [0.0]
    norm = plt.Normalize(min(accs), max(accs) if max(accs) > min(accs) else min(accs) + 1e-6)
    # the best drawn last, on top; the winner last of all, thick
    for run, m in sorted(drawn, key=lambda r: (r[0].name == name, r[1]["val/acc"])):
        try:
            member_path = lr_path(schedule(pbt, m["pbt"]["member"], math.inf))
        except (NnlabError, KeyError, TypeError, AttributeError, RecursionError):  # names a member not here, or garbage
            lost += 1
            continue
        if member_path is None:  # lr not searched: no line to draw
            continue
        lr = rates(member_path, per_epoch, steps)
        ax.step(range(steps + 1), [*lr, lr[-1]], where="post", color=plt.get_cmap("viridis")(norm(m["val/acc"])),
                linewidth=3 if run.name == name else 1)
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap="viridis"), ax=ax, label="val/acc at the end")
    ax.set(xlabel="optimizer step", ylabel="learning rate", yscale="log",
           title=f"{len(runs)} members' lr, on the schedule their weights trained on; thick: the winner")
    fig.savefig(folder / "lineage.png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    path = " -> ".join(f"step {step}: lr {lr:.3g}" for step, lr, _ in path) if path else "lr not searched"
    missing = f" ({lost} members not drawn: a lineage that does not read, or names a member not here)" if lost else ""
    return (f"{head}Winner: {name}, val/acc {acc:.4f} (the best of {len(runs)} on one draw: optimistic). Its "
            f"schedule: {path}.\nOne run of its own on it, on a fresh seed: {command.rstrip(chr(34))} seed=1\"\n\n"
            f"![lineage.png](lineage.png){missing}\n")


def lr_path(entries: list[dict]) -> list[tuple[int, float, float]] | None:
    """[(step, lr, gamma)] of a schedule's entries (nnlab.replay.parse; other searched numbers left out), or
    None where lr was not searched."""
    if not all("optimizer.lr" in e["numbers"] for e in entries):
        return None
    return parse([{"step": e["step"], "numbers": {k: v for k, v in e["numbers"].items() if k in KEYS}} for e in entries])


def pbt_space(s: DictConfig, arguments: list[str]) -> tuple[list[str], dict[str, BaseDistribution]]:
    """The fixed overrides and the searched space, each refusal one line before anything is written."""
    for key, value, ok in (("members", s.members, isinstance(s.members, int) and s.members >= 2),
                           ("interval", s.interval, isinstance(s.interval, int) and s.interval >= 1),
                           ("quantile", s.quantile, isinstance(s.quantile, float | int) and 0 < s.quantile <= 0.5),
                           ("resample_probability", s.resample_probability,
                            isinstance(s.resample_probability, float | int) and 0 <= s.resample_probability <= 1)):
        if isinstance(value, bool) or not ok:
            raise ConfigError(f"hydra.sweeper.{key}={value} is invalid: members a whole number >= 2, interval "
                              "optimizer steps >= 1, quantile in (0, 0.5], resample_probability in [0, 1]")
    fixed, space = search_space(s.params, arguments)
    if space != search_space(s.params, [])[1]:
        raise ConfigError("PBT searches the space of its sweep file's hydra.sweeper.params: give numbers, "
                          "not sweeps, on the command line")
    if not space:
        raise ConfigError("nothing to search: give hydra.sweeper.params in the sweep file, e.g. "
                          "optimizer.lr: tag(log, interval(0.03, 30))")
    for key, dist in space.items():
        if not key.startswith(SEARCHABLE):
            raise ConfigError(f"{key} cannot change while a member trains: PBT searches optimizer.*, scheduler.* "
                              "and l2 (fix the others, e.g. seed=0)")
        if isinstance(dist, CategoricalDistribution) and not all(isinstance(v, int | float) for v in dist.choices):
            raise ConfigError(f"{key} is a choice of {list(dist.choices)}: PBT searches numbers only")
    return fixed, space
