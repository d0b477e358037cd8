# brainview build file. Every target installs what it needs into .venv first.
#   make demo   the main job on the embedded default (no downloads)
#   make test   the test suite (what CI runs)
#   make install  what a user needs (then bin/* run from the checkout, nothing to activate);
#   make dev      that plus the developer extras (tests, lint, the `tfds` command line)
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
# Extras for development (make dev, test, lint): tests and lint (dev), the `tfds` command
# line (tfds-cli: apache-beam, mlcroissant) and Apache Beam (beam), so their tests run too.
DEV_EXTRAS ?= dev,tfds-cli,beam
export TF_CPP_MIN_LOG_LEVEL ?= 3
export BRAINVIEW_SHARED_DATA ?= $(SHARED_DATA)

.PHONY: install dev test test-fast demo datasets train classify bench bench-quick lint format clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip "setuptools>=70" wheel
	$(PY) -m pip install -q -e .
	touch $@

dev: $(VENV)/.installed-dev

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[$(DEV_EXTRAS)]'
	touch $@

# Everything, slow tier included (as CI runs it).
test: dev
	$(PY) -m pytest -q -ra $(PYTEST_ARGS)

# Unit and integration tests without the slow end-to-end tier.
test-fast: dev
	$(PY) -m pytest -q -ra -m "not slow" $(PYTEST_ARGS)

# The main job on the embedded default: build the phantom dataset, train on it, write a
# folder of sample scans whose names give their true view, classify them (CSV, CAMs, the
# scans sorted into one folder per answer, accuracy by name), draw CAMs over some of them
# and write the review page.
DEMO := $(RUNS)/demo
SAMPLE_SCANS := $(RUNS)/sample_scans
demo: install
	$(BIN)/brainview-build-datasets --data_dir=$(DATA_DIR) --datasets=brain_phantom
	$(BIN)/brainview-train --flagfile=configs/demo.flags --data_dir=$(DATA_DIR) --output_dir=$(DEMO)
	$(PY) -m brainview.cli.sample_scans --output_dir=$(SAMPLE_SCANS) --count=48
	$(BIN)/brainview-classify-dir $(SAMPLE_SCANS) $(DEMO)/predictions.csv \
	  --model=$(DEMO)/holdout/model.keras --cams=$(DEMO)/cams.h5 --overwrite \
	  --sort_into=$(DEMO)/sorted --score_by_name
	$(BIN)/brainview-render-cams $(SAMPLE_SCANS) $(DEMO)/cams.h5 $(DEMO)/overlays \
	  --csv=$(DEMO)/predictions.csv --select=lowest_confidence --count=8
	$(BIN)/brainview-render-cams $(SAMPLE_SCANS) $(DEMO)/cams.h5 $(DEMO)/review \
	  --csv=$(DEMO)/predictions.csv --review --count=48
	@echo "== the same sample scans with the shipped model plane-v1 (trained on the real atlases):"
	$(BIN)/brainview-classify-dir $(SAMPLE_SCANS) $(DEMO)/plane-v1/predictions.csv \
	  --cams=$(DEMO)/plane-v1/cams.h5 --overwrite --score_by_name
	$(BIN)/brainview-render-cams $(SAMPLE_SCANS) $(DEMO)/plane-v1/cams.h5 $(DEMO)/plane-v1/review \
	  --csv=$(DEMO)/plane-v1/predictions.csv --review --count=48
	@echo "demo done: $(DEMO)/holdout/metrics.json, $(DEMO)/predictions.csv, $(DEMO)/sorted/,"
	@echo "  $(DEMO)/overlays/contact_sheet.png, $(DEMO)/review/index.html (open it in a browser),"
	@echo "  and plane-v1's answers beside the demo model's: $(DEMO)/plane-v1/"

# The real atlases beside the project (see ../shared/data/README.md).
datasets: install
	$(BIN)/brainview-build-datasets --data_dir=$(DATA_DIR) \
	  --datasets=brain_phantom,brain_phantom_outlines,allen_ccfv3/200um,allen_ccfv3_outlines/200um,brainmaps \
	  --allen_ccfv3_dir=$(SHARED_DATA)/allen_ccfv3_200um \
	  --brainmaps_dir=$(SHARED_DATA)/brainmaps

# Train the shipped model's recipe (plane-v1, holdout) on the phantom, the real atlases and
# their outlines (make datasets first; ~50 min on 2 CPU cores); FLAGFILE picks another
# recipe or experiment (see configs/).
FLAGFILE ?= configs/plane_v1.flags
train: install
	$(BIN)/brainview-train --flagfile=$(FLAGFILE) --data_dir=$(DATA_DIR)

# Classify SCANS with MODEL (a shipped model's name, or a model.keras):
#   make classify SCANS=/path/to/scans [MODEL=runs/.../model.keras]
# (OUT: predictions.csv, cams.h5, sorted/ by answer, review/index.html)
SCANS ?= $(RUNS)/sample_scans
MODEL ?= plane-v1
OUT ?= $(RUNS)/classify
classify: install
	mkdir -p $(OUT)
	$(BIN)/brainview-classify-dir $(SCANS) $(OUT)/predictions.csv --model=$(MODEL) \
	  --cams=$(OUT)/cams.h5 --resume --sort_into=$(OUT)/sorted
	$(BIN)/brainview-render-cams $(SCANS) $(OUT)/cams.h5 $(OUT)/review \
	  --csv=$(OUT)/predictions.csv --review --count=60

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

lint: dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(RUNS) build *.egg-info .pytest_cache .ruff_cache
