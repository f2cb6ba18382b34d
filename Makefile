# Every target sets itself up: a fresh machine needs only python3.11 and make (and root, or the
# Debian packages scripts/system-deps names, for the tests).
SHELL := /bin/bash
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MODELS ?= .cache/tiny-models
# pytest-xdist workers for `make test`: two suit a 2-core machine (most tests wait on real processes);
# 0 runs the suite in this one process
TEST_WORKERS ?= 2
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: install system-deps proto test test-system demo bench lint clean tiny-models help

help:
	@echo "make install | system-deps | proto | test | test-system | demo | bench | lint | tiny-models | clean"

$(BIN)/python:
	$(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first (the pinned CPU wheel), then everything else in one resolver run.
$(STAMP): requirements.txt pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

# Prometheus/promtool and Chromium + chromedriver, which tests start for real (apt-get when root, else the command to run).
system-deps:
	@scripts/system-deps

# Regenerates genir/v1/*_pb2*.py from protos/ (committed; tests/unit/test_protos.py checks freshness).
proto: $(STAMP)
	$(BIN)/python -m genir.protogen

tiny-models: $(STAMP)
	$(BIN)/genir tiny-models build $(MODELS)

test: $(STAMP) system-deps
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -m "not slow" -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test-system: $(STAMP) system-deps
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests/system $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/genir demo --models $(MODELS) --workdir .cache/demo

bench: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m benchmarks $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf .cache build *.egg-info
