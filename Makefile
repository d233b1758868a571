# `make test` is the one command that sets up what the suite needs and runs all of it.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Test processes: one per core (pytest-xdist). A module's tests stay in one
# process, in order (--dist loadscope), as its shared fixtures expect.
# PYTEST_ARGS=-n0 runs them all in one.
PYTEST_ARGS ?= -n auto --dist loadscope

.PHONY: test lint typecheck unit bench bench-deps clean screenshots

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check jobsched tests bench main.py
	$(BIN)/ruff format --check jobsched tests bench main.py

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q $(PYTEST_ARGS)

test: lint typecheck unit

# The dashboard's screenshots in docs/img, taken by its browser tests.
screenshots: $(STAMP)
	JOBSCHED_SCREENSHOTS=docs/img $(BIN)/pytest -q tests/test_dashboard_browser.py

bench-deps: $(STAMP)
	$(BIN)/pip install -q -e '.[test,bench]'

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
