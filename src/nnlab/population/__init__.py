"""Population sweeps: a sweep's runs that differ only in numbers train together, each still exactly its run.

    python -m nnlab.train --multirun hydra/launcher=population sweep=spiral_grid   # make sweep SWEEP=spiral_grid

Hydra's launcher for it is hydra_plugins/nnlab_population.py (conf/hydra/launcher/population.yaml),
a stub; the work is here, one module a responsibility, each read top to bottom:

- grouping.py: which jobs train together (pure functions over their overrides and configs), what the
  population trains (an allow-list), and each member's config derived from its group's composition;
- launcher.py: Hydra's side: compose a group, print the grouping, give each member what Hydra's
  run_job gives a job (its folder, .hydra/, callbacks), and run everything else as the basic launcher;
- shares.py: a population split over forked worker processes (one a core), signals forwarded;
- loop.py: a population's parts: the stack of the members' parameters, their forward and data;
- module.py: the population as a LightningModule, and train_population, which has Lightning's Trainer
  fit and test it: a Lightning batch is k steps of every member, Lightning's validation and test
  loops score each member, Lightning's checkpoints are split into the members' own files
  (MemberFiles) and continued from through Lightning's ckpt_path;
- member.py: one member: its parts, what a run's hooks do around its steps (train/loss points, the
  epoch's line and means) and the run folder it leaves (metrics.json, TensorBoard events, train.log,
  checkpoints/last.ckpt), written by one Lightning callback, MemberRuns (TensorBoard each epoch).

A group of one, and a group of something the population does not train (`supported`: an allow-list),
runs through Hydra's own run_job, one job after another, exactly as hydra/launcher=basic runs it; so
does a resumed sweep's (make sweep RESUME=) finished run or run with a resumable Lightning checkpoint
(nnlab.train.main skips or continues it). SIGTERM or Ctrl-C stops a population at a step boundary:
its members are interrupted, each one's checkpoint holding what continues it (`member_checkpoint`: the
population's place and Lightning's loop state, the member's RNG before that epoch's data order, its epoch sums, losses, logged
metrics and figure curves); a resumed sweep regroups them and continues from there (`restore`) to the
numbers of the sweep never interrupted. A member that cannot continue (`saved_state` says why) trains
again from its start.

A group composes one config (a Hydra composition took ~0.5 s on the loaded 2-core VM of
docs/population-evidence.md); each member's config is
that one with the member's numbers set, and the overrides, folder name and job number Hydra would
give it (tests/test_population.py: equal to Hydra's own composition of the job). Each member then
gets what Hydra's run_job gives a job (its folder, .hydra/ with the same bytes, Hydra's job callbacks),
less run_job's deep copies of the Hydra config and its logging setup a job, and is checked and
claimed; the group trains:

- each member seeded as nnlab.train seeds a run, its own init, data, torch.optim optimizer and LR
  schedule (an nnlab.classifier.Classifier around its net), its parameters views of its row of the
  population's Stack (one leaf a parameter, (members, ...));
- a step of all members is nnlab.steps.step, the step a fused run takes as a population of one
  (nnlab/fused.py): one vectorised forward, torch.func.vmap over members of functional_call of the
  one architecture on the stack (the CNN: each member's own forward in turn on its row, as vmapped
  convolutions are slower on the CPU; hydra.launcher.vectorize chooses); each member's loss
  (cross-entropy plus its own L2, what Classifier.step computes) outside vmap, one backward for all
  (each loss gradient 1); per member the epoch sums, the finiteness check of loss and
  gradients (a member going non-finite stops alone, status diverged, its weights the last finite
  ones), the optimizer's step (plain SGD's for all such members at once: Stack.sgd_step) and a
  per-step schedule's step;
- around the steps Lightning's loop (module.py): train/loss and lr every log_interval steps, the
  epoch's schedule step and validation every epoch, test at the end.
- with hydra.launcher.workers > 1 (null: one a core), the group's config composed, the sweep's process
  forks that many workers, each setting up and training a share of its jobs as above
  (Population.train_shares), signals forwarded to them, the figures' best member chosen over all shares.

On the spiral on this CPU every number equals the member's separate run bit for bit: the vmapped
logits and their gradients are the same floats as one model's, and everything else is per member.
On MNIST the CNN's members (in turn) are bitwise their runs on the same thread count; the vmapped
linear and mlp members' batched matrix products may differ in the last bit (docs/population-evidence.md).
Members whose data configs resolve alike share one data module (MNIST: read once a population), and
each gathers its minibatch from the shared tensors when its step takes it.
Every member leaves a normal run folder (metrics.json plus a "population" entry, TensorBoard events
with the same tags and steps, train.log, checkpoints/last.ckpt for make evaluate); figures are drawn
for the `figures` setting's members (none | best: each group's best val/acc | all), as each costs
~0.5 s, more than a spiral member's training.
"""
