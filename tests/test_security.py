"""Attacks and careless mistakes, each tried for real: no code runs from a config, a checkpoint or the
command line beyond the allow-list (each case plants a marker file's path and asserts it never
appears), no folder escapes runs/, one writer per run folder, and every refusal is one line that
changes nothing already written."""
import ctypes
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import SPIRAL, one_line_refusal
from omegaconf import OmegaConf

from nnlab import app
from nnlab.cli import check_argv
from nnlab.config import ConfigError
from nnlab.data import mnist_raw
from nnlab.evaluate import evaluate
from nnlab.runs import NAME_BYTES, FolderBusy, MetricsError, dirname, hold
from nnlab.train import check_resume, train

REAL_MD5 = dict(mnist_raw.RAW_MD5)


def files(folder: Path) -> dict[str, str]:
    """Every file under folder by its MD5: a refusal must leave this unchanged."""
    return {str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def copy_to(marker: Path) -> dict:
    return {"_target_": "shutil.copyfile", "src": "/etc/hostname", "dst": str(marker)}


def made_by(resolver: str, node) -> str:
    """`${oc.create:"{_target_: ..., dst: ...}"}`: an interpolation that makes `node` when resolved."""
    def flow(v):
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k}: {flow(x)}" for k, x in v.items()) + "}"
        return "[" + ", ".join(flow(x) for x in v) + "]" if isinstance(v, list) else str(v)
    return "${" + resolver + ':"' + flow(node) + '"}'


# ---- code that the allow-list must stop -------------------------------------------------------

def test_evaluate_refuses_a_target_at_any_depth_of_the_stored_config_in_one_line(interrupted_run, tmp_path, cli):
    marker = tmp_path / "marker"
    ckpt = torch.load(interrupted_run / "checkpoints" / "last.ckpt", weights_only=True)
    config = ckpt["hyper_parameters"]["config"]
    crafted = {"below the top": {"data": {**config["data"], "noise": {"_target_": "builtins.open", "file": str(marker),
                                                                      "mode": "w"}}},
               "in _args_": {"model": {**config["model"], "_args_": [copy_to(marker)]}},
               "through an interpolation": {"model": {**config["model"], "init_std": made_by("oc.create", copy_to(marker))}}}
    for name, change in crafted.items():
        ckpt["hyper_parameters"]["config"] = {**config, **change}
        torch.save(ckpt, tmp_path / "crafted.ckpt")
        with pytest.raises(ConfigError, match="is not allowed"):
            evaluate(tmp_path / "crafted.ckpt")
        assert not marker.exists(), name
    done = cli("nnlab.evaluate", str(tmp_path / "crafted.ckpt"), cwd=tmp_path)
    one_line_refusal(done, "model.init_std._target_='shutil.copyfile' is not allowed")
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    one_line_refusal(cli("nnlab.evaluate", str(garbage), cwd=tmp_path), f"{garbage} is not a readable nnlab checkpoint")
    assert not marker.exists()


def test_resume_refuses_a_target_inside_an_args_list_of_the_saved_config(interrupted_run, tmp_path, cli):
    marker, saved = tmp_path / "marker", interrupted_run / ".hydra" / "config.yaml"
    cfg = OmegaConf.load(saved)
    cfg.callbacks.rng._args_ = [copy_to(marker)]
    OmegaConf.save(cfg, saved)
    before = files(interrupted_run)
    done = cli("nnlab.train", f"resume={interrupted_run}", cwd=tmp_path)
    assert done.returncode == 1 and "callbacks.rng._args_[0]._target_='shutil.copyfile' is not allowed" in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("nnlab: callbacks.rng._args_[0]._target_")
    assert not marker.exists()
    # Hydra records the attempt under .hydra/resumed and in train.log; nothing the run wrote changed
    assert {k: v for k, v in files(interrupted_run).items() if k in before} == before


@pytest.mark.parametrize("make_node", [
    lambda m: [f"+callbacks.rng._args_='{made_by('oc.create', [copy_to(m)])}'"],
    lambda m: [f"+model._args_='{made_by('oc.create', [copy_to(m)])}'"],
    lambda m: [f"+callbacks.x='{made_by('oc.decode', copy_to(m))}'"],
])
def test_the_gate_sees_nodes_made_by_interpolations(make_node, make_cfg, tmp_path):
    """In-process, past the command-line check: the gate resolves before it looks."""
    marker = tmp_path / "marker"
    with pytest.raises(ConfigError, match="'shutil.copyfile' is not allowed"):
        train(make_cfg(*SPIRAL, *make_node(marker)))
    assert not marker.exists() and not (tmp_path / "run").exists()


def test_hydra_callbacks_made_by_an_interpolation_are_refused_before_hydra_builds_them(tmp_path, cli):
    marker = tmp_path / "marker"
    arg = f"+hydra.callbacks.x='{made_by('oc.create', copy_to(marker))}'"
    done = cli("nnlab.train", *SPIRAL, arg, cwd=tmp_path)  # under plain Hydra: copies the file, exit 0
    one_line_refusal(done, "hydra.callbacks.x: ${oc.create:...} is not allowed on the command line")
    assert not marker.exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("hydra_node,message", [
    ({"callbacks": {"x": "COPY"}}, "hydra.callbacks.x._target_='shutil.copyfile' is not allowed"),
    ({"callbacks": {"x": {"_target_": "nnlab.sweep.SweepReport", "_args_": ["COPY"]}}},
     "hydra.callbacks.x._args_[0]._target_='shutil.copyfile' is not allowed"),
    ({"job_logging": {"handlers": {"x": {"()": "shutil.copyfile", "src": "/etc/hostname", "dst": "MARKER"}}}},
     "hydra.job_logging.handlers.x.()='shutil.copyfile' is not allowed"),
    ({"launcher": {"x": "COPY"}}, "the config does not compose: "),  # the default launcher takes no x
])
def test_config_files_from_config_dir_and_searchpath_pass_the_same_gate(hydra_node, message, tmp_path, cli):
    """Config files the command line brings in (--config-dir with --config-name, hydra.searchpath with a
    group option, a sweep over such options): Hydra would build these nodes before nnlab's code runs."""
    # a package name of this test's own: an earlier one's stays imported in this process
    marker, extra = tmp_path / "marker", tmp_path / f"extra_{abs(hash(str(tmp_path)))}"
    (extra / "experiment").mkdir(parents=True)
    node = json.loads(json.dumps(hydra_node).replace('"COPY"', json.dumps(copy_to(marker)))
                      .replace("MARKER", str(marker)))
    OmegaConf.save({"defaults": ["train", "_self_"], "hydra": node}, extra / "mine.yaml")
    (extra / "experiment" / "mine.yaml").write_text("# @package _global_\n" + OmegaConf.to_yaml({"hydra": node}))
    (extra / "__init__.py").touch()  # a package too: importable from the command's folder (python -m adds it)
    for args in (["--config-dir", str(extra), "--config-name", "mine"],
                 [f"hydra.searchpath=[file://{extra}]", "experiment=mine"],
                 [f"hydra.searchpath=[pkg://{extra.name}]", "experiment=mine"],
                 ["--multirun", f"hydra.searchpath=[file://{extra}]", "experiment=spiral_mlp,mine"]):
        one_line_refusal(cli("nnlab.train", *args, *SPIRAL, cwd=tmp_path), message)
    assert not marker.exists() and not (tmp_path / "runs").exists()


def composed(argv: list[str]):
    """The command's one composition, after its checks (nnlab.app)."""
    with app.composed(check_argv(argv)) as (_, _, cfg):
        return cfg


def test_a_config_dir_of_allowed_configs_composes_as_hydra_composes_it_and_plugin_nodes_are_checked(tmp_path,
                                                                                                    monkeypatch):
    (tmp_path / "model").mkdir()
    OmegaConf.save({"defaults": ["train", "_self_"], "seed": 7}, tmp_path / "mine.yaml")
    OmegaConf.save({"_target_": "nnlab.models.MLP", "hidden": 3}, tmp_path / "model" / "tiny.yaml")
    monkeypatch.chdir(tmp_path)
    cfg = composed(["--config-dir", str(tmp_path), "--config-name", "mine", "data=spiral", "model=tiny"])
    assert cfg.seed == 7 and cfg.model.hidden == 3 and cfg.data._target_.endswith("SpiralDataModule")
    assert list(cfg.hydra.callbacks) == ["sweep_report"]
    assert composed(["--config-dir", str(tmp_path), "model=tiny", "model.hidden=4"]).model.hidden == 4
    (tmp_path / "__init__.py").touch()  # the folder as an importable package: hydra.searchpath's pkg:// form
    monkeypatch.syspath_prepend(str(tmp_path.parent))
    pkg = [f"hydra.searchpath=[pkg://{tmp_path.name}]", "data=spiral", "model=tiny"]
    assert composed(pkg).model.hidden == 3 and composed([*pkg, "model.hidden=4"]).model.hidden == 4
    (tmp_path / "experiment").mkdir()  # a node nested in a launcher's config: Hydra instantiates it with the launcher
    marker = tmp_path / "marker"
    (tmp_path / "experiment" / "x.yaml").write_text("# @package _global_\n" +
                                                    OmegaConf.to_yaml({"hydra": {"launcher": {"x": copy_to(marker)}}}))
    with pytest.raises(ConfigError, match=r"^hydra.launcher.x._target_='shutil.copyfile' is not allowed"):
        composed(["--multirun", "hydra/launcher=local", f"hydra.searchpath=[file://{tmp_path}]", "experiment=x"])
    assert not marker.exists()


@pytest.mark.parametrize("arg,message", [
    ("+callbacks.rng._args_='${oc.create:[]}'", "callbacks.rng._args_: ${oc.create:...} is not allowed"),
    ("+model._args_=['${oc.decode:x}']", "model._args_[0]: ${oc.decode:...} is not allowed"),
    ("trainer.devices='${oc.create:{a: 1}}'", "trainer.devices: ${oc.create:...} is not allowed"),  # slurm.yaml reads it
    ("+hydra.job_logging.handlers.x={class: subprocess.Popen, args: [touch, m]}",
     "hydra.job_logging.handlers.x.class='subprocess.Popen' is not allowed"),
    ("+model._target_=lightning.pytorch.strategies.launchers.subprocess_script.subprocess.Popen",
     "model._target_='lightning.pytorch.strategies.launchers.subprocess_script.subprocess.Popen' is not allowed: "
     "it names subprocess.Popen"),
    ("+hydra.callbacks.x={_target_: nnlab.train.subprocess.Popen}", "hydra.callbacks.x._target_"),
    ("hydra.job_logging.handlers.file.filename='${hydra.runtime.output_dir}/../../x.log'",
     "hydra.job_logging.handlers.file.filename="),
    ("+hydra.hydra_logging.handlers.f={class: logging.FileHandler, filename: /tmp/x, mode: w}",
     "hydra.hydra_logging.handlers.f.filename='/tmp/x' is not allowed: a log file must be inside the run folder"),
])
def test_command_line_routes_around_the_allow_list_are_refused(arg, message):
    with pytest.raises(ConfigError) as e:
        check_argv([arg])
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


# Hydra's logging config is a second way to build objects (logging.config.dictConfig: `class`, `()`
# factories, `ext://` imports). Each vector from a config file (`()` keys cannot be written on the command
# line) and, where it can be, on the command line: one line, exit 1, no folder made, the victim file and
# the folder's other files unchanged. VICTIM and MARKER are filled in per test.
LOGGING_VECTORS = [
    ({"job_logging": {"handlers": {"x": {"class": "logging.io.FileIO", "file": "VICTIM", "mode": "w"}}}},
     "hydra.job_logging.handlers.x.class='logging.io.FileIO' is not allowed"),        # a path to io.FileIO
    ({"job_logging": {"handlers": {"x": {"()": "logging.os.makedirs", "name": "MARKER"}}}},
     "hydra.job_logging.handlers.x.()='logging.os.makedirs' is not allowed"),          # a function, not a class
    ({"hydra_logging": {"formatters": {"x": {"()": "logging.io.open", "file": "VICTIM", "mode": "w"}}}},
     "hydra.hydra_logging.formatters.x.()='logging.io.open' is not allowed"),
    ({"job_logging": {"handlers": {"x": {"class": "logging.StreamHandler", "stream": "ext://os.system"}}}},
     "hydra.job_logging.handlers.x.stream='ext://os.system' is not allowed: Hydra's logging may refer to"),
    ({"job_logging": {"filters": {"x": {"()": "subprocess.Popen", "args": ["touch", "MARKER"]}}}},
     "hydra.job_logging.filters.x.()='subprocess.Popen' is not allowed"),
    ({"job_logging": {"handlers": {"file": {"filename": "VICTIM"}}}}, "hydra.job_logging.handlers.file.filename="),
]


def flow(node) -> str:
    """A node in Hydra's override syntax: {a: {b: c}}."""
    if isinstance(node, dict):
        return "{" + ", ".join(f"{k}: {flow(v)}" for k, v in node.items()) + "}"
    return "[" + ", ".join(map(flow, node)) + "]" if isinstance(node, list) else f"'{node}'"


@pytest.mark.parametrize("node,message", LOGGING_VECTORS, ids=[m.split(" is")[0] for _, m in LOGGING_VECTORS])
def test_logging_configs_pass_the_same_gate_as_every_object_nnlab_builds(node, message, tmp_path, cli):
    victim, marker, extra = tmp_path / "victim.txt", tmp_path / "marker", tmp_path / "extra"
    victim.write_text("kept")
    node = json.loads(json.dumps(node).replace("VICTIM", str(victim)).replace("MARKER", str(marker)))
    extra.mkdir()
    OmegaConf.save({"defaults": ["train", "_self_"], "hydra": node}, extra / "mine.yaml")
    before = files(tmp_path)
    ways = [["--config-dir", str(extra), "--config-name", "mine"]]
    if "()" not in json.dumps(node):
        (key, group), = node.items()
        (name, value), = group.items()
        ways.append([f"+hydra.{key}.{name}={flow(value)}"])
    for way in ways:
        one_line_refusal(cli("nnlab.train", *way, *SPIRAL, cwd=tmp_path), message)
        assert files(tmp_path) == before and not marker.exists() and not (tmp_path / "runs").exists(), way


def test_logging_configs_may_still_build_the_standard_librarys_handlers(tmp_path, cli):
    done = cli("nnlab.train", *SPIRAL, "+hydra.job_logging.handlers.err={class: logging.StreamHandler, "
               "stream: 'ext://sys.stderr', formatter: plain}", cwd=tmp_path)
    assert done.returncode == 0 and "status: ok" in done.stdout, done.stderr[-2000:]


# ---- keys and values ---------------------------------------------------------------------------

@pytest.mark.parametrize("args,message", [
    (["lrr=0.1"], "lrr is not a key: did you mean optimizer.lr?"),
    (["optimizer.lrr=0.1"], "optimizer.lrr is not a key: did you mean optimizer.lr"),
    (["trainer.max_epoch=3"], "trainer.max_epoch is not a key: did you mean trainer.max_epochs"),
    (["model.hidden=3"], "model.hidden is not a key: "),             # the CNN has none; the MLP does:
    (["--multirun", "model=linear,cnn", "model.hiden=3"], "model.hiden is not a key: did you mean model.init_std"),
])
def test_a_typo_in_a_key_names_the_closest_keys_in_one_line(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as e:
        composed(args)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)
    assert composed(["model=mlp", "model.hidden=3"]).model.hidden == 3  # real keys
    assert composed(["--multirun", "model=mlp,linear", "optimizer.lr=0.1"]).optimizer.lr == 0.1


# ---- run folders -------------------------------------------------------------------------------

def test_folder_names_from_overrides_stay_one_path_part_and_fit_the_filesystem():
    assert dirname("+tag=../../../../tmp/x") == "+tag=..%2F..%2F..%2F..%2Ftmp%2Fx"
    assert dirname("a=50%/b") == "a=50%25%2Fb" != dirname("a=50%2Fb")  # unambiguous
    assert dirname("") == "default"
    long = ",".join(f"+optimizer.weight_decay{i}=0.{'0' * 20}1" for i in range(11))
    short = dirname(long)
    assert len(short.encode()) <= NAME_BYTES and short.startswith(long[:100]) and short != dirname(long + "2")
    assert dirname("model=mlp,seed=0") == "model=mlp,seed=0"  # readable names stay as they are


def test_a_refused_command_creates_nothing_and_a_slash_in_a_value_stays_inside_runs(tmp_path, cli):
    work = tmp_path / "work"
    work.mkdir()
    one_line_refusal(cli("nnlab.train", "+tag=../../../x", cwd=work), "tag is not a key")
    one_line_refusal(cli("nnlab.train", "data=spiral", "model=cnn", cwd=work), "model=cnn takes C x H x W images")
    one_line_refusal(cli("nnlab.train", "resume=/nonexistent/run", cwd=work), "resume=/nonexistent/run is not a run folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"] and not list(work.iterdir())
    assert not Path("/nonexistent").exists()
    done = cli("nnlab.train", *SPIRAL, "+trainer.default_root_dir=../../../x", cwd=work)
    assert done.returncode == 0, done.stderr[-2000:]
    (run,) = (work / "runs").glob("*/*")
    assert "+trainer.default_root_dir=..%2F..%2F..%2Fx" in run.parent.name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]


def without_write_permission() -> None:
    """preexec_fn: the child process is bound by file modes. Tests run as root, which they do not bind:
    the child keeps uid 0 (its Python may sit in a folder only root can read) but drops the two
    capabilities that override file modes, CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH, from the set
    its exec may keep (prctl PR_CAPBSET_DROP)."""
    if os.geteuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        for cap in (1, 2):
            if libc.prctl(24, cap, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


@pytest.mark.parametrize("args,key", [
    ([], "hydra.run.dir"),                                     # runs/ in the current, read-only folder
    pytest.param(["hydra.run.dir=ro/x"], "hydra.run.dir", marks=pytest.mark.slow),
    pytest.param(["--multirun", "seed=0,1", "hydra.sweep.dir=ro/sweep"], "hydra.sweep.dir", marks=pytest.mark.slow),
])
def test_a_read_only_output_folder_is_one_line_naming_it_and_the_fix(args, key, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        probe = subprocess.run(["touch", str(ro / "probe")], preexec_fn=without_write_permission, capture_output=True)
    except subprocess.SubprocessError as e:
        pytest.skip(f"cannot make a folder read-only to a child process here: {e}")
    if probe.returncode == 0:
        pytest.skip("cannot make a folder read-only to a child process here: it could still write")
    cwd = ro if not args else tmp_path
    done = subprocess.run([sys.executable, "-m", "nnlab.train", *args, *SPIRAL], cwd=cwd, capture_output=True,
                          text=True, timeout=300, preexec_fn=without_write_permission)
    one_line_refusal(done, f"{ro} is not writable")
    assert done.stderr.rstrip().endswith(f"or name one with {key}=<folder>")
    assert not list(ro.iterdir()) and sorted(p.name for p in tmp_path.iterdir()) == ["ro"]


# ---- resume: refused in one line, nothing changed; a resumed record is whole -------------------

def test_resuming_a_read_only_run_folder_is_one_line_naming_it_and_the_fix(interrupted_run):
    # make train RESUME=<run folder> where the folder cannot be written: refused before Hydra writes
    # anything (it would add .hydra/resumed/ and a log file, then fail to save a checkpoint)
    paths = [interrupted_run, *interrupted_run.rglob("*")]
    modes = {p: p.stat().st_mode for p in paths}
    for p in paths:
        p.chmod(modes[p] & ~0o222)
    try:
        try:
            probe = subprocess.run(["touch", str(interrupted_run / "probe")], preexec_fn=without_write_permission,
                                   capture_output=True)
        except subprocess.SubprocessError as e:
            pytest.skip(f"cannot make a folder read-only to a child process here: {e}")
        if probe.returncode == 0:
            pytest.skip("cannot make a folder read-only to a child process here: it could still write")
        before = files(interrupted_run)
        done = subprocess.run([sys.executable, "-m", "nnlab.train", f"resume={interrupted_run}"],
                              cwd=interrupted_run.parent, capture_output=True, text=True, timeout=300,
                              preexec_fn=without_write_permission)
        one_line_refusal(done, f"{interrupted_run} is not writable")
        assert done.stderr.rstrip().endswith(f"make it writable (chmod -R u+w {interrupted_run})")
        assert files(interrupted_run) == before and sorted(interrupted_run.rglob("*")) == sorted(paths[1:])
    finally:
        for p, mode in modes.items():
            p.chmod(mode)


@pytest.mark.parametrize("damage", [lambda b: b[: len(b) // 2], lambda b: b"", lambda b: os.urandom(len(b))])
def test_an_unreadable_checkpoint_is_refused_naming_it_and_the_folder_is_unchanged(damage, interrupted_run):
    ckpt = interrupted_run / "checkpoints" / "last.ckpt"
    ckpt.write_bytes(damage(ckpt.read_bytes()))
    before = files(interrupted_run)
    with pytest.raises(ConfigError) as e:
        check_resume([f"resume={interrupted_run}"])
    assert str(e.value).startswith(f"{ckpt} is not a readable checkpoint") and "\n" not in str(e.value)
    assert files(interrupted_run) == before


def test_a_run_interrupted_while_testing_resumes_to_a_complete_record(make_cfg, tmp_path, monkeypatch):
    unbroken = train(make_cfg(*SPIRAL, f"run_dir={tmp_path / 'unbroken'}"))
    test = L.Trainer.test
    def interrupted(*a, **kw):
        raise KeyboardInterrupt
    monkeypatch.setattr(L.Trainer, "test", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(make_cfg(*SPIRAL))
    monkeypatch.setattr(L.Trainer, "test", test)
    run = tmp_path / "run"
    assert json.loads((run / "metrics.json").read_text())["status"] == "interrupted"
    resumed = train(make_cfg(*SPIRAL), ckpt_path=str(run / "checkpoints" / "last.ckpt"))
    assert resumed["status"] == "ok"
    assert {k: v for k, v in resumed.items() if "/" in k} == {k: v for k, v in unbroken.items() if "/" in k}
    assert json.loads((run / "metrics.json").read_text())["val/acc"] == unbroken["val/acc"]


# ---- one writer per run folder ----------------------------------------------------------------

HOLD = "import sys, time; from pathlib import Path; from nnlab.runs import hold\n" \
       "with hold(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(120)"


@pytest.fixture
def held(tmp_path):
    """A helper process holding a folder's lock, as a training run does: yields its PID."""
    procs = []
    def _hold(folder: Path) -> int:
        proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline() == "held\n"
        procs.append(proc)
        return proc.pid
    yield _hold
    for proc in procs:
        proc.kill()
        proc.wait()


def test_a_run_still_being_written_cannot_be_resumed_and_the_refusal_names_its_pid(interrupted_run, held):
    pid = held(interrupted_run)
    before = files(interrupted_run)
    with pytest.raises(FolderBusy, match=f"still being written by process {pid}"):
        check_resume([f"resume={interrupted_run}"])
    with pytest.raises(FolderBusy, match=f"being written by process {pid}"):
        with hold(interrupted_run):
            pass
    assert files(interrupted_run) == before


def test_two_sweeps_resuming_one_folder_share_its_jobs(tmp_path, held, cli):
    grid = ["--multirun", *SPIRAL, "seed=0,1", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    busy = tmp_path / "sweep" / dirname(",".join(sorted([*SPIRAL, "seed=0"])))
    busy.mkdir(parents=True)
    pid = held(busy)  # the other sweep is training seed=0
    done = cli("nnlab.train", *grid, cwd=tmp_path)
    assert f"being written by process {pid}" in done.stdout + done.stderr
    assert not (busy / "metrics.json").exists() and not (busy / "attempt-1").exists()
    mine = tmp_path / "sweep" / dirname(",".join(sorted([*SPIRAL, "seed=1"])))
    assert json.loads((mine / "metrics.json").read_text())["status"] == "ok"


def test_compare_names_a_half_written_metrics_file(tmp_path):
    from nnlab.compare import load_runs
    run = tmp_path / "sweep" / "model=mlp,seed=0"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("- model=mlp\n- seed=0\n")
    (run / ".hydra" / "config.yaml").write_text("optimizer:\n  lr: 0.1\n")
    (run / ".hydra" / "hydra.yaml").write_text("hydra:\n  runtime:\n    choices:\n      model: mlp\n      data: spiral\n")
    (run / "metrics.json").write_text('{"status": "ok", "val/a')
    with pytest.raises(MetricsError) as e:
        load_runs(tmp_path / "sweep", strict=True)  # make confirm's: it reruns what it reads
    assert str(e.value).startswith(f"{run / 'metrics.json'} is not usable") and "\n" not in str(e.value)
    assert load_runs(tmp_path / "sweep") == []  # make compare's: left out, with a note


def test_metrics_files_have_one_reader_that_names_a_half_written_one(tmp_path):
    from nnlab.runs import read_metrics, run_status, write_json
    assert read_metrics(tmp_path) is None and run_status(tmp_path) is None
    write_json(tmp_path / "metrics.json", {"status": "diverged", "val/acc": 0.5})
    assert read_metrics(tmp_path) == {"status": "diverged", "val/acc": 0.5} and run_status(tmp_path) == "diverged"
    for text in ('{"status": "ok", "val/a', "[1, 2]"):
        (tmp_path / "metrics.json").write_text(text)
        with pytest.raises(MetricsError) as e:
            read_metrics(tmp_path)
        assert str(e.value).startswith(f"{tmp_path / 'metrics.json'} is not usable") and "\n" not in str(e.value)
        assert run_status(tmp_path) == "?"  # unfinished: a sweep's resume trains it again
    package = Path(__file__).parents[1] / "src" / "nnlab"
    readers = [p.relative_to(package).as_posix() for p in package.rglob("*.py")
               if "metrics.json" in p.read_text() and "json.load" in p.read_text()]
    assert readers == ["runs.py"], f"read metrics.json with nnlab.runs.read_metrics, not in {readers}"


def test_a_sweep_resume_redoes_a_run_whose_metrics_file_was_cut_short(tmp_path):
    from nnlab.checkpoint import resumable
    run = tmp_path / "model=mlp,seed=0"
    (run / ".hydra").mkdir(parents=True)
    (run / "metrics.json").write_text('{"status": "ok", "val/a')
    assert resumable(run) == (None, None)  # not a finished run: a fresh start, the old file kept aside
    assert (run / "attempt-1" / "metrics.json").read_text() == '{"status": "ok", "val/a'
    assert not (run / "metrics.json").exists()


def test_an_mnist_file_altered_in_place_with_its_size_and_mtime_put_back_is_hashed_again(tiny_mnist):
    from nnlab.data.mnist_raw import MNISTError, prepare_raw
    raw = tiny_mnist / "MNIST" / "raw"
    prepare_raw(raw)  # verified, recorded in .verified
    labels = raw / "t10k-labels-idx1-ubyte"
    st, data = labels.stat(), bytearray(labels.read_bytes())
    data[-1] ^= 1
    with open(labels, "r+b") as f:  # in place: same inode, same size
        f.write(bytes(data))
    os.utime(labels, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (labels.stat().st_size, labels.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    with pytest.raises(MNISTError, match="t10k-labels-idx1-ubyte has MD5"):
        prepare_raw(raw)


def test_an_mnist_file_damaged_before_a_run_stops_it_in_one_line(tiny_mnist, tmp_path, cli, monkeypatch):
    monkeypatch.setattr(mnist_raw, "RAW_MD5", REAL_MD5)  # the real MD5s, which the tiny files do not have
    done = cli("nnlab.train", f"data.root={tiny_mnist}", "trainer.max_epochs=1", cwd=tmp_path)
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr[-2000:]  # Lightning's notes: stdout
    line = done.stderr
    assert line.startswith(f"nnlab: {tiny_mnist / 'MNIST' / 'raw'}") and "has MD5" in line and "make data" in line


def test_a_log_file_outside_the_run_folder_is_refused_before_it_is_opened(tmp_path, cli):
    """Hydra's logging opens a file handler's file (mode w: truncated) before any run starts."""
    victim = tmp_path / "victim.txt"
    victim.write_text("kept")
    done = cli("nnlab.train", *SPIRAL, f"hydra.job_logging.handlers.file.filename={victim}",
               "+hydra.job_logging.handlers.file.mode=w", cwd=tmp_path)
    one_line_refusal(done, f"hydra.job_logging.handlers.file.filename='{victim}' is not allowed")
    assert victim.read_text() == "kept" and not (tmp_path / "runs").exists()
