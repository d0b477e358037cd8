# brainview build file. Every target installs what it needs into .venv first.
#   make demo   the main job on the embedded default (no downloads)
#   make test   the test suite (what CI runs)
# Variables: PYTHON (interpreter that creates .venv), DATA_DIR (TFDS data dir),
# SHARED_DATA (the real datasets, default ../shared/data), RUNS (outputs).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
RUNS ?= $(CURDIR)/runs
DATA_DIR ?= $(RUNS)/tensorflow_datasets
SHARED_DATA ?= $(abspath $(CURDIR)/../shared/data)
PYTEST_ARGS ?=
export TF_CPP_MIN_LOG_LEVEL ?= 3
export BRAINVIEW_SHARED_DATA ?= $(SHARED_DATA)

.PHONY: install test test-fast demo datasets train classify bench bench-quick lint format clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip "setuptools>=70" wheel
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# Everything, slow tier included (as CI runs it).
test: install
	$(PY) -m pytest -q -ra $(PYTEST_ARGS)

# Unit and integration tests without the slow end-to-end tier.
test-fast: install
	$(PY) -m pytest -q -ra -m "not slow" $(PYTEST_ARGS)

demo: install
	$(BIN)/brainview-build-datasets --data_dir=$(DATA_DIR)

# The real atlases beside the project (see ../shared/data/README.md).
datasets: install
	$(BIN)/brainview-build-datasets --data_dir=$(DATA_DIR) \
	  --datasets=brain_phantom,allen_ccfv3/200um,brainmaps \
	  --allen_ccfv3_dir=$(SHARED_DATA)/allen_ccfv3_200um \
	  --brainmaps_dir=$(SHARED_DATA)/brainmaps

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(RUNS) build *.egg-info .pytest_cache .ruff_cache
