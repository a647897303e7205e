"""The command line fuzzed: a drawn value for a key of the composed config (numbers at the edges, wrong
types, unicode, newlines, nested dicts, interpolations) either runs or is refused in one line with exit
1 before any folder is made; never a traceback, never a file written outside runs/. The run itself is
cut to what decides that (the config check, building every part, the data in memory): training past
that is the other tests' business. A few hundred examples here; more in the slow tier."""
import os
import tempfile
from pathlib import Path

import lightning as L
import pytest
from conftest import in_process
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

import nnlab.train
from nnlab import CONF_DIR

BASE = ["data=spiral", "model=mlp", "scheduler=exponential"]


def keys() -> list[str]:
    """Every dotted key with a value in the spiral MLP's composed config, hydra's aside."""
    from hydra import compose, initialize_config_dir
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = OmegaConf.to_container(compose("train", overrides=BASE), resolve=False)

    def walk(prefix, node):
        for k, v in node.items():
            yield from walk(f"{prefix}{k}.", v) if isinstance(v, dict) else [f"{prefix}{k}"]
    return sorted(k for k in walk("", cfg) if not k.endswith("_target_"))


EDGES = [0, -1, 1, 2**31, 2**63, 10**30, -(10**30), 1e-300, 1e308, -1e308, 0.5, -0.0]
VALUES = st.one_of(
    st.sampled_from(EDGES).map(str), st.integers().map(str), st.floats().map(str),
    st.sampled_from(["inf", "-inf", "nan", "null", "true", "false", "''", "[]", "{}", "[1, 2]", "{a: {b: 1}}",
                     "${seed}", "${oc.env:HOME}", "${oc.create:{a: 1}}", "${nope}", "'${seed}'", "1e5", "0x10"]),
    st.text(max_size=12),  # unicode, newlines, quotes, brackets
    st.text(alphabet="0123456789１２３😀 \n'\"=,[]{}()$:", max_size=8))


def dry_run(cfg, *args):
    """What decides whether a run goes ahead: the check, every part built, the data in memory."""
    cfg = nnlab.train.check(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    data, _, _ = nnlab.train.build(cfg)
    data.setup("fit")
    return {"status": "ok", "seconds": 0.0}


def check(key: str, value: str, plus: bool) -> None:
    arg = f"{'+' if plus else ''}{key}={value}"
    with tempfile.TemporaryDirectory() as tmp:
        done = in_process("nnlab.train", *BASE, arg, cwd=Path(tmp))
        made = sorted(os.listdir(tmp))
    assert "Traceback" not in done.stderr, (arg, done.stderr[-3000:])
    if done.returncode == 0:
        assert made == ["runs"], (arg, made)  # its run folder, and nothing else
    else:
        assert done.returncode == 1 and done.stderr.count("\n") == 1 and done.stderr.startswith("nnlab: "), \
            (arg, done.stderr[-3000:])
        assert made == [], (arg, made)  # refused before any folder


@pytest.fixture(autouse=True)
def no_training(monkeypatch):
    monkeypatch.setattr(nnlab.train, "train", dry_run)


KEYS = keys()
# derandomize: the same examples every run, so the suite stays a verdict on the code (run it with more
# examples, or another seed, to look for new cases); database=None: nothing written beside the tests
FUZZ = {"deadline": None, "derandomize": True, "database": None,
        "suppress_health_check": [HealthCheck.function_scoped_fixture]}


@settings(max_examples=60, **FUZZ)  # ~0.2 s an example; the slow tier draws 1,500
@given(key=st.sampled_from(KEYS), value=VALUES, plus=st.booleans())
def test_a_drawn_value_for_a_key_runs_or_is_one_line_before_any_folder(key, value, plus):
    check(key, value, plus)


@pytest.mark.slow
@settings(max_examples=1500, **FUZZ)
@given(key=st.one_of(st.sampled_from(KEYS), st.text(min_size=1, max_size=10)), value=VALUES, plus=st.booleans())
def test_many_drawn_keys_and_values_run_or_are_one_line_before_any_folder(key, value, plus):
    check(key, value, plus)
