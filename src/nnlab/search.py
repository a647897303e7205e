"""Search instead of a grid: nnlab's Hydra sweeper on Optuna. A sweep file writes the search space in
Hydra's own sweep syntax under hydra.sweeper.params, with the study's settings beside it
(conf/hydra/sweeper/optuna.yaml); each trial is a normal run folder in the sweep folder, started by
Hydra's configured launcher (basic, joblib for JOBS=N, slurm), and a hopeless one is pruned after
an epoch.

    make sweep SWEEP=spiral_search [JOBS=2] [RESUME=runs/sweeps/<time>]
    make compare DIR=runs/sweeps/<time>        make dashboard DIR=runs/sweeps/<time>

Leaves in the sweep folder, beside the trials' run folders: the Optuna study (study.db, sqlite; or
study.journal, Optuna's journal file, where several processes write at once), best.yaml (the best
trial and the command that reruns it) and multirun.yaml; make compare adds study.md and
optimization_history.png. Results of spiral_search on this machine: experiments/README.md.
"""
import argparse
import math
import warnings
from pathlib import Path

import optuna
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution
from optuna.trial import TrialState

from nnlab import cores, progress
from nnlab.compat import hydra_basic
from nnlab.config import ConfigError
from nnlab.errors import NnlabError, command
from nnlab.runs import DIVERGED, FAILED, OK, PRUNED, hold_sweep, read_metrics, sweep_folder
from nnlab.study import (
    FILES,
    METRICS,
    STUDY,
    grid_of,
    make_pruner,
    make_sampler,
    open_storage,
    open_study,
    search_space,
    storage_file,
    study_settings,
)

FINISH = "finishes"  # user attr of a trial that reruns a pruned leader to the end: never pruned
REPORT = ("study.md", "optimization_history.png")  # make compare's, in a study's folder


class Search:
    """A study in the sweep folder, run to n_trials through Hydra's launcher a batch at a time."""

    def __init__(self, settings: dict, *, hydra_context, task_function, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins
        self.s, self.config = OmegaConf.create(settings), config
        study_settings(self.s, config)
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)
        self.direction = self.s.direction or METRICS[self.s.metric]
        # joblib's n_jobs=-1 means every core, -2 all but one...
        self.batch = self.s.batch if self.s.batch > 0 else max(1, cores() + 1 + self.s.batch)

    def run(self, arguments: list[str]) -> list:
        fixed, space = search_space(self.s.params, arguments)
        if not space:
            raise ConfigError("nothing to search: give hydra.sweeper.params in the sweep file, or a key on the "
                              "command line, e.g. optimizer.lr='tag(log, interval(0.01, 10))'")
        make_sampler(self.s.sampler, self.s.seed, space)  # refused here, before the folder exists
        folder = Path(self.config.hydra.sweep.dir)  # resolving it claims the folder: after every refusal
        folder.mkdir(parents=True, exist_ok=True)
        with hold_sweep(folder), progress.shown(folder, self.s.n_trials):
            return self.study(folder, fixed, space)

    def study(self, folder: Path, fixed: list[str], space: dict[str, BaseDistribution]) -> list:
        """The study in `folder`, run on to n_trials, a batch of trials at a time."""
        OmegaConf.save(self.config, folder / "multirun.yaml")
        # Several processes write the study when the launcher is not Hydra's in-process basic one.
        in_process = hydra_basic("launcher", type(self.launcher))
        path = storage_file(folder) or folder / FILES[0 if in_process else 1]
        storage = open_storage(path)
        # A resumed study's sampler is seeded past the trials it holds: seeded as at the start, it would
        # ask the same first points again. So a resumed study is reproducible, but not the uninterrupted one.
        names = [s.study_name for s in storage.get_all_studies()]
        resumed = len(storage.get_all_trials(storage.get_study_id_from_name(STUDY))) if STUDY in names else 0
        study = optuna.create_study(storage=storage, study_name=STUDY, sampler=make_sampler(
                                        self.s.sampler, self.s.seed + resumed, space),
                                    pruner=optuna.pruners.NopPruner(),  # pruning is the trials' own business
                                    direction=self.direction, load_if_exists=True)
        study.set_user_attr("metric", self.s.metric)
        with warnings.catch_warnings():  # Optuna marks metric names experimental; the dashboard shows them
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([self.s.metric])
        study.set_user_attr("fixed", fixed)
        todo, target = self.unfinished(study)
        points = math.prod(map(len, grid_of(space).values())) if self.s.sampler == "grid" else math.inf

        def more() -> bool:  # enqueued trials are already in study.trials, as WAITING
            if study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
                return True
            asked = {tuple(sorted(t.params.items())) for t in study.get_trials(deepcopy=False)}
            return len(study.trials) < target and len(asked) < points  # a grid ends when every point is asked
        done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
        again = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
        print(f"study: {path}  ({done} of {self.s.n_trials} trials done{f', {again} failed asked again' if again else ''}"
              f"; {self.s.sampler} sampler, seed {self.s.seed}; pruner {self.s.pruner})")
        if points < self.s.n_trials:
            print(f"study: the grid has {points} points, fewer than n_trials={self.s.n_trials}: it ends when "
                  "each is tried")
        returns = []
        while todo or more():
            while len(todo) < self.batch and more():
                trial = study.ask(space)
                todo.append((trial.number, trial.params))
            batch, todo = todo[:self.batch], todo[self.batch:]
            returns.append(self.launch(study, batch, fixed))
            if not todo and not more() and (leader := self.leader(study)):
                print(f"study: no trial finished; trial {leader.number}, the best at the last epoch any trial "
                      f"reached (epoch {max(leader.intermediate_values)}), runs again to the end, unpruned")
                study.enqueue_trial(leader.params, user_attrs={FINISH: leader.number})
        self.best(study, folder)
        return returns

    def unfinished(self, study: optuna.Study) -> tuple[list[tuple[int, dict]], int]:
        """A resumed study's trials to run again first, and the number of trials it runs to. A sweep
        stopped mid-trial left it RUNNING: run again, it continues from its last.ckpt. A failed trial
        (a crash, a lost process) is no result: run again, its parameters are asked first, as a new
        trial (in the same run folder, the failed attempt kept in attempt-<n>/), and it no longer
        counts towards n_trials. Failures of this run count: a trial that always fails fails once a
        RESUME, never in a loop."""
        todo = [(t.number, t.params) for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
        failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
        retried = {t.user_attrs.get("retry_of") for t in study.trials}
        for t in failed:
            if t.number not in retried:
                study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
        return todo, self.s.n_trials + len(failed)

    def leader(self, study: optuna.Study) -> optuna.trial.FrozenTrial | None:
        """In a study that has no finished trial and is not running one on to the end already: the
        pruned trial that reached the furthest epoch, the best there. Without it a small study with a
        bootstrap (whose first trials at a rung stop there) could end with no setting to name."""
        trials = study.get_trials(deepcopy=False)
        if any(t.state == TrialState.COMPLETE or FINISH in t.user_attrs for t in trials):
            return None
        pruned = [t for t in trials if t.state == TrialState.PRUNED and t.intermediate_values]
        sign = 1 if self.direction == "maximize" else -1
        return max(pruned, default=None, key=lambda t: (max(t.intermediate_values),
                                                        sign * t.intermediate_values[max(t.intermediate_values)]))

    def launch(self, study: optuna.Study, batch: list[tuple[int, dict]], fixed: list[str]) -> list:
        """Run the trials of a batch at once; a job's number is its trial's number (the job finds
        its trial by it to report to), so only consecutive trials share one launch."""
        results, start = [], 0
        for i in range(1, len(batch) + 1):
            if i == len(batch) or batch[i][0] != batch[i - 1][0] + 1:
                runs = batch[start:i]
                results += self.launcher.launch([fixed + [f"{k}={v}" for k, v in p.items()] for _, p in runs],
                                                initial_job_idx=runs[0][0])
                start = i
        for (number, _params), ret in zip(batch, results):
            run = Path(ret.hydra_cfg.hydra.runtime.output_dir)
            metrics = read_metrics(run, unusable={}) or {}  # cut short or unusable: the trial has no result
            status, value = metrics.get("status", FAILED), metrics.get(self.s.metric)
            if status == PRUNED:
                study.tell(number, state=TrialState.PRUNED)
            elif status in (OK, DIVERGED) and value is not None and math.isfinite(value):
                study.tell(number, value)
            else:
                study.tell(number, state=TrialState.FAIL)
            shown = f"{self.s.metric} {value:.4f}" if isinstance(value, float) else ""
            epoch = f" at epoch {metrics.get('pruned_epoch')}" if status == PRUNED else ""
            print(f"trial {number}: {status}{epoch} {shown}  {run.name}")
        return results

    def best(self, study: optuna.Study, folder: Path) -> None:
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not done:
            print("no trial finished: no best setting")
            return
        best = study.best_trial
        overrides = study.user_attrs["fixed"] + [f"{k}={v}" for k, v in best.params.items()]
        command = f'make train ARGS="{" ".join(overrides)}"'
        OmegaConf.save(OmegaConf.create({"trial": best.number, self.s.metric: best.value, "overrides": overrides,
                                         "command": command}), folder / "best.yaml")
        print(f"best: trial {best.number}, {self.s.metric} {best.value:.4f} ({len(done)} finished)\n"
              f"rerun it with: {command}\n(also in {folder / 'best.yaml'})")


def job_trial(cfg: DictConfig) -> optuna.Trial:
    """In a job of a study: the trial this job runs (its job number is the trial's number), loaded
    with the study's pruner, so that its reports decide here whether it stops. Optuna's Trial is
    made from a storage id outside study.optimize/ask, which its API allows but does not advertise."""
    from hydra.core.hydra_config import HydraConfig
    hc = HydraConfig.get()
    storage = open_storage(storage_file(Path(hc.sweep.dir)))
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(STUDY), hc.job.num)
    finishes = FINISH in storage.get_trial(trial_id).user_attrs  # a leader run on to the end (Search.leader)
    pruner = make_pruner("none" if finishes else hc.sweeper.pruner, cfg.trainer.max_epochs, hc.sweeper.bootstrap)
    study = optuna.load_study(study_name=STUDY, storage=storage, sampler=optuna.samplers.RandomSampler(), pruner=pruner)
    trial = optuna.Trial(study, trial_id)
    trial.set_user_attr("run_dir", str(cfg.run_dir))
    return trial


def report(folder: Path) -> str:
    """make compare on a study's sweep folder: its trials with their statuses, how much each searched
    parameter mattered (Optuna's get_param_importances over the finished trials) and the optimisation
    history, as study.md and optimization_history.png in the folder; returns the markdown."""
    study = open_study(folder)
    metric, trials = study.user_attrs.get("metric", "value"), study.get_trials(deepcopy=False)
    states = [t.state.name.lower() for t in trials]
    counts = ", ".join(f"{states.count(s)} {s}" for s in sorted(set(states)))
    lines = [f"## Study: {len(trials)} trials ({counts}), {study.direction.name.lower()} {metric}", "",
             f"| trial | state | {metric} | epochs reported | parameters |", "|---|---|---|---|---|"]
    for t in trials:
        value = f"{t.value:.4f}" if t.value is not None else "–"
        params = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in t.params.items())
        lines.append(f"| {t.number} | {t.state.name.lower()} | {value} | {max(t.intermediate_values, default='–')} "
                     f"| {params} |")
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    if len(done) >= 2 and len({tuple(t.params.items()) for t in done}) >= 2:
        importances = optuna.importance.get_param_importances(study)
        lines += ["", f"Importance of each searched parameter for {metric} (Optuna's get_param_importances, "
                  f"over the {len(done)} finished trials; they sum to 1):", "",
                  "| parameter | importance |", "|---|---|"]
        lines += [f"| {k} | {v:.3f} |" for k, v in importances.items()]
    else:
        lines += ["", "Parameter importances need two finished trials with different parameters."]
    (folder / REPORT[1]).unlink(missing_ok=True)  # an earlier report's: what is there afterwards was drawn now
    if done:
        lines += ["", f"Best: trial {study.best_trial.number}, {metric} {study.best_value:.4f}; rerun: "
                  "see best.yaml", "", f"![optimisation history]({REPORT[1]})"]
        with warnings.catch_warnings():  # Optuna marks its matplotlib plots experimental
            warnings.simplefilter("ignore")
            ax = optuna.visualization.matplotlib.plot_optimization_history(study, target_name=metric)
        ax.figure.set_size_inches(8, 4.5)
        ax.figure.tight_layout()
        ax.figure.savefig(folder / REPORT[1], dpi=80)
        import matplotlib.pyplot as plt
        plt.close(ax.figure)
    text = "\n".join(lines) + "\n"
    (folder / REPORT[0]).write_text(f"# {folder}\n\n{text}")
    return text


def dashboard(folder: Path, port: int) -> None:
    """optuna-dashboard for the study in `folder`, on 127.0.0.1 only (it has no login: anyone who
    can reach the port can read and annotate the study)."""
    from optuna_dashboard import run_server
    print(f"dashboard of {folder}: http://127.0.0.1:{port}/dashboard  (Ctrl-C stops it)", flush=True)
    run_server(open_storage(storage_file(folder)), host="127.0.0.1", port=port)  # open_study has read it


def main(argv: list[str]) -> None:
    """make dashboard [DIR=runs/sweeps/<time>] [PORT=8080]"""
    parser = argparse.ArgumentParser(prog="python -m nnlab.search", description=dashboard.__doc__)
    parser.add_argument("folder", nargs="?", type=Path, help="a study's sweep folder (default: the latest sweep)")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    if not 1024 <= args.port <= 65535:
        raise NnlabError(f"--port {args.port}: give a port in [1024, 65535] (PORT=8080 is the default)")
    folder = sweep_folder(args.folder)
    open_study(folder)  # there is one, and it reads: refused here in one line, not in the server
    dashboard(folder, args.port)


if __name__ == "__main__":
    command(main)
