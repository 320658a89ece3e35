# Every target works on a fresh clone with only Python 3.11+.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: all venv test check lint types demo bench schemas clean

all: check

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

## make test: set up the virtual environment and run the whole suite (unit + integration)
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

types: $(STAMP)
	$(BIN)/mypy

## make check: lint, types, tests (what CI runs)
check: lint types test

## make demo: the whole pipeline on the embedded broker and database
demo: $(STAMP)
	$(BIN)/vectoros demo $(DEMO_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

schemas: $(STAMP)
	$(BIN)/vectoros schemas export

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
