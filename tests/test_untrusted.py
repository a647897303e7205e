"""Folders made elsewhere (a run, a sweep, a study someone sent), and a command line's edge cases: each
case tried through the command, asserting its one line, its exit code, that no file outside the folder
changed (checksums) and that a refused command made no folder. docs/reliability.md states the threat
model these test."""
import hashlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SPIRAL, one_line_refusal
from test_compare import fake_run


def checksums(folder: Path) -> dict[str, str]:
    """Every file under folder (links as links) by its MD5."""
    return {str(p.relative_to(folder)): ("link " + os.readlink(p)) if p.is_symlink() else hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_symlink() or p.is_file()}


@pytest.fixture
def received(interrupted_run, tmp_path):
    """An interrupted spiral run, as someone else's folder arrives: its config saved as Hydra saves it,
    beside a victim file outside it that a link in the folder may point at."""
    (tmp_path / "victim.txt").write_text("kept")
    return interrupted_run


# ---- links out of a run folder: make train RESUME= -------------------------------------------------

@pytest.mark.parametrize("inside", [".lock", "train.log", ".hydra/resumed", "metrics.json", "checkpoints/last.ckpt"])
def test_a_received_run_with_a_link_out_of_it_is_not_resumed(inside, received, tmp_path, cli):
    link = received / inside
    if link.exists():
        link.unlink()
    os.symlink(tmp_path / "victim.txt", link)
    before = checksums(tmp_path)
    done = cli("nnlab.train", f"resume={received}", cwd=tmp_path)
    one_line_refusal(done, "")
    assert "is a symbolic link" in done.stderr and inside.split("/")[0] in done.stderr
    assert checksums(tmp_path) == before  # neither the folder nor the file it points at changed


def test_a_received_sweep_with_a_link_in_it_is_not_resumed(tmp_path, cli):
    sweep = tmp_path / "sweep"
    fake_run(sweep, "mlp", 1.0, 0.9, 0)
    (tmp_path / "victim.txt").write_text("kept")
    os.symlink(tmp_path / "victim.txt", next(sweep.iterdir()) / "train.log")
    before = checksums(tmp_path)
    done = cli("nnlab.train", "--multirun", *SPIRAL, "seed=0,1", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    one_line_refusal(done, "")
    assert "train.log is a symbolic link" in done.stderr and checksums(tmp_path) == before


# ---- malformed files in a sweep folder: make compare, make confirm, make dashboard ----------------

def overrides_dict(run): (run / ".hydra" / "overrides.yaml").write_text("model: mlp\n")  # noqa: E704
def overrides_text(run): (run / ".hydra" / "overrides.yaml").write_text("[unclosed\n")  # noqa: E704
def hydra_no_choices(run): (run / ".hydra" / "hydra.yaml").write_text("hydra: {}\n")  # noqa: E704
def config_seed_text(run): (run / ".hydra" / "config.yaml").write_text("seed: one\n")  # noqa: E704
def metrics_text(run): (run / "metrics.json").write_text('{"status": "ok", "val/acc": "high"}')  # noqa: E704
def metrics_acc_nan(run): (run / "metrics.json").write_text('{"status": "ok", "val/acc": NaN}')  # noqa: E704
def metrics_list(run): (run / "metrics.json").write_text("[0.9, 0.8]")  # noqa: E704
def metrics_status(run): (run / "metrics.json").write_text('{"status": "great"}')  # noqa: E704
def metrics_missing(run): (run / "metrics.json").write_text('{"status": "ok", "val/acc": 0.9}')  # noqa: E704
def metrics_link(run): (run / "metrics.json").unlink() or os.symlink("/etc/hostname", run / "metrics.json")  # noqa: E704


MALFORMED = [(overrides_dict, "overrides.yaml is not a list of overrides"), (overrides_text, "overrides.yaml is not YAML"),
             (hydra_no_choices, "hydra.yaml does not record the model and data"),
             (config_seed_text, "config.yaml has no whole-number seed"),
             (metrics_text, "val/acc is 'high', not a number"), (metrics_acc_nan, "val/acc is nan, not an accuracy"),
             (metrics_list, "a list, not an object"), (metrics_status, "status 'great' is not one of"),
             (metrics_missing, "status ok without test/acc, val/loss"), (metrics_link, "a symbolic link")]


@pytest.mark.parametrize("damage,says", MALFORMED, ids=[d.__name__ for d, _ in MALFORMED])
def test_compare_leaves_a_malformed_run_out_and_confirm_refuses_it(damage, says, tmp_path, cli):
    sweep = tmp_path / "sweep"
    for seed in (0, 1):
        fake_run(sweep, "mlp", 1.0, 0.9, seed, val=0.9, test=0.9)
        fake_run(sweep, "linear", 1.0, 0.9, seed, val=0.5, test=0.5)
    bad = sweep / "model=linear,optimizer.lr=1.0,scheduler.gamma=0.9,seed=1"
    damage(bad)
    compared = cli("nnlab.compare", str(sweep), cwd=tmp_path)
    assert compared.returncode == 0 and "Traceback" not in compared.stderr, compared.stderr[-2000:]
    (note,) = compared.stderr.strip().splitlines()  # one line for the run left out
    assert note.startswith(f"nnlab: {bad}") and says in note and note.endswith("left out of the comparison")
    assert "| spiral | mlp |" in compared.stdout and "1 |" in compared.stdout  # the others compared
    before = checksums(tmp_path)
    confirmed = cli("nnlab.confirm", str(sweep), "--seeds", "2", cwd=tmp_path)
    one_line_refusal(confirmed, str(bad))
    assert says in confirmed.stderr and checksums(tmp_path) == before and not (sweep / "confirm").exists()


def garbage_db(path): path.write_bytes(b"not a database at all")  # noqa: E704
def garbage_journal(path): path.write_text('{"op_code": 0, "worker_id": "x"}\nnot json\n')  # noqa: E704
def empty_db(path): sqlite3.connect(path).close()  # noqa: E704  (a database, but no study in it)
def linked_db(path): os.symlink("/etc/hostname", path)  # noqa: E704


STUDIES = [(garbage_db, "study.db", "does not read as an Optuna study"),
           (garbage_journal, "study.journal", "does not read as an Optuna study"),
           (empty_db, "study.db", "does not read as an Optuna study"), (linked_db, "study.db", "is a symbolic link")]


@pytest.mark.parametrize("damage,name,says", STUDIES, ids=[d.__name__ for d, _, _ in STUDIES])
def test_an_unreadable_study_is_refused_never_read_as_empty(damage, name, says, tmp_path, cli):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    damage(sweep / name)
    before = checksums(tmp_path)
    one_line_refusal(cli("nnlab.search", str(sweep), cwd=tmp_path), "")  # make dashboard
    done = cli("nnlab.search", str(sweep), cwd=tmp_path)
    assert says in done.stderr and checksums(tmp_path) == before


# ---- a command line's mistakes: one line, before any folder ----------------------------------------

MISTAKES = [
    (["seed=1\n2"], "'seed=1\\n2' is not an override Hydra can read"),    # a newline in a value
    (["seed=1", "2"], "'2' is not an override (key=value) nor a flag"),
    (["seed=１２"], "'seed=１２' is not an override Hydra can read"),     # full-width digits
    (["seed=😀"], "'seed=😀' is not an override Hydra can read"),
    (["'()'=1"], "\"'()'=1\" is not an override Hydra can read"),
    (["data=spiral", "data.n=1000000000000"], "data.n=1000000000000 is invalid"),
    (["data=spiral", "data.noise=1e308"], "data.noise=1e+308 is invalid"),
    (["trainer.accelerator=cpu", "trainer=ddp", "trainer.devices=64"], "trainer.devices=64 asks for more devices"),
    (["+trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val=-1 is invalid"),
    (["~=0"], "'~=0' deletes nothing: a deletion names what it deletes"),  # found by test_fuzz.py
]


@pytest.mark.parametrize("args,says", MISTAKES, ids=[s.split(" is")[0] for _, s in MISTAKES])
def test_a_mistake_on_the_command_line_is_one_line_before_any_folder(args, says, tmp_path, cli):
    one_line_refusal(cli("nnlab.train", "model=mlp", *args, cwd=tmp_path), says)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("module,args,says", [
    ("nnlab.search", ["--port", "99999999"], "--port 99999999: give a port in [1024, 65535]"),
    ("nnlab.confirm", ["--seeds", "100000000000"], "--seeds 100000000000: at most 1000 fresh seeds"),
])
def test_a_tools_number_out_of_range_is_one_line(module, args, says, tmp_path, cli):
    one_line_refusal(cli(module, *args, cwd=tmp_path), says)
    assert not list(tmp_path.iterdir())


# ---- one process sweeps a sweep folder at a time ---------------------------------------------------

HOLD = "import sys, time; from pathlib import Path; from nnlab.runs import hold\n" \
       "with hold(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(120)"


def test_a_sweep_another_process_is_resuming_is_refused_naming_its_pid(tmp_path, cli):
    sweep = tmp_path / "sweep"
    fake_run(sweep, "mlp", 1.0, 0.9, 0, status="interrupted")
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(sweep)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "held\n"
        before = checksums(tmp_path)
        done = cli("nnlab.train", "--multirun", *SPIRAL, "seed=0,1", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
        one_line_refusal(done, f"the sweep folder {sweep} is being swept by process {proc.pid}")
        assert checksums(tmp_path) == before  # its runs not reported as failures, nothing written
    finally:
        proc.kill()
        proc.wait()


def test_any_garbage_for_a_checkpoint_is_named_in_one_line(tmp_path):
    """Random bytes, whole and cut, and a real checkpoint cut anywhere: torch's zip reader and the
    unpickler raise all kinds of errors on them; each must become the one line naming the file."""
    import random

    import torch

    from nnlab.checkpoint import checkpoint_problem
    from nnlab.config import ConfigError
    from nnlab.evaluate import load
    folder = tmp_path
    good = folder / "good.ckpt"
    torch.save({"state_dict": {"w": torch.ones(3)}, "hyper_parameters": {"config": {}}}, good)
    whole, rng = good.read_bytes(), random.Random(0)
    samples = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400))) for _ in range(150)]
    samples += [whole[:rng.randrange(len(whole))] for _ in range(50)]
    for i, data in enumerate(samples):
        path = folder / f"{i}.ckpt"
        path.write_bytes(data)
        assert checkpoint_problem(path).startswith(f"{path} is not a "), data[:40]
        with pytest.raises(ConfigError, match=f"^{path} is not a readable nnlab checkpoint"):
            load(path)
