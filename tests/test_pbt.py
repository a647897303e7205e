"""Population-based training (nnlab/pbt.py) through the command, shrunk: the exploit-and-explore step
(weights, optimizer and schedule copied, numbers perturbed), lineage, the winner's schedule, the same
numbers from the same sweep, a stop and resume, and the refusals."""
import json
import signal
from pathlib import Path

import pytest
import torch
from conftest import in_process, one_line_refusal
from omegaconf import OmegaConf

from nnlab import pbt

# spiral_pbt shrunk: 4 members of 4 epochs of 5 full-batch steps; after epochs 1, 2 and 3 the worst
# member (the bottom quarter) copies the best (the top quarter)
TINY = ["--multirun", "sweep=spiral_pbt", "hydra/launcher=population", "hydra.sweeper.members=4", "data.steps_per_epoch=5", "trainer.max_epochs=4", "log_interval=5"]


def sweep(folder: Path, *extra: str):
    done = in_process("nnlab.train", *TINY, *extra, f"hydra.sweep.dir={folder}", cwd=folder.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    return {run.name: json.loads((run / "metrics.json").read_text()) for run in sorted(folder.glob("*/"))
            if (run / "metrics.json").exists()}


def test_the_worst_members_copy_the_best_and_record_their_lineage(tmp_path, monkeypatch, scalars):
    copied = []
    copy_member = pbt.copy_member

    def checked(source, m, stack):  # right after the copy: the source's weights and state, none shared
        copy_member(source, m, stack)
        assert all(torch.equal(leaf[m.slot], leaf[source.slot]) for leaf in stack.leaves.values())
        assert m.scheduler.state_dict() == source.scheduler.state_dict()
        copied.append((source.job.idx, m.job.idx, source.callback_metrics["val/acc"] >= m.callback_metrics["val/acc"]))
    monkeypatch.setattr(pbt, "copy_member", checked)
    members = sweep(tmp_path / "pbt")
    assert len(members) == 4 and {m["status"] for m in members.values()} == {"ok"}
    assert len(copied) == 3 and all(better for _, _, better in copied)  # one a step, after epochs 1, 2, 3
    lineage = {m["pbt"]["member"]: m["pbt"]["lineage"] for m in members.values()}
    assert sorted((e["copied"], idx) for idx, entries in lineage.items() for e in entries) == \
        sorted((s, t) for s, t, _ in copied)
    for name, m in members.items():
        for entry in m["pbt"]["lineage"]:
            assert entry["step"] == 5 * entry["epoch"] and 0.3 <= entry["numbers"]["optimizer.lr"] <= 10.0
        if m["pbt"]["lineage"]:  # it trained on with the numbers it switched to last
            assert m["pbt"]["lineage"][-1]["numbers"] == m["pbt"]["numbers"]
        points = scalars(tmp_path / "pbt" / name)["pbt/optimizer.lr"]
        assert [step for step, _ in points] == [0, 5, 10, 15]  # its numbers from each step on
    best = OmegaConf.load(tmp_path / "pbt" / "best.yaml")
    assert best["val/acc"] == max(m["val/acc"] for m in members.values())
    assert best.schedule[0].epoch == 0 and [s.epoch for s in best.schedule] == sorted(s.epoch for s in best.schedule)
    done = in_process("nnlab.compare", str(tmp_path / "pbt"), cwd=tmp_path)  # make compare DIR=<the sweep>
    assert done.returncode == 0 and f"Winner: {best.member}, val/acc" in done.stdout, done.stderr[-2000:]
    assert "scheduler=replay" in done.stdout and (tmp_path / "pbt" / "lineage.png").stat().st_size > 0


def test_the_same_sweep_gives_the_same_numbers_and_a_stopped_one_goes_on_to_them(tmp_path, monkeypatch):
    from nnlab.population.module import Population
    def strip(members: dict) -> dict:  # all but the time taken
        return {name: {k: v for k, v in m.items() if k != "seconds"} for name, m in members.items()}
    whole = strip(sweep(tmp_path / "whole"))
    assert strip(sweep(tmp_path / "again")) == whole
    take, taken = Population.training_step, []

    def stopping(self, group: int, batch_idx: int) -> None:
        take(self, group, batch_idx)
        taken.append(group)
        if len(taken) == 2:  # in epoch 2, after the first exploit
            signal.raise_signal(signal.SIGTERM)
    monkeypatch.setattr(Population, "training_step", stopping)
    cut = in_process("nnlab.train", *TINY, f"hydra.sweep.dir={tmp_path / 'cut'}", cwd=tmp_path)
    assert cut.returncode == 1 and "make sweep RESUME=" in cut.stderr, cut.stderr[-2000:]
    resumed = strip(sweep(tmp_path / "cut"))
    assert resumed.keys() == whole.keys()
    for name, m in whole.items():
        assert m == resumed[name], name


@pytest.mark.parametrize("extra,says", [
    (["hydra/launcher=basic"], "hydra/sweeper=pbt trains its members as one population"),
    (["hydra.sweeper.members=1"], "hydra.sweeper.members=1 is invalid"),
    (["hydra.sweeper.interval=4"], "hydra.sweeper.interval=4 is not below trainer.max_epochs=4: no member would"),
    (["+hydra.sweeper.params.seed='range(0,3)'"], "seed cannot change while a member trains"),
    (["optimizer.lr=tag(log,interval(0.1,1.0))"], "PBT searches the space of its sweep file"),
])
def test_a_bad_pbt_sweep_is_one_line_before_anything_is_written(extra, says, tmp_path):
    done = in_process("nnlab.train", *TINY, *extra, f"hydra.sweep.dir={tmp_path / 'pbt'}", cwd=tmp_path)
    one_line_refusal(done, says)
    assert not (tmp_path / "pbt").exists()


def test_the_winners_schedule_replayed_in_one_run_gives_the_winners_numbers(tmp_path):
    # every member starts from the same init on the same data: the winner's weights are those of one
    # run trained on the schedule they went through (its sources' before each copy), and
    # scheduler=replay trains exactly that run, from best.yaml's command
    members = sweep(tmp_path / "pbt")
    best = OmegaConf.load(tmp_path / "pbt" / "best.yaml")
    assert "scheduler=replay scheduler.schedule=" in best.command
    args = best.command.split('ARGS="')[1].rstrip('"').split()
    done = in_process("nnlab.train", *args, f"hydra.run.dir={tmp_path / 'replay'}", "data.steps_per_epoch=5",
                      "trainer.max_epochs=4", "log_interval=5", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    replayed = json.loads((tmp_path / "replay" / "metrics.json").read_text())
    winner = members[best.member]
    assert {k: replayed[k] for k in ("val/acc", "val/loss", "test/acc")} == \
           {k: winner[k] for k in ("val/acc", "val/loss", "test/acc")}


def test_replay_rates_decay_by_each_epochs_gamma_and_scale_at_each_switch(tmp_path):
    from nnlab.replay import Replay
    path = tmp_path / "best.yaml"
    OmegaConf.save(OmegaConf.create({"schedule": [
        {"epoch": 0, "numbers": {"optimizer.lr": 2.0, "scheduler.gamma": 0.5}},
        {"epoch": 2, "numbers": {"optimizer.lr": 4.0, "scheduler.gamma": 1.0}}]}), path)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=123.0)  # its own lr: no effect
    replay = Replay(optimizer, str(path))
    seen = []
    for _ in range(5):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        replay.step()
    # 2, 2*0.5, then at epoch 2: 1*0.5 (decay) * 4/2 (the switch), then gamma 1
    assert seen == pytest.approx([2.0, 1.0, 1.0, 1.0, 1.0])


def test_replay_without_a_schedule_is_one_line(tmp_path):
    done = in_process("nnlab.train", "sweep=spiral_pbt", "scheduler=replay", f"hydra.run.dir={tmp_path / 'run'}",
                      cwd=tmp_path)
    one_line_refusal(done, "scheduler=replay replays a schedule: give scheduler.schedule=")


@pytest.mark.parametrize("content,says", [
    ("schedule: 3\n", "holds no schedule"),
    ("schedule:\n- epoch: 0\n  numbers: {optimizer.lr: 1.0, l2: 0.1}\n", "changes l2"),
    ("schedule:\n- epoch: 1\n  numbers: {optimizer.lr: 1.0}\n", "its epochs must start at 0"),
    ("schedule:\n- epoch: 0\n  numbers: {optimizer.lr: -1.0}\n", "must be numbers above 0"),
    (": :\n", "does not read as a PBT sweep's best.yaml"),
])
def test_a_bad_schedule_file_is_one_line_before_any_work(content, says, tmp_path):
    path = tmp_path / "best.yaml"
    path.write_text(content)
    done = in_process("nnlab.train", "sweep=spiral_pbt", "scheduler=replay", f"scheduler.schedule={path}",
                      f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    one_line_refusal(done, f"scheduler.schedule={path}")
    assert says in done.stderr and not (tmp_path / "run" / "metrics.json").exists()
