# Each target creates .venv on first use, so `make demo` and `make test` work from a fresh clone.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.rlplast-installed

.PHONY: install demo test test-slow check lint bench clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# A CPU build of torch (no CUDA download on CPU machines); any torch 2.2–2.14.1 works.
	$(PY) -m pip install -q "torch==2.13.0"
	# The ray extra too, so that the test suite runs the real local-Ray sweep test instead of skipping it.
	$(PY) -m pip install -q -e ".[dev,ray]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/rlplast compare configs/quickstart.yaml --seeds 5 --engine population --out sweeps/quickstart

test: $(STAMP)
	$(PY) -m pytest

test-slow: $(STAMP)
	$(PY) -m pytest -m slow

lint: $(STAMP)
	$(VENV)/bin/ruff check rlplast agents envs tests benchmarks
	$(VENV)/bin/ruff format --check rlplast agents envs tests benchmarks
	$(VENV)/bin/mypy rlplast agents envs

check: lint test

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
