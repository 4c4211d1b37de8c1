# The README's two commands: `make run` and `make test`.
# Both install what is missing (OS packages, .venv, the project) first.

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
STATE_DIR ?= $(CURDIR)/state
TOXENVS ?= py311,lint,type,ansible

# Interpreters installed with pyenv, for tox's py310..py313 (shims alone are not found).
PYENV_BINS := $(shell ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.1[0-3].*/bin 2>/dev/null | tr '\n' ':')

.PHONY: run test test-all os-packages venv lint type bench faults clean vendor

os-packages:
	@scripts/ensure-os-packages.sh "$(PYTHON)"

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	$(MAKE) os-packages
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt -r requirements-dev.txt tox==4.67.15
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

venv: os-packages $(STAMP)

run: venv
	$(BIN)/pt up --state-dir "$(STATE_DIR)"

test: venv
	$(BIN)/tox -e $(TOXENVS)

test-all: venv
	PATH="$(PYENV_BINS)$$PATH" $(BIN)/tox

lint: venv
	$(BIN)/tox -e lint

type: venv
	$(BIN)/tox -e type

bench: venv
	$(BIN)/python -m bench

# kill -9 the master, a worker, Redis and PostgreSQL in turn under trading load, then
# check every order exactly once and cash to the cent (scripts/faults.py; < 10 minutes).
# Then two masters: the active one killed with SIGKILL, then frozen past its lease. Then a
# PostgreSQL streaming replica: the primary killed, the replica promoted.
faults: venv
	$(BIN)/python scripts/faults.py --rounds 2 --phase-seconds 10 --traders 6
	$(BIN)/python scripts/faults.py --rounds 2 --phase-seconds 10 --traders 6 --standby
	$(BIN)/python scripts/faults.py --rounds 1 --phase-seconds 10 --traders 6 --pg-replica
	$(BIN)/python scripts/faults.py --rounds 2 --phase-seconds 10 --traders 6 --redis-failover
# The web client's third-party code (uPlot), from web/package-lock.json, into the package.
VENDOR := papertrader/web/static/vendor/uplot
vendor:
	cd web && npm ci --ignore-scripts --no-audit --no-fund
	mkdir -p $(VENDOR)
	cp web/node_modules/uplot/dist/uPlot.iife.min.js web/node_modules/uplot/dist/uPlot.min.css \
	   web/node_modules/uplot/LICENSE $(VENDOR)/

clean:
	rm -rf $(VENV) .tox .pytest_cache .mypy_cache .ruff_cache
