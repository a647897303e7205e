"""A PBT winner's schedule replayed in one run of its own: the learning rate its weights trained with.

    make train ARGS="sweep=spiral_pbt scheduler=replay scheduler.schedule=runs/sweeps/<time>/best.yaml"

best.yaml (nnlab.pbt) lists the numbers in effect from each epoch on: optimizer.lr, and
scheduler.gamma for an exponential decay. The learning rate of epoch t is then
lr(t) x gamma(0) x ... x gamma(t-1): each epoch's decay, and each switch of lr scaling the rate the
weights trained with, as PBT scales it. The optimizer's own lr has no effect."""
import math
from pathlib import Path

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from nnlab.config import ConfigError

KEYS = {"optimizer.lr", "scheduler.gamma"}  # what a replay replays


def read(schedule: str | None) -> list[tuple[int, float, float]]:
    """[(epoch, lr, gamma)] from a PBT sweep's best.yaml, each problem one line naming the file."""
    if schedule is None:
        raise ConfigError("scheduler=replay replays a schedule: give scheduler.schedule=<a PBT sweep's best.yaml>")
    path = Path(schedule)
    if path.is_symlink() or not path.is_file():
        raise ConfigError(f"scheduler.schedule={schedule} is not a file: give a PBT sweep's best.yaml "
                          "(make sweep SWEEP=spiral_pbt writes one)")
    try:
        entries = OmegaConf.to_container(OmegaConf.load(path)).get("schedule")
    except (OmegaConfBaseException, yaml.YAMLError, OSError, ValueError, AttributeError) as e:
        raise ConfigError(f"scheduler.schedule={schedule} does not read as a PBT sweep's best.yaml "
                          f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    out, gamma = [], 1.0
    for entry in entries if isinstance(entries, list) else [None]:
        numbers = entry.get("numbers") if isinstance(entry, dict) else None
        if not isinstance(numbers, dict) or not isinstance(entry.get("epoch"), int) or "optimizer.lr" not in numbers:
            raise ConfigError(f"scheduler.schedule={schedule} holds no schedule of epochs and numbers: give a PBT "
                              "sweep's best.yaml")
        if other := sorted(set(numbers) - KEYS):
            raise ConfigError(f"scheduler.schedule={schedule} changes {', '.join(other)}: a replay replays "
                              "optimizer.lr and scheduler.gamma only")
        lr, gamma = numbers["optimizer.lr"], numbers.get("scheduler.gamma", gamma)
        if not all(isinstance(v, int | float) and v > 0 and math.isfinite(v) for v in (lr, gamma)):
            raise ConfigError(f"scheduler.schedule={schedule}: lr {lr} and gamma {gamma} must be numbers above 0")
        out.append((entry["epoch"], float(lr), float(gamma)))
    if [e for e, _, _ in out] != sorted({e for e, _, _ in out}) or out[0][0] != 0:
        raise ConfigError(f"scheduler.schedule={schedule}: its epochs must start at 0 and rise")
    return out


class Replay(LambdaLR):
    """LambdaLR whose factor makes epoch t's learning rate the schedule's (see the module's docstring)."""

    def __init__(self, optimizer: Optimizer, schedule: str | None = None):
        self.schedule = read(schedule)
        self.rates = [self.schedule[0][1]]  # the learning rate of epochs 0, 1, ... as far as asked
        base = optimizer.param_groups[0]["lr"]
        super().__init__(optimizer, lambda t: self.rate(t) / base)

    @staticmethod
    def check(schedule: str | None = None) -> None:
        """Read before a run starts (nnlab.train.parts): a bad file is refused before any work."""
        read(schedule)

    def rate(self, t: int) -> float:
        if len(self.rates) <= t:
            self.rates = rates(self.schedule, t + 1)
        return self.rates[t]


def rates(schedule: list[tuple[int, float, float]], epochs: int) -> list[float]:
    """The learning rate of epochs 0 .. epochs-1 on `schedule` [(epoch, lr, gamma)]."""
    numbers = lambda t: next((lr, gamma) for e, lr, gamma in reversed(schedule) if e <= t)  # noqa: E731
    out = [schedule[0][1]]
    for t in range(1, epochs):
        (lr_before, gamma_before), (lr, _) = numbers(t - 1), numbers(t)
        out.append(out[-1] * gamma_before * lr / lr_before)
    return out
