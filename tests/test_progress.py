"""The sweep's progress line, read off a sweep folder that a test fills run by run."""
import io
import json

from nnlab.progress import Progress


def end(folder, name, status):
    (folder / name).mkdir()
    (folder / name / "metrics.json").write_text(json.dumps({"status": status}))


def test_progress_counts_runs_ended_and_failed_and_a_resumed_sweeps_done_runs_take_no_time(tmp_path, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr("nnlab.progress.time.monotonic", lambda: now[0])
    end(tmp_path, "a", "ok")  # ended before this sweep started: it is counted, not timed
    out = io.StringIO()
    progress = Progress(tmp_path, total=20, out=out)
    assert progress.bar is None  # not a terminal: plain lines
    now[0] += 60  # a minute goes by
    end(tmp_path, "b", "ok")
    end(tmp_path, "c", "failed")
    progress.show()
    line = out.getvalue().strip()
    # 2 runs in 60 s since the start, 17 to go: about 8.5 minutes
    assert line == "sweep: 3/20 runs ended, 1 did not finish, 01:00 so far, about 08:30 left", line
    progress.show()
    assert out.getvalue().count("\n") == 1  # no new tenth, no new line
    for name in "defghijklmnopqrst":
        end(tmp_path, name, "ok")
    progress.show(final=True)
    assert out.getvalue().splitlines()[-1].startswith("sweep: 20/20 runs ended, 1 did not finish, 01:00 so far")
    assert "left" not in out.getvalue().splitlines()[-1]


def test_a_sweep_that_ended_no_run_prints_no_last_line(tmp_path):
    out = io.StringIO()
    progress = Progress(tmp_path, total=4, out=out)
    progress.show(final=True)
    assert out.getvalue() == ""
