# The two commands a user needs: `make run` (the whole lifecycle) and `make test` (the whole test suite).
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(BIN):$(PATH)
# Drop pip's notes about unused local package folders; keep everything else it says.
PIP_QUIET := { grep -v "is ignored: it is neither a file nor a directory" || true; }

.PHONY: run lifecycle test install system-deps runtime-deps data train serve ui bench bench-smoke lint clean-venv

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip 2>&1 | $(PIP_QUIET)
	$(BIN)/python -m pip install -q -r requirements.lock 2>&1 | $(PIP_QUIET)
	$(BIN)/python -m pip install -q --no-deps -e . 2>&1 | $(PIP_QUIET)
	@touch $(STAMP)

# Browser assets (Swagger UI, ReDoc, axe-core) from pinned, checksum-verified npm tarballs (needs npm).
install: $(STAMP) runtime-deps
	$(BIN)/python -m app.vendor

# Debian packages, installed with apt-get when missing (as root, or through sudo).
# Used by the tests: Chromium (browser tests), Fashion-MNIST IDX files (IDX reader, held-out non-digits), wrk (load),
# PostgreSQL (shared stores), Hershey single-stroke fonts, a handwriting TTF font and Font Awesome pictograms
# (generated non-digits and held-out families).
SYSTEM_PACKAGES := chromium dataset-fashion-mnist wrk postgresql hershey-fonts-data fonts-dkg-handwriting \
                   fonts-font-awesome
APT_INSTALL = missing=$$(for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi
system-deps:
	@$(call APT_INSTALL,$(SYSTEM_PACKAGES))

# npm (for `make install`'s browser assets): Debian's package when the machine has no npm at all.
runtime-deps:
	@command -v npm >/dev/null 2>&1 || { $(call APT_INSTALL,npm); }

data: install
	dvc repro prepare
	ocr data info

# The three model families, each a DVC stage tracked as one MLflow run (browse with `ocr ui`).
train: data
	dvc repro train_base_cnn train_svm train_improved_cnn
	dvc metrics show

# The main job. PROFILE=full (default): `dvc repro` runs the whole lifecycle (data -> three models -> tuning
# -> ensemble of the best CNN runs -> selection/registration/ONNX export -> report) into the project's stores, then the service starts.
# PROFILE=quick: the same lifecycle on small slices (params profile `quick`) in its own stores under outputs/quick.
PROFILE ?= full
QUICK_DIR := outputs/quick
QUICK_ENV := MLFLOW_TRACKING_URI=sqlite:///$(CURDIR)/$(QUICK_DIR)/mlflow.db OCR_MLFLOW_ARTIFACT_ROOT=$(CURDIR)/$(QUICK_DIR)/artifacts
QUICK := $(QUICK_ENV) ocr
Q := --set profile=quick

lifecycle: data
ifeq ($(PROFILE),quick)
	@mkdir -p $(QUICK_DIR)/metrics
	$(QUICK) train --model base_cnn $(Q) --metrics-out $(QUICK_DIR)/metrics/base_cnn.json
	$(QUICK) train --model svm $(Q) --metrics-out $(QUICK_DIR)/metrics/svm.json
	$(QUICK) train --model improved_cnn $(Q) --metrics-out $(QUICK_DIR)/metrics/improved_cnn.json
	$(QUICK) tune $(Q)
	$(QUICK) ensemble $(Q) --metrics-out $(QUICK_DIR)/metrics/ensemble.json
	$(QUICK) select $(Q) --summary-out $(QUICK_DIR)/metrics/production.json
	$(QUICK) export --alias production $(Q) --out $(QUICK_DIR)/production
	$(QUICK) report $(Q) --out $(QUICK_DIR)/README_experiments.md
	$(QUICK) models list
	@echo "Quick profile: tracking store $(QUICK_DIR)/mlflow.db, report $(QUICK_DIR)/README_experiments.md."
	@echo "Browse runs: $(QUICK_ENV) ocr ui"
else
	dvc repro
	dvc metrics show
	ocr models list
	@echo "Report: ml/README_experiments.md. Production model exported to models/production/."
	@echo "Browse runs and the registry: ocr ui   (MLflow UI on http://127.0.0.1:5000, venv active)"
endif

run: lifecycle
	@echo "Starting the OCR service on http://$(HOST):$(PORT)/ (API docs at /docs; Ctrl-C to stop)"
ifeq ($(PROFILE),quick)
	OCR_MODEL_PATH=$(QUICK_DIR)/production ocr serve --host $(HOST) --port $(PORT)
else
	OCR_RECOGNIZER_PATH=$(RECOGNIZER) ocr serve --host $(HOST) --port $(PORT)
endif

# The OCR service alone: page at http://$(HOST):$(PORT)/, API docs at /docs. It serves
# models:/OCR-Production-Model@production (cached locally), or OCR_MODEL_PATH when set, and reads touching
# digits with the line recognizer RECOGNIZER (the service starts without it when none is registered).
HOST ?= 127.0.0.1
PORT ?= 8000
RECOGNIZER ?= models:/OCR-Line-Recognizer@production
serve: install
	OCR_RECOGNIZER_PATH=$(RECOGNIZER) ocr serve --host $(HOST) --port $(PORT)

# The MLflow UI on the project's tracking store (http://127.0.0.1:5000).
ui: install
	ocr ui

# The whole suite; under CI (`CI` set, as .ci/run does) a missing tool fails its tests, and the quick lifecycle
# runs end to end and its exported model is served and asked about a real MNIST test digit (tests/test_lifecycle.py).
test: system-deps install
	$(BIN)/ruff check cnn_ocr app tests benchmarks
	$(BIN)/python -m pytest -q
	@if [ -n "$$CI" ]; then $(BIN)/python -m pytest -q -m lifecycle tests/test_lifecycle.py; fi

# Benchmarks (training, inference, service, main job): results in benchmarks/results/, table in README.md.
bench: install system-deps
	$(BIN)/python -m benchmarks all

bench-smoke: install system-deps
	$(BIN)/python -m benchmarks all --smoke

lint: install
	$(BIN)/ruff check cnn_ocr app tests benchmarks

clean-venv:
	rm -rf $(VENV)
