# Two commands for a newcomer: `make run` (the gateway) and `make test` (every test and lint).
# A first `make run` should take seconds, so it installs only what running needs, without
# compiling every module ahead (Python compiles what it imports), into a venv that borrows
# this Python's pip when it has one (`pip --python`, pip 22.3+) instead of copying pip in. The
# dev tools (pytest, mypy, playwright...), and pip inside the venv for the tests that call
# it, come with the first `make test`. Each set has its own stamp.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.run-stamp
DEV_STAMP := $(VENV)/.dev-stamp
PIP_FLAGS := --quiet --disable-pip-version-check
# $(call pip_install,ARGS): the venv's own pip if it has one, else this Python's, into the venv
pip_install = if [ -x $(BIN)/pip ]; then $(BIN)/python -m pip install $(PIP_FLAGS) $(1); \
	else $(PYTHON) -m pip --python $(BIN)/python install $(PIP_FLAGS) $(1); fi
PYTEST_ARGS ?=

.PHONY: install install-dev run test lint typecheck unit bench clean

$(BIN)/python:
	if $(PYTHON) -m pip --python $(PYTHON) --version >/dev/null 2>&1; then \
		$(PYTHON) -m venv --without-pip $(VENV); \
	else \
		$(PYTHON) -m venv $(VENV); \
	fi

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(call pip_install,--no-compile -e .)
	touch $(RUN_STAMP)

$(DEV_STAMP): pyproject.toml $(RUN_STAMP)
	[ -x $(BIN)/pip ] || $(BIN)/python -m ensurepip --default-pip >/dev/null
	$(BIN)/python -m pip install $(PIP_FLAGS) -e '.[dev]'
	touch $(DEV_STAMP)

install: $(RUN_STAMP)

install-dev: $(DEV_STAMP)

run: install
	$(BIN)/lmgate serve --demo-fallback

lint: install-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: install-dev
	$(BIN)/mypy

unit: install-dev
	$(BIN)/pytest $(PYTEST_ARGS)

test: lint typecheck unit

bench: install-dev
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
