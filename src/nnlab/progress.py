"""A sweep's progress on the console: runs done of N, failures, time so far and left.

On a terminal it is one live line (tqdm's, rewritten in place); elsewhere (a log file, CI) a plain
line at each tenth of the sweep. It counts the metrics.json files in the sweep folder, which every run
writes as it ends whatever launched it (one after another, populations in worker processes, joblib,
submitit), so it needs nothing from the runs themselves: a thread reads the folder twice a second.
The runs' own lines go to their train.log, not to the console (nnlab.train.task).
"""
import contextlib
import shutil
import sys
import threading
import time
from pathlib import Path

from tqdm import tqdm
from tqdm.contrib import DummyTqdmFile

from nnlab.runs import FINISHED, RunFolderError, read_yaml, run_status

EVERY_S = 0.5  # how often the folder is read


def counts(folder: Path, mine=lambda run: True) -> tuple[int, int]:
    """(runs ended, of which did not finish: failed, bad config, interrupted) in a sweep folder."""
    statuses = [run_status(p.parent) for p in folder.glob("*/metrics.json") if mine(p.parent)]
    return len(statuses), sum(s not in FINISHED for s in statuses)


def clock(seconds: float) -> str:
    return time.strftime("%M:%S" if seconds < 3600 else "%H:%M:%S", time.gmtime(max(seconds, 0)))


class Progress:
    """Shows `total` runs' progress in `folder` while running (start()/stop()). Given the jobs' overrides,
    it counts only their runs: make confirm sweeps each architecture into one folder in turn."""

    def __init__(self, folder: Path, total: int, out=None, jobs: list[list[str]] | None = None):
        self.folder, self.total, self.out = Path(folder), total, out or sys.stdout
        self.jobs = None if jobs is None else {frozenset(job) for job in jobs}
        self.known: dict[str, bool] = {}  # run folder name -> one of the jobs (its overrides never change)
        self.stopping, self.thread = threading.Event(), None
        self.start_time, self.done_before, self.shown = time.monotonic(), self.counts()[0], 0
        # tqdm's live line on a terminal: its rate and time left count the runs ended from now on
        # (the terminal's size where it says, else 80x24: a pseudo-terminal may report 0x0, which
        # tqdm reads as -1 rows and then draws nothing)
        size = shutil.get_terminal_size()
        self.bar = tqdm(total=total, initial=self.done_before, unit="run", desc="sweep", file=self.out,
                        ncols=size.columns, nrows=size.lines, bar_format="{desc}: {n_fmt}/{total_fmt} runs "
                        "ended{postfix} [{elapsed} so far, {remaining} left]") if self.out.isatty() else None

    def mine(self, run: Path) -> bool:
        if self.jobs is None:
            return True
        if run.name not in self.known:
            try:  # written when the run started, before its metrics.json
                overrides = read_yaml(run / ".hydra" / "overrides.yaml")
                self.known[run.name] = isinstance(overrides, list) and frozenset(map(str, overrides)) in self.jobs
            except (RunFolderError, OSError):  # not readable: not counted
                self.known[run.name] = False
        return self.known[run.name]

    def counts(self) -> tuple[int, int]:
        return counts(self.folder, self.mine)

    def line(self, done: int, failed: int) -> str:
        elapsed = time.monotonic() - self.start_time
        new = done - self.done_before  # a resumed sweep's finished runs took no time now
        left = f", about {clock(elapsed / new * (self.total - done))} left" if 0 < new and done < self.total else ""
        failures = f", {failed} did not finish" if failed else ""
        return f"sweep: {done}/{self.total} runs ended{failures}, {clock(elapsed)} so far{left}"

    def show(self, final: bool = False) -> None:
        done, failed = self.counts()
        if self.bar is not None:
            self.bar.set_postfix_str(f"{failed} did not finish" if failed else "", refresh=False)
            self.bar.update(done - self.bar.n)
            if final:
                self.bar.close()
        elif done * 10 // max(self.total, 1) > self.shown or final and done != self.done_before:
            self.shown = done * 10 // max(self.total, 1)  # a line at each tenth, and the last
            print(self.line(done, failed), file=self.out, flush=True)

    def run(self) -> None:
        while not self.stopping.wait(EVERY_S):
            self.show()

    def start(self) -> None:
        self.thread = threading.Thread(target=self.run, name="nnlab-progress", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        if self.thread is not None:
            self.thread.join()
            self.show(final=True)


@contextlib.contextmanager
def shown(folder: Path, total: int, jobs: list[list[str]] | None = None):
    """Within it, the sweep's progress line; stopped however the block ends.

    While the live line is up, what this process prints goes above it (tqdm's DummyTqdmFile), so a
    launcher's plan or a warning does not land in the middle of the line."""
    progress = Progress(folder, total, jobs=jobs)
    with contextlib.ExitStack() as stack:
        if progress.bar is not None:
            stack.enter_context(contextlib.redirect_stdout(DummyTqdmFile(sys.stdout)))
            stack.enter_context(contextlib.redirect_stderr(DummyTqdmFile(sys.stderr)))
        progress.start()
        try:
            yield progress
        finally:
            progress.stop()
