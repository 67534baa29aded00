# Two entry points (README): `make serve` and `make test`. Each creates .venv and installs what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
MODEL ?= BAAI/bge-large-zh-v1.5
PRECISION ?= fp32

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.serve-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[export,serve,gateway,client]'
	touch $@

$(VENV)/.test-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@ $(VENV)/.serve-installed

.PHONY: serve test lint
serve: $(VENV)/.serve-installed  ## install, export MODEL (hub id or local dir), serve Triton + gateway on :30000
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/bge-serve --model '$(MODEL)' --precision $(PRECISION)

test: $(VENV)/.test-installed  ## install everything and run the whole suite (starts real tritonserver + gateway)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest

lint: $(VENV)/.test-installed
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
