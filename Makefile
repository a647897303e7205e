# nnlab: every target that runs the package takes Hydra overrides as ARGS="...".
#   make train ARGS="model=mlp optimizer.lr=0.01"     make test     make tensorboard
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
ARGS   ?=

.PHONY: install data train sweep compare evaluate bench test test-slow tensorboard clean-runs

# The venv is rebuilt when pyproject.toml changes; torch 2.14.1 + torchvision 0.29.1 pinned there.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $@

install: $(VENV)/.installed

data: install  ## fetch + MD5-check MNIST's raw files into data/MNIST/raw (ARGS="data.root=...")
	$(PY) -m nnlab.data $(ARGS)

train: install  ## one run into runs/<overrides>/<time>/ (ARGS="experiment=seed_mnist_cnn")
	$(PY) -m nnlab.train $(ARGS)

sweep: install  ## a Hydra multirun grid, e.g. ARGS="experiment=spiral_mlp seed=0,1,2" -> runs/sweeps/<time>/
	$(PY) -m nnlab.train --multirun $(ARGS)

compare: install  ## table of runs grouped by overrides minus seed: mean ± std over seeds (ARGS="runs/sweeps/<time>")
	$(PY) -m nnlab.compare $(ARGS)

evaluate: install  ## re-score a checkpoint without Lightning (ARGS=runs/.../checkpoints/last.ckpt)
	$(PY) -m nnlab.evaluate $(ARGS)

bench: install  ## nnlab vs plain PyTorch vs the notebook loop, side by side: table + bench.json (ARGS="repeats=5")
	$(PY) -m nnlab.bench $(ARGS)

test: install  ## the fast offline suite (what .ci/run runs)
	$(PY) -m pytest $(ARGS)

test-slow: install  ## full-length experiments against their bands, real MNIST (7 min here)
	$(PY) -m pytest -m slow $(ARGS)

tensorboard: install  ## curves of every run under runs/
	$(VENV)/bin/tensorboard --logdir runs $(ARGS)

clean-runs:
	rm -rf runs
