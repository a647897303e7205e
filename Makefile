# nnlab: every target that runs the package takes Hydra overrides as ARGS="...".
#   make train ARGS="model=mlp optimizer.lr=0.01"     make test     make tensorboard
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
ARGS   ?=
# make sweep: SWEEP names a grid in conf/sweep/, ARGS goes on top of it; without SWEEP, ARGS alone is
# the multirun, and with neither (or ARGS only saying how and where: hydra/launcher=, hydra.*, threads=)
# the default grid DEFAULT_SWEEP runs. Jobs that differ only in numbers
# train together through hydra/launcher=population (docs/population.md; ARGS="hydra/launcher=basic": one
# by one). JOBS runs at once through Hydra's joblib launcher, each with cores/JOBS torch threads; RESUME
# is an existing sweep folder: finished runs are skipped, interrupted ones continue (make train
# RESUME=<run folder>: that run continues).
# make compare: DIR is a sweep folder (default: the latest under runs/sweeps/), or several ("a b").
# make confirm: reruns DIR's chosen settings on SEEDS fresh seeds into DIR/confirm/.
# make tensorboard serves RUNS.
SWEEP  ?=
DEFAULT_SWEEP := mnist_grid
DIR    ?=
JOBS   ?= 1
RESUME ?=
RUNS   ?= runs
SEEDS  ?= 5
PORT   ?= 8080
CORES  := $(shell nproc 2>/dev/null || echo 1)

.PHONY: install data train sweep compare confirm evaluate bench lint test test-slow tensorboard dashboard clean-runs help

# The venv is rebuilt when pyproject.toml changes; torch 2.14.1 + torchvision 0.29.1 pinned there.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $@

install: $(VENV)/.installed

data: install  ## fetch + MD5-check MNIST's raw files into data/MNIST/raw (ARGS="data.root=...")
	$(PY) -m nnlab.data $(ARGS)

train: install  ## one run into runs/<overrides>/<time>/ (ARGS="experiment=seed_mnist_cnn"; RESUME=<run folder>)
	$(if $(RESUME),$(if $(wildcard $(RESUME)/.hydra/config.yaml),,$(error RESUME=$(RESUME) is not a run folder (it holds no .hydra/config.yaml): give one under runs/)))
	$(PY) -m nnlab.train $(if $(RESUME),resume=$(RESUME)) $(ARGS)

sweep: install  ## a multirun into runs/sweeps/<time>/: SWEEP=<grid in conf/sweep/>, ARGS="k=a,b ...", JOBS=N, RESUME=<sweep folder>
	$(if $(RESUME),$(if $(wildcard $(RESUME)/multirun.yaml),,$(error RESUME=$(RESUME) is not a sweep folder (it holds no multirun.yaml): give one under runs/sweeps/)))
	$(PY) -m nnlab.train --multirun $(if $(SWEEP),sweep=$(SWEEP),$(if $(strip \
	  $(filter-out hydra/launcher=% hydra.% threads=%,$(ARGS))),,sweep=$(DEFAULT_SWEEP))) \
	  $(if $(RESUME),hydra.sweep.dir=$(RESUME)) \
	  $(if $(filter-out 1,$(JOBS)),hydra/launcher=joblib hydra.launcher.n_jobs=$(JOBS) \
	  threads=$(shell echo $$(( $(CORES) / $(JOBS) > 0 ? $(CORES) / $(JOBS) : 1 ))),$(if \
	  $(findstring hydra/launcher,$(ARGS)),,hydra/launcher=population)) $(ARGS)

compare: install  ## verdicts, summary.csv/.md + plots of a sweep folder (DIR=runs/sweeps/<time>; default: the latest; DIR="a b": side by side)
	$(PY) -m nnlab.compare $(DIR) $(ARGS)

confirm: install  ## rerun each architecture's chosen setting on SEEDS=5 fresh seeds into <sweep folder>/confirm/ (DIR=; default: the latest)
	$(PY) -m nnlab.confirm $(DIR) --seeds $(SEEDS) $(ARGS)

evaluate: install  ## re-score a checkpoint without Lightning (ARGS=runs/.../checkpoints/last.ckpt)
	$(PY) -m nnlab.evaluate $(ARGS)

bench: install  ## nnlab vs plain PyTorch vs the notebook loop, side by side: table + bench.json (ARGS="repeats=5"; ARGS="sweep=spiral_grid": a whole sweep, population vs basic launcher)
	$(PY) -m nnlab.bench $(ARGS)

lint: install  ## ruff, configured in pyproject.toml (what .ci/run and .pre-commit-config.yaml run)
	$(VENV)/bin/ruff check src tests experiments $(ARGS)

test: install  ## the fast tier, offline, a worker a core, with line coverage of src/ (docs/testing.md)
	mkdir -p .coverage && $(PY) -m pytest -n $(CORES) --dist loadfile --cov --cov-report=term $(ARGS)

test-slow: install  ## the slow tier: end-to-end proofs in fresh processes, full-length runs on real MNIST (docs/testing.md)
	mkdir -p .coverage && $(PY) -m pytest -m slow --cov --cov-report=term $(ARGS)

tensorboard: install  ## curves and HPARAMS of every run under RUNS=runs, each named by what tells it apart, on 127.0.0.1 only (ARGS="--port 6007")
	$(PY) -m nnlab.board $(RUNS) $(ARGS)

dashboard: install  ## optuna-dashboard of a study on 127.0.0.1:PORT (DIR=runs/sweeps/<time>; default: the latest sweep)
	$(PY) -m nnlab.search $(DIR) --port $(PORT) $(ARGS)

clean-runs:  ## delete runs/ (every run and sweep folder)
	rm -rf runs

help:  ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):[^#]*## /  make \1\t/' | expand -t 20
