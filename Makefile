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
# Extras for development: tests and lint (dev), the `tfds` command line
# (tfds-cli: apache-beam, mlcroissant) and Apache Beam (beam), so their tests run too.
EXTRAS ?= dev,tfds-cli,beam
export TF_CPP_MIN_LOG_LEVEL ?= 3
export BRAINVIEW_SHARED_DATA ?= $(SHARED_DATA)

.PHONY: install test test-fast demo datasets train classify bench bench-quick lint format clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip "setuptools>=70" wheel
	$(PY) -m pip install -q -e '.[$(EXTRAS)]'
	touch $@

# Everything, slow tier included (as CI runs it).
test: install
	$(PY) -m pytest -q -ra $(PYTEST_ARGS)

# Unit and integration tests without the slow end-to-end tier.
test-fast: install
	$(PY) -m pytest -q -ra -m "not slow" $(PYTEST_ARGS)

# The main job on the embedded default: build the phantom dataset, train on it,
# classify a generated folder of sample scans, and draw CAMs for a few of them.
DEMO := $(RUNS)/demo
demo: install
	$(BIN)/brainview-build-datasets --data_dir=$(DATA_DIR) --datasets=brain_phantom
	$(BIN)/brainview-train --flagfile=configs/demo.flags --data_dir=$(DATA_DIR) --output_dir=$(DEMO)
	$(PY) -m brainview_tfds.brain_phantom.sample_scans --output_dir=$(RUNS)/sample_scans --count=48
	$(BIN)/brainview-classify-dir $(RUNS)/sample_scans $(DEMO)/predictions.csv \
	  --model=$(DEMO)/holdout/model.keras --cams=$(DEMO)/cams.h5 --overwrite
	$(BIN)/brainview-render-cams $(RUNS)/sample_scans $(DEMO)/cams.h5 $(DEMO)/overlays \
	  --csv=$(DEMO)/predictions.csv --select=first --count=12
	@echo "demo done: $(DEMO)/holdout/metrics.json, $(DEMO)/predictions.csv, $(DEMO)/overlays/contact_sheet.png"

# The real atlases beside the project (see ../shared/data/README.md).
datasets: install
	$(BIN)/brainview-build-datasets --data_dir=$(DATA_DIR) \
	  --datasets=brain_phantom,allen_ccfv3/200um,brainmaps \
	  --allen_ccfv3_dir=$(SHARED_DATA)/allen_ccfv3_200um \
	  --brainmaps_dir=$(SHARED_DATA)/brainmaps

# Train the default (robust) recipe on the phantom and the real atlases (make datasets
# first); FLAGFILE picks another recipe or experiment (see configs/).
FLAGFILE ?= configs/robust.flags
train: install
	$(BIN)/brainview-train --flagfile=$(FLAGFILE) --data_dir=$(DATA_DIR)

# Classify SCANS with MODEL: make classify SCANS=/path/to/scans MODEL=runs/.../model.keras
SCANS ?= $(RUNS)/sample_scans
MODEL ?= $(DEMO)/holdout/model.keras
OUT ?= $(RUNS)/classify
classify: install
	mkdir -p $(OUT)
	$(BIN)/brainview-classify-dir $(SCANS) $(OUT)/predictions.csv --model=$(MODEL) \
	  --cams=$(OUT)/cams.h5 --resume

# Benchmarks (bench/run_all.py) on generated data in a temp dir; JSON and the README table
# (README_table.md) go to bench/results/ (bench-quick: bench/results/quick/). The image-size
# sweep trains at 128-512 px, hours on a 2-core CPU, so `make bench` leaves it out unless
# BENCH_ARGS is changed (e.g. make bench BENCH_ARGS= , or BENCH_ARGS=--only=image_size).
BENCH_ARGS ?= --skip=image_size
bench: install
	$(PY) -m bench.run_all $(BENCH_ARGS)

# The CI smoke run of every benchmark: small data, a few minutes.
bench-quick: install
	$(PY) -m bench.run_all --quick

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(RUNS) build *.egg-info .pytest_cache .ruff_cache
