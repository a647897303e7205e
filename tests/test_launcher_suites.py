"""Hydra's own launcher test suites, run against hydra/launcher=population as Hydra's launcher plugins
run them against theirs: for an app that is not an nnlab run (no model, data or trainer), the
population launcher must be Hydra's basic launcher, job for job."""
import pytest
from hydra.core.config_store import ConfigStore
from hydra.test_utils.launcher_common_tests import (
    BatchedSweeperTestSuite,
    IntegrationTestSuite,
    LauncherTestSuite,
)
from hydra.version import VersionBase, __compat_version__

LAUNCHER = {"_target_": "hydra_plugins.nnlab_population.PopulationLauncher"}
# The suites' apps find the launcher by its group option (in process) or in their config (subprocess).
ConfigStore.instance().store(group="hydra/launcher", name="population_suite", node=LAUNCHER, provider="nnlab")


@pytest.fixture(autouse=True)
def hydras_compat_version_base():
    """The suites' apps give no version_base (Hydra 1.1's defaults: a job changes into its folder), as in
    a fresh process; nnlab's app, run earlier in this test process, left Hydra's base at 1.3."""
    saved = VersionBase.instance().getbase()
    VersionBase.instance().setbase(__compat_version__)
    yield
    VersionBase.instance().version_base = saved


@pytest.mark.parametrize("launcher_name, overrides", [("population_suite", [])])
class TestPopulationLauncher(LauncherTestSuite):
    pass


@pytest.mark.parametrize("launcher_name, overrides", [("population_suite", ["hydra.sweeper.max_batch_size=2"])])
class TestPopulationLauncherBatched(BatchedSweeperTestSuite):
    pass


@pytest.mark.slow
@pytest.mark.parametrize("task_launcher_cfg, extra_flags", [({"hydra": {"launcher": LAUNCHER}}, ["-m"])])
class TestPopulationLauncherIntegration(IntegrationTestSuite):
    pass


def test_an_app_sweeping_member_numbers_without_a_trainer_runs_as_the_basic_launcher_runs_it(hydra_sweep_runner, tmp_path, capsys):
    """seed and optimizer.lr are numbers a population's members differ in; an app without nnlab's
    model, data and trainer sweeps them through the population launcher job by job, each job its task."""
    (tmp_path / "app.yaml").write_text("seed: 0\noptimizer:\n  lr: 0.1\n")
    sweep = hydra_sweep_runner(calling_file=str(tmp_path / "app.py"), calling_module=None,
                               task_function=lambda cfg: (cfg.seed, cfg.optimizer.lr), config_path=".",
                               config_name="app", overrides=["hydra/launcher=population_suite", "seed=0,1",
                                                             "optimizer.lr=0.1,0.2"], temp_dir=str(tmp_path / "out"))
    with sweep:
        (batch,) = sweep.returns
        assert [r.return_value for r in batch] == [(0, 0.1), (0, 0.2), (1, 0.1), (1, 0.2)]
        assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.is_dir()) == ["0", "1", "2", "3"]
    assert "none of the 4 jobs trains in a population (the population trains nnlab runs only" in capsys.readouterr().out
