# Every target works on a fresh clone with only Python 3.11+.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: all venv native lock browser test check lint types demo bench eval schemas clean

all: check

LOCK := requirements-dev.lock
UV_VERSION := 0.13.8

# Installs exactly what the lock pins (hash-checked), then this project itself without its
# dependencies: pip is all it needs, and pip comes with every Python.
$(STAMP): pyproject.toml requirements.lock $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r $(LOCK)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
	touch $(STAMP)

venv: $(STAMP)

## make native: the monitor's per-record path compiled with mypyc into .native/ (less CPU per
## record: README, Benchmarks; vectoros/native.py). Compiles only when the build does not match
## the sources (their contents, not file times); a stale or missing build is never used (the
## sources are). When this machine cannot compile (no C compiler, no Python headers, no mypyc,
## the C compiler fails) it says so (exit 3) and the sources run; code mypyc rejects fails.
native: $(STAMP)
	@$(BIN)/python -m vectoros.native ensure || [ $$? -eq 3 ]

## make lock: refresh the locks on purpose (newest versions pyproject.toml allows).
## requirements.lock: what the services run on (the Dockerfile); requirements-dev.lock: that,
## at the same versions, plus the test and lint tools (`make venv`, CI).
LOCK_FLAGS := --universal --python-version 3.11 --generate-hashes --custom-compile-command 'make lock'
lock:
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet uv==$(UV_VERSION)
	.venv-lock/bin/uv pip compile pyproject.toml --extra build $(LOCK_FLAGS) --upgrade -o requirements.lock
	.venv-lock/bin/uv pip compile pyproject.toml --extra build --extra dev $(LOCK_FLAGS) \
		-c requirements.lock -o $(LOCK)

## make browser: Debian's chromium for the dashboard's browser tests (Playwright drives it; no
## browser download). Installed with apt-get when missing and running as root.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the browser tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "the browser tests need Debian's chromium: sudo apt-get install chromium" >&2; exit 1; \
	  fi; }

## make test: set up the virtual environment and run the whole suite (unit + integration)
## (on the compiled build when there is one; then the pure core's unit tests on the sources too)
CORE_TESTS = $(shell grep -l -E 'consumer\.(partition|state|deal_codec|lifecycle|templates|rules|decode|changelog)' tests/unit/*.py)
test: $(STAMP) browser native
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	@if [ "$$($(BIN)/python -m vectoros.native status)" = "compiled (mypyc)" ]; then \
	  echo "the pure core's unit tests again, on the sources (VECTOROS_NATIVE=0)"; \
	  VECTOROS_NATIVE=0 $(BIN)/python -m pytest -q -p no:cacheprovider $(CORE_TESTS); \
	fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

types: $(STAMP)
	$(BIN)/mypy

## make check: lint, types, tests (what CI runs)
check: lint types test

## make demo: the whole pipeline on the embedded broker and database
demo: $(STAMP) native
	$(BIN)/vectoros demo $(DEMO_ARGS)

bench: $(STAMP) native
	$(BIN)/python -m bench $(BENCH_ARGS)

## make eval: train on a known-truth simulated history and report on its held-out period
## (EVAL_ARGS: e.g. --simulated 100000, or nothing but --png to use PostgreSQL's history)
EVAL_ARGS ?= --simulated 20000 --png eval/reliability.png
eval: $(STAMP)
	$(BIN)/vectoros evaluate $(EVAL_ARGS)

## make backtest: the revenue forecast's backtest on 12 simulated histories (seeds 13-24, scored
## together), checked against issue 15's targets (exit 1 when missed; about 4 min on 2 cores;
## BACKTEST_ARGS: e.g. "--simulated 2000 --seed 7" for one history, --simulated 4000)
.PHONY: backtest
BACKTEST_ARGS ?= --simulated 2000 --seed 13 --histories 12
backtest: $(STAMP)
	$(BIN)/vectoros forecast backtest --from 2024-07-01 --to 2025-10-01 --period quarter \
		--check $(BACKTEST_ARGS)

schemas: $(STAMP)
	$(BIN)/vectoros schemas export

clean:
	rm -rf $(VENV) .venv-lock .mypy_cache .pytest_cache .ruff_cache .native .native.tmp .native.lock
