"""Every command the docs show does what its text says: a changed default breaks this test, not a user.

Commands are found, not listed: every line of a code block (fenced or indented) in README.md, docs/*.md
and experiments/README.md that starts with `make `, `python -m nnlab.`, `.venv/bin/python` or `bash `,
every inline `make ...` / `python -m nnlab...`, and the commands the modules' docstrings and the yaml
files' opening comments show. Each distinct command is checked once, by what it is:
  make ...           `make -n` accepts it; what it runs is checked as below
  nnlab.train        Hydra composes every configuration it would run and nnlab's config check and build
                     pass; a sweep's job count is the count its comment states ("36 runs", "3 jobs");
                     a spiral run really runs, shrunk to a few steps, and a spiral study runs its
                     first 12 trials, shrunk, to a best.yaml
  python -c / file   a one-liner really runs; a script or shell file named exists and parses
Tables that document keys (a header cell naming "key") are checked too: every `key=value` shown is
the value the composed config holds. Each failure names the doc line: README.md:57.
"""
import ast
import contextlib
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import conftest
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import get_class
from omegaconf import OmegaConf

import nnlab.train
from nnlab import CONF_DIR
from nnlab.config import ConfigError, check
from nnlab.sweep import check_grid, jobs

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "experiments" / "README.md"]
COMMAND = re.compile(r"make |python -m nnlab\.|\.venv/bin/python |bash ")
INLINE = re.compile(r"`((?:make [a-z]|python -m nnlab)[^`]*)`")
COUNT = re.compile(r"(\d[\d,]*) (?:runs|jobs|trials)\b")
PLACEHOLDER = re.compile(r"<[^>]*>|\.\.\.")


@dataclass
class Shown:
    where: str      # README.md:57
    command: str
    comment: str    # what the line says it does, after its `#`
    block: bool     # in a code block (a full example) or inline in the text


def shown_commands() -> list[Shown]:
    shown = []
    for doc in DOCS:
        lines, fenced, n = doc.read_text().splitlines(), False, 0
        while n < len(lines):
            line, where = lines[n], f"{doc.relative_to(ROOT)}:{n + 1}"
            n += 1
            if line.lstrip().startswith("```"):
                fenced = not fenced
                continue
            if fenced or line.startswith("    "):
                while line.rstrip().endswith("\\") and n < len(lines):  # a command continued on the next line
                    line, n = line.rstrip()[:-1] + " " + lines[n].strip(), n + 1
                command, _, comment = line.strip().partition("  #")
                if COMMAND.match(command):
                    shown.append(Shown(where, command.strip(), comment.strip(), block=True))
            else:
                shown += [Shown(where, m, "", block=False) for m in INLINE.findall(line)]
    return shown + headers()


def headers() -> list[Shown]:
    """The commands entry points and config files open with: the indented lines of each module's
    docstring, and each yaml's comment lines (`# make train ARGS="experiment=spiral_mlp"`). Optional
    parts and remarks in brackets (`[JOBS=2]`, `(the default)`) are left out; `a && b` is two commands."""
    lines = []  # (path, line number, text)
    for path in sorted((ROOT / "src" / "nnlab").rglob("*.py")):
        text = path.read_text().splitlines()
        first = ast.parse(path.read_text()).body[:1]
        if first and isinstance(first[0], ast.Expr) and isinstance(first[0].value, ast.Constant):
            span = range(first[0].lineno - 1, first[0].end_lineno)
            lines += [(path, n + 1, text[n]) for n in span if text[n].startswith("    ")]
    yamls = [p for p in sorted((ROOT / "conf").rglob("*.yaml")) if "experiment" not in p.parts]
    for path in [*yamls, *sorted((ROOT / "experiments").glob("*.yaml"))]:
        lines += [(path, n, line.lstrip("# ")) for n, line in enumerate(path.read_text().splitlines(), 1)
                  if line.startswith("#")]
    found = []
    for path, n, line in lines:
        line, _, comment = line.strip().partition("  #")
        for command in re.sub(r" (\[[^]]*\]|\([^)]*\))", "", line).split("&&"):
            command = command.strip().split("   ")[0]  # what follows a wide gap is a remark
            if COMMAND.match(command):
                found.append(Shown(f"{path.relative_to(ROOT)}:{n}", command, comment.strip(), block=False))
    return found


def unique(shown: list[Shown]) -> list[Shown]:
    """Each command once (where it is first shown in full), or once per count its lines state."""
    first = {}
    for s in shown:
        key = (s.command, tuple(COUNT.findall(s.comment)[:1]))
        if key not in first or (s.block and not first[key].block):
            first[key] = s
    return list(first.values())


SHOWN = unique(shown_commands())


def module_argv(shown: Shown, tmp_path: Path) -> list[str]:
    """`make -n` of the command; the argv of the nnlab module it runs (or [] for other targets). A
    RESUME=<folder> to be filled in gets a folder that is both a sweep's and a run's (make checks that
    it is one), so the placeholder stays in what it runs."""
    (tmp_path / "FILL_IN" / ".hydra").mkdir(parents=True, exist_ok=True)
    (tmp_path / "FILL_IN" / "multirun.yaml").touch()
    (tmp_path / "FILL_IN" / ".hydra" / "config.yaml").touch()
    argv = [re.sub(r"^RESUME=.*FILL_IN.*", f"RESUME={tmp_path / 'FILL_IN'}", a)
            for a in shlex.split(PLACEHOLDER.sub("FILL_IN", shown.command))]
    done = conftest.make_dry_run(*argv[1:])
    assert done.returncode == 0, f"{shown.where}: `{shown.command}`: make -n fails: {done.stderr.strip()}"
    for line in done.stdout.replace("\\\n", " ").splitlines():
        if " -m nnlab." in line:
            return shlex.split(line)[1:]
    return []


def compose_job(overrides: list[str], tmp_path: Path):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=[*overrides, f"run_dir={tmp_path}"], return_hydra_config=True)


def checked(shown: Shown, overrides: list[str], tmp_path: Path):
    """The composed config of one job, through nnlab's config check and build (no data is read)."""
    # a job sent to SLURM runs its check on the cluster's node, whose devices are not this machine's
    remote = "hydra/launcher=slurm" in overrides
    try:
        cfg = compose_job(overrides, tmp_path)
        with_hydra = cfg
        cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
        with mock.patch.object(nnlab.config, "check_devices") if remote else contextlib.nullcontext():
            check(cfg)
            nnlab.train.build(cfg)
    except Exception as e:  # ConfigError, or Hydra's own composition errors
        pytest.fail(f"{shown.where}: `{shown.command}`: the job {' '.join(overrides)} is refused: {e}")
    return with_hydra, cfg


def study(base) -> bool:
    """Whether a composed sweep's sweeper runs a study (nnlab.search) rather than a grid."""
    return getattr(get_class(base.hydra.sweeper._target_), "study", False)


def pbt(base) -> bool:
    """Whether a composed sweep's sweeper is population-based training (nnlab.pbt)."""
    return getattr(get_class(base.hydra.sweeper._target_), "pbt", False)


def sweep_jobs(shown: Shown, overrides: list[str], tmp_path: Path) -> list[list[str]]:
    parsed = OverridesParser.create().parse_overrides(overrides)
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    base = compose_job(fixed, tmp_path)
    params = dict(base.hydra.sweeper.get("params") or {})
    if pbt(base):  # its members: points of its space
        from nnlab.pbt import pbt_space
        fixed, space = pbt_space(base.hydra.sweeper, overrides)
        return [fixed + [f"{k}={d.low}" for k, d in space.items()]] * base.hydra.sweeper.members
    if study(base):  # a study: n_trials jobs, points of its space
        from nnlab.search import search_space
        fixed, space = search_space(params, overrides)
        point = [f"{k}={d.choices[0] if hasattr(d, 'choices') else d.low}" for k, d in space.items()]
        return [fixed + point] * base.hydra.sweeper.n_trials
    try:
        check_grid(base.hydra.runtime.choices.get("sweep"), base.hydra.runtime.choices.get("experiment"), params)
    except ConfigError as e:
        pytest.fail(f"{shown.where}: `{shown.command}`: refused: {e}")
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):  # its loader lists a group's options: glob()
        return jobs(params, overrides)


@pytest.mark.slow
@pytest.mark.parametrize("shown", SHOWN, ids=[s.where for s in SHOWN])
def test_shown_command_does_what_its_line_says(shown: Shown, tmp_path, monkeypatch):
    command = shown.command
    if command.startswith("make "):
        argv = module_argv(shown, tmp_path)
    elif command.startswith("python -m nnlab"):
        argv = shlex.split(command)[1:]
    elif " -c " in command:  # a one-liner: run it as shown
        monkeypatch.chdir(tmp_path)
        argv = shlex.split(command)
        done = subprocess.run([sys.executable, *argv[1:]], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{shown.where}: `{command}` fails: {done.stderr[-2000:]}"
        return
    else:  # a script or shell file: it exists and parses
        path = ROOT / shlex.split(command)[1]
        assert path.is_file(), f"{shown.where}: `{command}`: no such file {path.relative_to(ROOT)}"
        shell = path.suffix == ".sh" or command.startswith("bash ")
        parse = ["bash", "-n", str(path)] if shell else [sys.executable, "-m", "py_compile", str(path)]
        assert subprocess.run(parse, capture_output=True).returncode == 0, f"{shown.where}: {path} does not parse"
        return
    if not argv or argv[:2] != ["-m", "nnlab.train"]:
        return  # compare, evaluate, data, bench, tensorboard, test: make -n was the check
    overrides = argv[2:]
    multirun = overrides[:1] == ["--multirun"]
    overrides = overrides[1:] if multirun else overrides
    if any(PLACEHOLDER.search(o) or "FILL_IN" in o for o in overrides):
        return  # a run or sweep folder to be filled in (RESUME=<time>): make -n was the check
    if multirun:
        all_jobs = sweep_jobs(shown, overrides, tmp_path)
        stated = COUNT.search(shown.comment) or COUNT.search(shown.comment.replace("exactly ", ""))
        if shown.block:
            assert stated, f"{shown.where}: `{command}`: say how many runs it launches in its comment ({len(all_jobs)})"
            assert int(stated.group(1).replace(",", "")) == len(all_jobs), \
                f"{shown.where}: `{command}`: the comment says {stated.group(0)}, it launches {len(all_jobs)}"
        groups = {}  # one job per combination of group choices (model=..., data=...): first and last
        for job in all_jobs:
            key = tuple(o for o in job if "=" in o and "." not in o.split("=")[0])
            groups.setdefault(key, []).append(job)
        for group in groups.values():
            for job in {tuple(group[0]), tuple(group[-1])}:
                checked(shown, list(job), tmp_path)
        base = compose_job([o for o in overrides if "," not in o and "(" not in o], tmp_path)
        if (study(base) or pbt(base)) and base.hydra.runtime.choices.get("data") == "spiral":  # shrunk, to a best.yaml
            folder = tmp_path / "study"
            # a study's first 12 trials show it ends; PBT's members for 3 epochs, exploiting after each of 2
            shrink = [f"hydra.sweeper.n_trials={min(12, base.hydra.sweeper.n_trials)}"] if study(base) else \
                ["trainer.max_epochs=3", "hydra.sweeper.interval=2"]
            done = conftest.in_process("nnlab.train", "--multirun", *overrides, "data.steps_per_epoch=2", *shrink,
                                       f"hydra.sweep.dir={folder}", cwd=tmp_path)
            assert done.returncode == 0, f"{shown.where}: `{command}` fails: {done.stderr[-2000:]}"
            assert (folder / "best.yaml").is_file(), f"{shown.where}: `{command}` ends with no best.yaml"
        return
    with_hydra, cfg = checked(shown, overrides, tmp_path)
    cheap = (with_hydra.hydra.runtime.choices.get("data") == "spiral" and cfg.trainer.get("devices") == 1
             and "trainer=ddp" not in overrides)
    if cheap:  # really run it, a few steps
        monkeypatch.chdir(tmp_path)
        metrics = nnlab.run([*overrides, "data.steps_per_epoch=2", "trainer.max_epochs=1"])
        assert metrics["status"] == "ok", f"{shown.where}: `{command}` ends {metrics['status']}: {metrics.get('error')}"


KEY_VALUE = re.compile(r"`([a-z_0-9]+(?:\.[a-z_0-9]+)*)=([^`<>\s]+)`")


def documented_values() -> list[tuple[str, str, str]]:
    """(doc line, key, value) of every `key=value` in a table whose header names "key"."""
    found = []
    for doc in DOCS:
        table = False
        for n, line in enumerate(doc.read_text().splitlines(), 1):
            if not line.startswith("|"):
                table = False
                continue
            if not table and "key" in line.split("|")[1]:
                table = True
                continue
            if table:
                found += [(f"{doc.relative_to(ROOT)}:{n}", k, v) for k, v in KEY_VALUE.findall(line)]
    return found


VALUES = documented_values()


@pytest.mark.parametrize("where,key,value", VALUES, ids=[f"{w} {k}" for w, k, _ in VALUES])
def test_a_value_shown_in_a_settings_table_is_the_configs(where, key, value, tmp_path):
    """Read from the default config, or from the first option of the key's group that has the key
    (`model.hidden=100` lives in conf/model/mlp.yaml)."""
    group = key.split(".")[0]
    options = [[]] + [[f"{group}={p.stem}"] for p in sorted((CONF_DIR / group).glob("*.yaml"))] \
        if (CONF_DIR / group).is_dir() else [[]]
    for option in options:
        cfg = compose_job(option, tmp_path)
        actual = OmegaConf.select(cfg, key, default="<absent>")
        if actual != "<absent>":
            shown = OmegaConf.create(f"v: {value}").v  # read as YAML, as Hydra reads it: null is None
            assert shown == actual, f"{where}: the docs say {key}={value}, the config gives {actual}"
            return
    pytest.fail(f"{where}: {key} is in no config")


TESTED_IN = re.compile(r"`(test_\w+\.py)::(test_\w+\*?)`")  # test_x.py::test_name, or test_x.py::test_prefix_*


def test_every_test_the_docs_name_exists():
    named = [(doc, *m) for doc in DOCS for m in TESTED_IN.findall(doc.read_text())]
    assert named, "the docs name no test"
    for doc, file, name in named:
        source = ROOT / "tests" / file
        found = re.search(rf"^def {name.rstrip('*')}{'' if name.endswith('*') else '[(]'}", source.read_text(), re.M) \
            if source.exists() else None
        assert found, f"{doc.relative_to(ROOT)} names {file}::{name}, which no test is"


def test_a_newcomer_reads_the_readme_in_five_minutes_in_plain_sentences():
    """At 250 words a minute, commands and tables included: 1,250 words. Its prose in sentences of at
    most 40 words (headings, code, tables and list items aside). Details belong in docs/."""
    text = (ROOT / "README.md").read_text()
    words = len(text.split())
    assert words <= 1250, f"README.md is {words} words, over five minutes' reading: move details to docs/*.md"
    prose = " ".join(line for line in text.splitlines()
                     if line.strip() and not line.startswith(("    ", "|", "#", "```")))
    long = [s for s in re.split(r"(?<=[.!?])\s+", prose) if len(s.split()) > 40]
    assert not long, f"README.md has sentences over 40 words; split them: {long}"


def test_the_docs_show_commands_and_the_extraction_finds_them():
    assert len(SHOWN) > 20
    where = {s.command: s.where for s in SHOWN}
    assert 'make sweep ARGS="experiment=spiral_mlp seed=0,1,2"' in where
    assert "make compare" in where and len(VALUES) > 10


def test_the_layout_names_every_module():
    layout = (ROOT / "README.md").read_text().split("## Layout", 1)[1]
    modules = [p for p in (ROOT / "src" / "nnlab").rglob("*.py") if p.stem not in ("__init__", "__main__")]
    missing = [str(p.relative_to(ROOT)) for p in modules if p.name not in layout and f"{p.parent.name}/" not in layout]
    assert not missing, f"README.md's Layout does not name {', '.join(missing)}"


def test_every_module_says_first_what_it_is_for_in_one_plain_sentence():
    """Its docstring opens with one sentence of at most 25 words; the details come after it."""
    long = {}
    for path in sorted([*(ROOT / "src").rglob("*.py")]):
        doc = ast.get_docstring(ast.parse(path.read_text()))
        first = re.split(r"(?<=[.!?])\s", (doc or "").replace("\n", " "), maxsplit=1)[0]
        if not doc or len(first.split()) > 25:
            long[str(path.relative_to(ROOT))] = first
    assert not long, f"open these modules' docstrings with one plain sentence of what they are for: {long}"
