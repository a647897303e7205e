#!/usr/bin/env bash
# One MNIST run of the notebook's MLP recipe (3 epochs), alone and beside one busy process, on 2
# threads with OpenMP's own wait policy (OMP_WAIT_POLICY unset: spin a while, then sleep; and nnlab
# leaves it unset where the machine is quiet) or PASSIVE (sleep at once), and on 1 thread; three rounds,
# interleaved. Prints each run's training seconds (metrics.json) and test/acc.
# Run from the repository's top folder: bash experiments/busy.sh
set -euo pipefail
out=$(mktemp -d)
one() {  # $1: alone|busy  $2: wait policy (unset: OpenMP's default)  $3: threads
  env $([ "$2" = unset ] && echo -u OMP_WAIT_POLICY || echo OMP_WAIT_POLICY=$2) .venv/bin/python -m nnlab.train experiment=mnist_mlp trainer.max_epochs=3 threads=$3 \
    hydra.run.dir="$out/run" > /dev/null 2>&1
  .venv/bin/python -c "import json, sys; m = json.load(open(sys.argv[1])); print('$1 $2 threads=$3', m['seconds'], m['test/acc'])" \
    "$out/run/metrics.json"
  rm -rf "$out/run"
}
for round in 1 2 3; do
  one alone unset 2; one alone PASSIVE 2; one alone unset 1
  python3 -c "while True: pass" & spinner=$!
  sleep 1
  one busy unset 2; one busy PASSIVE 2; one busy unset 1
  kill "$spinner"
done
rm -rf "$out"
