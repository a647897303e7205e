"""On a machine other processes keep busy, OpenMP's idle threads sleep instead of spinning; no number changes.

torch's CPU threads wait for each other at the end of every parallel op, by default spinning. With a
core taken by another process, a spinning thread holds a core its partner needs: 3 MNIST epochs of
the notebook's MLP on the 2-core VM took 2.5 s alone and 7.3-8.1 s beside one busy process on 2
threads, 3.0-3.2 s with OMP_WAIT_POLICY=PASSIVE (threads sleep) and 2.7 s on 1 thread (experiments/
README.md, experiments/busy.sh). PASSIVE costs 23% alone (3.1 s), so it is chosen only where the machine is busy as the
process starts. The wait policy decides when threads sleep, never what they compute: the numbers are
the same bit for bit. OpenMP reads it once, as torch loads it, so this runs before torch is imported
(nnlab.train's first import). A policy set in the environment is left as it is.
"""
import os
import time

from nnlab import cores

WINDOW_S = 0.1  # how long the machine is watched: 10 clock ticks a core at Linux's 100 Hz
OTHERS: float | None = None  # cores other processes kept busy as this process started; None: not measured


def busy_seconds() -> float | None:
    """CPU seconds all the machine's cores have spent busy since boot (Linux's /proc/stat), or None."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")  # user..steal; guest is inside user


def others_busy(window_s: float = WINDOW_S) -> float | None:
    """Cores kept busy by other processes over `window_s`: the machine's busy time less this process's own."""
    start, own = busy_seconds(), sum(os.times()[:2])
    t = time.monotonic()
    time.sleep(window_s)
    end = busy_seconds()
    if start is None or end is None:
        return None
    return max(0.0, (end - start - (sum(os.times()[:2]) - own)) / (time.monotonic() - t))


def settle() -> None:
    """Measure the machine once; where others keep half a core or more busy, OpenMP threads sleep."""
    global OTHERS
    if OTHERS is not None or "OMP_WAIT_POLICY" in os.environ or cores() < 2:
        return
    OTHERS = others_busy()
    if OTHERS is not None and OTHERS >= 0.5:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"


def line(threads: int) -> str | None:
    """The one line a run on `threads` threads says when its machine was busy as it started, else None."""
    if OTHERS is None or OTHERS < 0.5 or threads < 2:
        return None
    return (f"nnlab: other processes kept about {OTHERS:.1f} of this machine's {os.cpu_count()} cores busy as this "
            f"run started: its {threads} threads sleep while they wait (OMP_WAIT_POLICY=PASSIVE; the numbers do not "
            "change); threads=1 is faster still on a busy machine, its numbers may differ in the last digits")
