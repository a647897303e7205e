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

# spiral_pbt shrunk: 4 members of 2 epochs of 10 full-batch steps; after steps 5, 10 and 15 (within
# each epoch and at the first's end) the worst member (the bottom quarter) copies the best (the top quarter)
SHAPE = ["data.steps_per_epoch=10", "trainer.max_epochs=2", "log_interval=5"]
TINY = ["--multirun", "sweep=spiral_pbt", "hydra/launcher=population", "hydra.sweeper.members=4", *SHAPE, "hydra.sweeper.interval=5"]


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
    assert len(copied) == 3 and all(better for _, _, better in copied)  # one an interval: after steps 5, 10, 15
    lineage = {m["pbt"]["member"]: m["pbt"]["lineage"] for m in members.values()}
    assert sorted((e["copied"], idx) for idx, entries in lineage.items() for e in entries) == \
        sorted((s, t) for s, t, _ in copied)
    for name, m in members.items():
        for entry in m["pbt"]["lineage"]:
            assert entry["step"] in (5, 10, 15) and 0.3 <= entry["numbers"]["optimizer.lr"] <= 10.0
        if m["pbt"]["lineage"]:  # it trained on with the numbers it switched to last
            assert m["pbt"]["lineage"][-1]["numbers"] == m["pbt"]["numbers"]
        points = scalars(tmp_path / "pbt" / name)["pbt/optimizer.lr"]
        assert [step for step, _ in points] == [0, 5, 10, 15]  # its numbers from each step on
        assert [step for step, _ in scalars(tmp_path / "pbt" / name)["val/acc"]] == [5, 10, 15, 20]  # each interval's
    best = OmegaConf.load(tmp_path / "pbt" / "best.yaml")
    assert best["val/acc"] == max(m["val/acc"] for m in members.values())
    assert best.steps_per_epoch == 10 and best.schedule[0].step == 0
    assert [s.step for s in best.schedule] == sorted(s.step for s in best.schedule)
    done = in_process("nnlab.compare", str(tmp_path / "pbt"), cwd=tmp_path)  # make compare DIR=<the sweep>
    assert done.returncode == 0 and f"Winner: {best.member}, val/acc" in done.stdout, done.stderr[-2000:]
    assert "scheduler=replay" in done.stdout and (tmp_path / "pbt" / "lineage.png").stat().st_size > 0


def test_an_interval_that_does_not_divide_the_run_still_ends_on_a_validation(tmp_path, scalars):
    members = sweep(tmp_path / "pbt", "hydra.sweeper.interval=6")  # validations at steps 6, 12, 18, then 20
    for name, m in members.items():
        assert m["status"] == "ok" and all(e["step"] in (6, 12, 18) for e in m["pbt"]["lineage"])
        points = scalars(tmp_path / "pbt" / name)["val/acc"]
        assert [step for step, _ in points] == [6, 12, 18, 20] and points[-1][1] == pytest.approx(m["val/acc"])
    assert sum(len(m["pbt"]["lineage"]) for m in members.values()) == 3  # one member a step, none after the last


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
        if len(taken) == 3:  # within epoch 2, after two exploits (the one at its step 15 comes after the stop)
            signal.raise_signal(signal.SIGTERM)
    monkeypatch.setattr(Population, "training_step", stopping)
    cut = in_process("nnlab.train", *TINY, f"hydra.sweep.dir={tmp_path / 'cut'}", cwd=tmp_path)
    assert cut.returncode == 1 and "make sweep RESUME=" in cut.stderr, cut.stderr[-2000:]
    member = next((tmp_path / "cut").glob("*/metrics.json")).parent  # make train RESUME=<a member>: refused
    before = {f: f.read_bytes() for f in member.rglob("*") if f.is_file()}
    alone = in_process("nnlab.train", f"resume={member}", cwd=tmp_path)
    one_line_refusal(alone, f"{member / 'checkpoints' / 'last.ckpt'} is a PBT member's: it copies others as it trains "
                            "and cannot go on alone (make sweep RESUME=")
    after = {f: f.read_bytes() for f in member.rglob("*") if f.is_file()}
    assert [f for f in after if after[f] != before.get(f)] == []
    resumed = strip(sweep(tmp_path / "cut"))
    assert resumed.keys() == whole.keys()
    for name, m in whole.items():
        assert m == resumed[name], name


@pytest.mark.parametrize("extra,says", [
    (["hydra/launcher=basic"], "hydra/sweeper=pbt trains its members as one population"),
    (["hydra.sweeper.members=1"], "hydra.sweeper.members=1 is invalid"),
    (["hydra.sweeper.interval=20"], "hydra.sweeper.interval=20 is not below the members' 20 steps (2 epochs of 10)"),
    (["+hydra.sweeper.params.seed='range(0,3)'"], "seed cannot change while a member trains"),
    (["optimizer.lr=tag(log,interval(0.1,1.0))"], "PBT searches the space of its sweep file"),
])
def test_a_bad_pbt_sweep_is_one_line_before_anything_is_written(extra, says, tmp_path):
    done = in_process("nnlab.train", *TINY, *extra, f"hydra.sweep.dir={tmp_path / 'pbt'}", cwd=tmp_path)
    one_line_refusal(done, says)
    assert not (tmp_path / "pbt").exists()


def test_the_winners_schedule_replayed_in_one_run_gives_the_winners_numbers(tmp_path):
    # every member starts from the same init on the same data order: the winner's weights are those of
    # one run trained on the schedule they went through (its sources' before each copy), and
    # scheduler=replay trains exactly that run, from best.yaml's command; minibatches of 30 of the 300
    # points (10 steps an epoch), each epoch in a shuffled order the PBT validations must not change
    shuffled = ["data.steps_per_epoch=null", "data.batch_size=30"]
    members = sweep(tmp_path / "pbt", *shuffled)
    best = OmegaConf.load(tmp_path / "pbt" / "best.yaml")
    assert "scheduler=replay scheduler.schedule=" in best.command
    args = best.command.split('ARGS="')[1].rstrip('"').split()
    done = in_process("nnlab.train", *args, f"hydra.run.dir={tmp_path / 'replay'}", *SHAPE, *shuffled, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    replayed = json.loads((tmp_path / "replay" / "metrics.json").read_text())
    winner = members[best.member]
    assert {k: replayed[k] for k in ("val/acc", "val/loss", "test/acc")} == \
           {k: winner[k] for k in ("val/acc", "val/loss", "test/acc")}


def test_replay_rates_decay_at_each_epochs_end_and_scale_at_each_switch(tmp_path):
    from nnlab.replay import Replay
    path = tmp_path / "best.yaml"
    OmegaConf.save(OmegaConf.create({"steps_per_epoch": 2, "schedule": [
        {"step": 0, "numbers": {"optimizer.lr": 2.0, "scheduler.gamma": 0.5}},
        {"step": 3, "numbers": {"optimizer.lr": 4.0, "scheduler.gamma": 1.0}},
        {"step": 4, "numbers": {"optimizer.lr": 3.0, "scheduler.gamma": 0.1}}]}), path)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=123.0)  # its own lr: no effect
    replay = Replay(optimizer, str(path))
    seen = []
    for _ in range(7):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        replay.step()
    # epoch 0: 2, 2; step 2 (an epoch's end): 2*0.5; step 3, within the epoch: * 4/2; step 4: the epoch's
    # end with gamma 1 (in effect at step 3), then * 3/4; step 6: the decay by 0.1
    assert seen == [2.0, 2.0, 1.0, 2.0, 1.5, 1.5, 1.5 * 0.1]


def test_replay_without_a_schedule_is_one_line(tmp_path):
    done = in_process("nnlab.train", "sweep=spiral_pbt", "scheduler=replay", f"hydra.run.dir={tmp_path / 'run'}",
                      cwd=tmp_path)
    one_line_refusal(done, "scheduler=replay replays a schedule: give scheduler.schedule=")


@pytest.mark.parametrize("content,says", [
    ("steps_per_epoch: 5\nschedule: 3\n", "holds no schedule"),
    ("steps_per_epoch: 5\nschedule:\n- step: 0\n  numbers: {optimizer.lr: 1.0, l2: 0.1}\n", "changes l2"),
    ("steps_per_epoch: 5\nschedule:\n- step: 1\n  numbers: {optimizer.lr: 1.0}\n", "its steps must start at 0"),
    ("steps_per_epoch: 5\nschedule:\n- step: 0\n  numbers: {optimizer.lr: -1.0}\n", "must be numbers above 0"),
    ("schedule:\n- epoch: 0\n  numbers: {optimizer.lr: 1.0}\n", "holds no steps_per_epoch"),
    (": :\n", "does not read as a PBT sweep's best.yaml"),
])
def test_a_bad_schedule_file_is_one_line_before_any_work(content, says, tmp_path):
    path = tmp_path / "best.yaml"
    path.write_text(content)
    done = in_process("nnlab.train", "sweep=spiral_pbt", "scheduler=replay", f"scheduler.schedule={path}",
                      f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    one_line_refusal(done, f"scheduler.schedule={path}")
    assert says in done.stderr and not (tmp_path / "run" / "metrics.json").exists()


def test_a_gpus_once_a_group_check_gives_the_same_pbt_sweep(tmp_path, monkeypatch):
    # On a GPU a population reads its finiteness once a group (nnlab/population/module.py): forced on the
    # CPU, a PBT sweep on shuffled minibatches, exploiting within epochs, gives every step's numbers
    from nnlab.population import module
    shuffled = ["data.steps_per_epoch=null", "data.batch_size=30"]
    every = sweep(tmp_path / "every", *shuffled)
    init = module.Population.__init__

    def once_a_group(self, *args, **kwargs) -> None:
        init(self, *args, **kwargs)
        self.check_every_step = False
    monkeypatch.setattr(module.Population, "__init__", once_a_group)
    grouped = sweep(tmp_path / "grouped", *shuffled)
    assert any(m["pbt"]["lineage"] for m in every.values())
    for name, m in every.items():
        assert {k: v for k, v in m.items() if k != "seconds"} == {k: v for k, v in grouped[name].items() if k != "seconds"}


def test_compare_reads_a_received_pbt_folder_that_was_tampered_with(tmp_path):
    # a PBT sweep someone sent: one lineage naming a member not in the folder, one garbled, two members
    # copying each other at one step (a cycle no sweep writes), then best.yaml garbled: make compare
    # still reports, each problem named, never a traceback nor a hang
    members = sweep(tmp_path / "pbt")
    folder = tmp_path / "pbt"
    gone, garbled, a, b = members
    idx = {name: m["pbt"]["member"] for name, m in members.items()}

    def lineage(name: str, entries: list) -> None:
        metrics = json.loads((folder / name / "metrics.json").read_text())
        metrics["pbt"]["lineage"] = entries
        (folder / name / "metrics.json").write_text(json.dumps(metrics))
    lineage(gone, [{"copied": 99, "step": 5, "numbers": {"optimizer.lr": 1.0}}])
    lineage(garbled, [{"step": []}])
    lineage(a, [{"copied": idx[b], "step": 5, "numbers": {"optimizer.lr": 1.0}}])
    lineage(b, [{"copied": idx[a], "step": 5, "numbers": {"optimizer.lr": 2.0}}])
    done = in_process("nnlab.compare", str(folder), cwd=tmp_path)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "Winner: " in done.stdout and "(2 members not drawn: a lineage that does not read" in done.stdout, \
        done.stdout[-2000:]
    assert (folder / "lineage.png").stat().st_size > 0
    (folder / "best.yaml").write_text("schedule: [1, 2]\nmember: x\n")
    done = in_process("nnlab.compare", str(folder), cwd=tmp_path)
    assert done.returncode == 0 and "does not read as this nnlab's best.yaml" in done.stdout, done.stderr[-2000:]
