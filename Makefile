# talkinghead: `make help` lists the targets.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help setup test data train bench compare bench-data bench-metrics clean

METHOD ?= pcavs
CONFIG ?=
DATASET ?= synth
METHODS ?= ground_truth static
SYNTH_STORE := data/store/synth-vox2

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP) ## create .venv (CPU torch first, then the package with dev extras); a no-op unless pyproject.toml changed

test: $(STAMP) ## run the whole test suite
	$(BIN)/pytest -q -n 2

data: $(STAMP) ## generate SynthTalk (VoxCeleb2, LRW, MEAD layouts; VoxCeleb2 with large head motion) under data/ and preprocess it into clip stores
	$(BIN)/talkinghead data --out data

$(SYNTH_STORE)/index.json: | $(STAMP)
	$(BIN)/talkinghead data --out data --layouts vox2

data/store/synth-mead/index.json: | $(STAMP)
	$(BIN)/talkinghead data --out data --layouts mead

data/store/synth-vox2-large/index.json: | $(STAMP)
	$(BIN)/talkinghead data --out data --layouts vox2-large

# the SynthTalk store a bench protocol reads, made when missing (synth, synth-pose, synth-eye: vox2;
# synth-mead, synth-emotion: mead; synth-large, synth-large-pose: vox2-large)
BENCH_STORE := $(if $(filter synth synth-pose synth-eye,$(DATASET)),$(SYNTH_STORE)/index.json,$(if $(filter synth-mead synth-emotion,$(DATASET)),data/store/synth-mead/index.json,$(if $(filter synth-large synth-large-pose,$(DATASET)),data/store/synth-vox2-large/index.json)))

# the SynthTalk configs (the default synth.yaml, tiny.yaml) read the SynthTalk store: made when missing
TRAIN_STORE := $(if $(filter-out synth tiny,$(CONFIG)),,$(SYNTH_STORE)/index.json)

# train and bench check their settings (names, config, overrides, checkpoints) before the store is
# made: a typo fails in seconds, listing the choices, instead of after minutes of data generation
train: $(STAMP) ## train a registered METHOD (an unknown one lists them): make train METHOD=pcavs [CONFIG=vox2] [ARGS="full.max_steps=100"]
	$(BIN)/talkinghead train --method $(METHOD) --check $(if $(CONFIG),--config $(CONFIG)) $(ARGS)
	$(if $(TRAIN_STORE),@$(MAKE) --no-print-directory $(TRAIN_STORE))
	$(BIN)/talkinghead train --method $(METHOD) $(if $(CONFIG),--config $(CONFIG)) $(ARGS)

bench: $(STAMP) ## score METHODS on DATASET: make bench DATASET=synth METHODS="ground_truth static" [CLIPS=N] [ARGS=...]
	$(BIN)/talkinghead bench --check --dataset $(DATASET) --methods $(METHODS) $(if $(CLIPS),--clips $(CLIPS)) $(ARGS)
	$(if $(BENCH_STORE),@$(MAKE) --no-print-directory $(BENCH_STORE))
	$(BIN)/talkinghead bench --dataset $(DATASET) --methods $(METHODS) $(if $(CLIPS),--clips $(CLIPS)) $(ARGS)

compare: $(STAMP) ## several bench runs in one report (runs/compare/<timestamp>/index.html): make compare [RUNS="runs/bench/a runs/bench/b"] [OUT=dir]; no RUNS: the two latest complete runs
	$(BIN)/talkinghead compare $(RUNS) $(if $(OUT),--out $(OUT))

bench-metrics: $(STAMP) ## CPBD and LSE cost next to the reference implementations (benchmarks/perf/metrics.py)
	$(BIN)/python benchmarks/perf/metrics.py

bench-data: $(STAMP) ## data-loading and preprocessing throughput (benchmarks/perf/data.py)
	$(BIN)/python benchmarks/perf/data.py

clean: ## remove generated data and caches (keeps .venv)
	rm -rf data .pytest_cache
