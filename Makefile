# The two commands of the README: `make run` and `make test`.
# Everything else here is what they are made of, and what CI calls.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test lint typecheck check bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

## Create the virtual environment, install, and start the demo on http://127.0.0.1:8000
run: $(STAMP)
	$(BIN)/polyport demo

## Create the virtual environment if needed and run the whole test suite
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

## The REST benchmark (see docs/benchmarks.md)
bench: $(STAMP)
	$(BIN)/polyport bench rest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build dist
