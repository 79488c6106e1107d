# negforge — the two commands: `make run` (set up + build the demo run) and `make test` (set up + test).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.negforge-installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: run test setup wordnet lint bench-quick clean

run: setup
	$(BIN)/negforge build --beir data/scifact-sample --split train --output runs/demo --overwrite
	@echo "output: runs/demo (negatives/tier=*/part-*.parquet, manifest.json)"
	$(BIN)/negforge audit runs/demo --report runs/demo/audit

test: setup
	$(BIN)/python -m pytest

setup: $(STAMP) wordnet

# torch first and pinned: an unpinned torch pulls gigabytes of CUDA wheels.
$(STAMP): setup.py constraints.txt
	[ -x $(BIN)/python ] || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# WordNet 3.0 for contextual negatives, from Debian (nothing calls nltk.download).
wordnet:
	@if [ ! -f /usr/share/wordnet/data.noun ]; then \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq wordnet-base wordnet-sense-index; \
	fi

lint: setup
	$(BIN)/ruff check .

bench-quick: setup
	for b in embed_throughput index_scale mine_vs_st contextual audit_scale; do $(BIN)/python bench/$$b.py --quick || exit 1; done
	$(BIN)/python -m bench.usefulness --quick

clean:
	rm -rf runs .pytest_cache
