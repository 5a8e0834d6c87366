# The two commands a newcomer needs: `make demo` and `make test`. Both create .venv and install.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# The Dagster instance lives in this folder (dagster.yaml: SQLite storage under .local/dagster).
export DAGSTER_HOME := $(CURDIR)

.PHONY: install demo test lint dev sandbox clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

## Full sync of the demo school against the local simulators (embedded SQLite, no server).
demo: install
	$(BIN)/python -m sync_pipelines.demo

## Every check: lint, format, Dagster definitions, and the test suite (SQLite and PostgreSQL).
test: install lint
	$(BIN)/dagster definitions validate -w workspace.yaml
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## The Dagster UI, with the demo school's simulators running beside it.
dev: install
	$(BIN)/python -m sync_pipelines.sandbox & trap "kill $$!" EXIT; $(BIN)/dagster dev -w workspace.yaml

## The Zoho simulator alone, in the foreground.
sandbox: install
	$(BIN)/python -m sync_pipelines.sandbox

clean:
	rm -rf .local
