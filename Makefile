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

.PHONY: run test install system-deps data train serve ui bench bench-smoke lint clean-venv

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip 2>&1 | $(PIP_QUIET)
	$(BIN)/python -m pip install -q -r requirements.lock 2>&1 | $(PIP_QUIET)
	$(BIN)/python -m pip install -q --no-deps -e . 2>&1 | $(PIP_QUIET)
	@touch $(STAMP)

install: $(STAMP)

# Debian packages used by the tests: Chromium (browser test), Fashion-MNIST IDX files (IDX reader test), wrk (load).
SYSTEM_PACKAGES := chromium dataset-fashion-mnist wrk
system-deps:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

data: install
	dvc repro prepare
	ocr data info

# The three model families, each a DVC stage tracked as one MLflow run (browse with `ocr ui`).
train: data
	dvc repro train_base_cnn train_svm train_improved_cnn
	dvc metrics show

run: data
	@echo "Raw data: data/raw/mnist (verified cache); processed versions: data/processed/{v2.0,v3.0} (DVC-tracked)."

# The OCR service alone: page at http://$(HOST):$(PORT)/, API docs at /docs. It serves
# models:/OCR-Production-Model@production (cached locally), or OCR_MODEL_PATH when set.
HOST ?= 127.0.0.1
PORT ?= 8000
serve: install
	ocr serve --host $(HOST) --port $(PORT)

test: install system-deps
	$(BIN)/python -m pytest -q

# Benchmarks (training, inference, service, main job): results in benchmarks/results/, table in README.md.
bench: install system-deps
	$(BIN)/python -m benchmarks all

bench-smoke: install system-deps
	$(BIN)/python -m benchmarks all --smoke

lint: install
	$(BIN)/ruff check cnn_ocr app tests benchmarks

clean-venv:
	rm -rf $(VENV)
