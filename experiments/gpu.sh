#!/usr/bin/env bash
# nnlab's GPU checks and numbers in one go, on a machine with a CUDA GPU and no internet access
# (about 9 minutes there).
#   bash experiments/gpu.sh prepare   # first, on a machine with this repo's .venv: .gpu/ gets what a GPU
#                                     # image with torch and Lightning lacks (~15 MB): the wheels of
#                                     # hydra-core, omegaconf and antlr4, and MNIST's idx files, gzipped
#   bash experiments/gpu.sh           # then on the GPU machine, with .gpu/ beside the code: the GPU tests,
#                                     # experiments/gpu.py's recipe timings, make bench; tables last
#   bash experiments/gpu.sh population  # or, on its own (at most ~9.5 minutes): populations on the GPU,
#                                     # members against their runs there, then the whole mnist_grid
#                                     # through the population and one run after another, timed
#   bash experiments/gpu.sh pbt       # or: mnist_pbt with 64 CNN members as one population on the GPU
# Without a GPU it is a dry run of the same steps: GPU_ARGS="+trainer.limit_train_batches=5"
# BENCH_ARGS="repeats=1 spiral_steps=100" bash experiments/gpu.sh
set -uo pipefail
cd "$(dirname "$0")/.."
if [[ ${1:-} == prepare ]]; then
  set -e
  rm -rf .gpu && mkdir -p .gpu/whl .gpu/mnist
  pip="${PYTHON:-.venv/bin/python} -m pip"
  $pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 -d .gpu/whl hydra-core==1.3.8 omegaconf==2.3.1
  $pip wheel --quiet --no-deps -w .gpu/whl antlr4-python3-runtime==4.9.3  # an sdist only: built here, pure Python
  for f in data/MNIST/raw/*-ubyte; do gzip -c "$f" >".gpu/mnist/$(basename "$f").gz"; done
  du -sh .gpu
  exit
fi

OUT=${OUT:-.gpu/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
if ! python3 -c "import hydra" 2>/dev/null; then  # the device image: install the carried wheels
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/whl/*.whl || exit
  export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
mkdir -p data/MNIST/raw
for f in .gpu/mnist/*.gz; do [[ -e $f ]] && { t=data/MNIST/raw/$(basename "$f" .gz); [[ -e $t ]] || gunzip -c "$f" >"$t"; }; done
python3 -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__,
  torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')" | tee "$OUT/machine.txt"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv >>"$OUT/machine.txt" 2>&1

if [[ ${1:-} == population ]]; then
  timeout 120 python3 -m pytest -q -s -p no:cacheprovider tests/test_population.py -k "gpu_members or on_a_gpu" 2>&1 \
    | grep -E "deviation|passed|failed|Error|assert" | tail -n 20 >"$OUT/population.txt"
  for way in population basic; do  # the same 54 runs; each way's folder is a sweep make compare reads
    extra=(); [[ $way == population ]] && extra=(hydra.launcher.gpu=true)
    start=$(date +%s.%N)
    timeout $([[ $way == population ]] && echo 150 || echo 300) python3 -m nnlab.train --multirun sweep=mnist_grid \
      "hydra/launcher=$way" "${extra[@]}" "hydra.sweep.dir=$OUT/mnist_grid_$way" >"$OUT/mnist_grid_$way.log" 2>&1
    rc=$?
    ok=$(grep -l '"status": "ok"' "$OUT"/mnist_grid_$way/*/metrics.json 2>/dev/null | wc -l)
    echo "mnist_grid, $way: exit $rc, $ok of 54 ok, $(python3 -c "import time; print(round(time.time() - $start, 1))") s" \
      | tee -a "$OUT/population.txt"
    python3 -m nnlab.compare "$OUT/mnist_grid_$way" 2>&1 | head -n 12 >>"$OUT/population.txt"
  done
  cat "$OUT/machine.txt" "$OUT/population.txt"
  exit
fi

if [[ ${1:-} == pbt ]]; then
  start=$(date +%s.%N)
  timeout 500 python3 -m nnlab.train --multirun sweep=mnist_pbt hydra.sweeper.members=64 hydra/launcher=population \
    hydra.launcher.gpu=true \
    "hydra.sweep.dir=$OUT/mnist_pbt_64" >"$OUT/mnist_pbt_64.log" 2>&1
  echo "mnist_pbt, 64 members: exit $?, $(python3 -c "import time; print(round(time.time() - $start, 1))") s" >"$OUT/pbt.txt"
  python3 -m nnlab.compare "$OUT/mnist_pbt_64" 2>&1 | head -n 20 >>"$OUT/pbt.txt"
  cat "$OUT/machine.txt" "$OUT/pbt.txt"
  exit
fi

# 1. End-to-end tests, on the GPU (accelerator=auto picks it): fused steps bitwise Lightning's own, the
#    once-a-group finiteness read against every step's, divergence, seeds, checkpoints, bf16/channels-last.
timeout 100 python3 -m pytest -q -p no:cacheprovider tests/test_train.py tests/test_reliability.py \
  -k "fused or once_a_group or non_finite or same_seed or checkpoint_loads or gpu_options" 2>&1 | tail -n 25 >"$OUT/tests.txt"
# 2. The recipes, one process a variant; 3. make bench (nnlab vs plain PyTorch vs the notebook's loop).
timeout 240 python3 experiments/gpu.py "$OUT" ${GPU_ARGS:-} >"$OUT/recipes.md"
timeout 150 python3 -m nnlab.bench repeats=2 out="$OUT/bench.json" ${BENCH_ARGS:-} >"$OUT/bench.md" 2>"$OUT/bench.err"
cat "$OUT/machine.txt" "$OUT/tests.txt"; echo; cat "$OUT/recipes.md"; echo; cat "$OUT/bench.md"
