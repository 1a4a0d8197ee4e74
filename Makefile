# Every target bootstraps .venv itself: on a fresh machine `make test` and `make demo` are all
# a person needs. The stamps re-run the install whenever pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test bench lint format clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.test-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

# torch==2.13.0 first: it resolves to the local CPU build, which the bench extra's range
# accepts; a bare range with no torch installed would pull GBs of CUDA packages.
$(VENV)/.bench-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	touch $@ $(VENV)/.test-installed

demo: $(VENV)/.test-installed
	$(BIN)/python -m xai_jax demo

test: $(VENV)/.test-installed
	$(BIN)/python -m pytest

bench: $(VENV)/.bench-installed
	$(BIN)/python benchmarks/run.py $(BENCH_ARGS)

lint: $(VENV)/.test-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.test-installed
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) demo_output .pytest_cache .ruff_cache
