# The two commands of the README: `make run` and `make test`.
# Everything else here is what they are made of, and what CI calls.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# The official AsyncAPI parser (npm), which the tests run on /asyncapi.json.
ASYNCAPI       := tests/asyncapi
ASYNCAPI_STAMP := $(ASYNCAPI)/node_modules/.installed-stamp

.PHONY: run test lint typecheck check bench clean asyncapi-parser

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

## Create the virtual environment, install, and start the demo on http://127.0.0.1:8000
run: $(STAMP)
	$(BIN)/polyport demo

## Create the virtual environment if needed and run the whole test suite
test: $(STAMP) asyncapi-parser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## The exact versions of tests/asyncapi/package-lock.json (install scripts off). Without
## npm the AsyncAPI validation test skips, and fails in CI (POLYPORT_REQUIRE_SERVICES=1).
asyncapi-parser:
	@if command -v npm >/dev/null 2>&1; then $(MAKE) -s --no-print-directory $(ASYNCAPI_STAMP); \
	else echo "npm not found: tests/http/test_asyncapi.py cannot validate /asyncapi.json"; fi

$(ASYNCAPI_STAMP): $(ASYNCAPI)/package-lock.json
	SCARF_ANALYTICS=false npm ci --prefix $(ASYNCAPI) --ignore-scripts --no-audit --no-fund
	@touch $(ASYNCAPI_STAMP)

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
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build dist $(ASYNCAPI)/node_modules
