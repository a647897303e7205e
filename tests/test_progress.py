"""The sweep's progress line, read off a sweep folder that a test fills run by run."""
import io
import json

from nnlab.progress import Progress


def end(folder, name, status, overrides=None):
    (folder / name).mkdir()
    if overrides is not None:
        (folder / name / ".hydra").mkdir()
        (folder / name / ".hydra" / "overrides.yaml").write_text(json.dumps(overrides))
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


def test_given_its_jobs_progress_counts_only_their_runs_in_a_shared_folder(tmp_path):
    # make confirm sweeps one architecture after another into one folder
    end(tmp_path, "mlp-0", "ok", ["model=mlp", "seed=5"])
    end(tmp_path, "odd", "ok", "not a list")
    jobs = [["model=linear", f"seed={s}"] for s in (5, 6)]
    out = io.StringIO()
    progress = Progress(tmp_path, total=2, out=out, jobs=jobs)
    assert progress.done_before == 0
    end(tmp_path, "linear-5", "ok", ["seed=5", "model=linear"])  # in any order
    progress.show()
    assert out.getvalue().startswith("sweep: 1/2 runs ended, ")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "metrics.json").write_text("{}")  # no overrides: not one of these runs
    end(tmp_path, "linear-6", "failed", ["model=linear", "seed=6"])
    progress.show(final=True)
    assert out.getvalue().splitlines()[-1].startswith("sweep: 2/2 runs ended, 1 did not finish, ")
