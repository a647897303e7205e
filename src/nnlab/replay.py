"""A PBT winner's schedule replayed in one run of its own: the learning rate its weights trained with,
step by step.

    make train ARGS="sweep=spiral_pbt scheduler=replay scheduler.schedule=runs/sweeps/<time>/best.yaml"

best.yaml (nnlab.pbt) lists the numbers in effect from each optimizer step on (optimizer.lr, and
scheduler.gamma for an exponential decay) and the steps an epoch of the sweep had. The learning rate of
step t is the previous step's, times the gamma in effect where an epoch ended before it (the decay of
a per-epoch schedule), times lr(t) / lr(t - 1) where the numbers switched at t (PBT scales the rate the
weights trained with so), in that order, as the members' optimizers computed it: the same floats. The
optimizer's own lr has no effect."""
import math
from pathlib import Path

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from nnlab.config import ConfigError

KEYS = {"optimizer.lr", "scheduler.gamma"}  # what a replay replays
Schedule = list[tuple[int, float, float]]  # [(step, lr, gamma)]: the numbers from each step on


def read(schedule: str | None) -> tuple[Schedule, int]:
    """The schedule and the steps an epoch had, from a PBT sweep's best.yaml; each problem one line
    naming the file."""
    if schedule is None:
        raise ConfigError("scheduler=replay replays a schedule: give scheduler.schedule=<a PBT sweep's best.yaml>")
    path = Path(schedule)
    if path.is_symlink() or not path.is_file():
        raise ConfigError(f"scheduler.schedule={schedule} is not a file: give a PBT sweep's best.yaml "
                          "(make sweep SWEEP=spiral_pbt writes one)")
    try:
        saved = OmegaConf.to_container(OmegaConf.load(path))
        entries, per_epoch = saved.get("schedule"), saved.get("steps_per_epoch")
    except (OmegaConfBaseException, yaml.YAMLError, OSError, ValueError, AttributeError) as e:
        raise ConfigError(f"scheduler.schedule={schedule} does not read as a PBT sweep's best.yaml "
                          f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if not isinstance(per_epoch, int) or isinstance(per_epoch, bool) or per_epoch < 1:
        raise ConfigError(f"scheduler.schedule={schedule} holds no steps_per_epoch (a whole number >= 1): give the "
                          "best.yaml of a PBT sweep run by this nnlab")
    return parse(entries if isinstance(entries, list) else [None], schedule), per_epoch


def parse(entries: list, name: str = "best.yaml") -> Schedule:
    """[(step, lr, gamma)] from best.yaml's [{step, numbers}], each problem one line naming the file."""
    out, gamma = [], 1.0
    for entry in entries:
        numbers = entry.get("numbers") if isinstance(entry, dict) else None
        if not isinstance(numbers, dict) or not isinstance(entry.get("step"), int) or "optimizer.lr" not in numbers:
            raise ConfigError(f"scheduler.schedule={name} holds no schedule of steps and numbers: give a PBT "
                              "sweep's best.yaml")
        if other := sorted(set(numbers) - KEYS):
            raise ConfigError(f"scheduler.schedule={name} changes {', '.join(other)}: a replay replays "
                              "optimizer.lr and scheduler.gamma only")
        lr, gamma = numbers["optimizer.lr"], numbers.get("scheduler.gamma", gamma)
        if not all(isinstance(v, int | float) and v > 0 and math.isfinite(v) for v in (lr, gamma)):
            raise ConfigError(f"scheduler.schedule={name}: lr {lr} and gamma {gamma} must be numbers above 0")
        out.append((entry["step"], float(lr), float(gamma)))
    if not out or [s for s, _, _ in out] != sorted({s for s, _, _ in out}) or out[0][0] != 0:
        raise ConfigError(f"scheduler.schedule={name}: its steps must start at 0 and rise")
    return out


class Replay(LRScheduler):
    """The schedule's learning rate at every optimizer step (scheduler.interval: step). Its rates are
    set as they are (not the optimizer's lr times a factor, as LambdaLR's): the members' floats."""

    def __init__(self, optimizer: Optimizer, schedule: str | None = None, total_steps: int | None = None):
        self.schedule, self.per_epoch = read(schedule)
        self.rates = rates(self.schedule, self.per_epoch, total_steps or 1)
        super().__init__(optimizer)

    @staticmethod
    def check(schedule: str | None = None) -> None:
        """Read before a run starts (nnlab.train.parts): a bad file is refused before any work."""
        read(schedule)

    def get_lr(self) -> list[float]:
        t = self.last_epoch  # steps taken: the rate of the next one
        if len(self.rates) <= t:
            self.rates = rates(self.schedule, self.per_epoch, 2 * t + 1)
        return [self.rates[t]] * len(self.optimizer.param_groups)


def rates(schedule: Schedule, per_epoch: int, steps: int) -> list[float]:
    """The learning rate of steps 0 .. steps-1 on `schedule` (see the module's docstring)."""
    out, now, at = [schedule[0][1]], schedule[0], 1  # now: the numbers in effect; at: the next switch
    for t in range(1, steps):
        rate = out[-1]
        if t % per_epoch == 0:  # an epoch ended: its schedule's decay, with the gamma then in effect
            rate = rate * now[2]
        if at < len(schedule) and schedule[at][0] == t:  # PBT switched numbers here
            rate = rate * schedule[at][1] / now[1]
            now, at = schedule[at], at + 1
        out.append(rate)
    return out
