# Quick start: `make run` trains the default job, `make test` runs the suite.
# Both create .venv and install what they need from the package registry.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
ARGS   ?=

.PHONY: run test bench clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "dlrunner needs Python >= 3.10"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[dev]"
	@touch $@ $(VENV)/.installed

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[bench]"
	@touch $@ $(VENV)/.installed

run: $(VENV)/.installed
	$(BIN)/dlrun $(ARGS)

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q -n 2 --durations=25 $(ARGS)

bench: $(VENV)/.installed-bench
	$(BIN)/python bench/run.py $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
