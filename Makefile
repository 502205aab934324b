# rnlib: every target runs inside .venv, which `make setup` creates and keeps in sync with pyproject.toml.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PY     := .venv/bin/python
RUFF   := .venv/bin/ruff
STAMP  := .venv/.installed
LINTED := rnlib tests benchmarks
# Extra flags for `pip install` (e.g. an index for CPU-only torch wheels); empty by default.
PIP_FLAGS ?=

.PHONY: help setup lint format check test golden study smoke readme report bench clean

help:  ## list targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

setup: $(STAMP)  ## create .venv and install rnlib[dev] (no-op when up to date)

$(PY):
	python3 -m venv .venv

# Reinstall only when pyproject.toml changed since the last successful install.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install $(PIP_FLAGS) -e '.[dev]'
	$(PY) -m rnlib.training.fused
	touch $@

lint: setup  ## ruff lint + format check
	$(RUFF) check $(LINTED)
	$(RUFF) format --check $(LINTED)

format: setup  ## apply ruff format and safe fixes
	$(RUFF) format $(LINTED)
	$(RUFF) check --fix $(LINTED)

check: setup lint  ## the fast loop: lint, then every test not marked slow (under 2 minutes on 2 cores)
	$(PY) -m pytest -q -m "not slow"

test: setup lint  ## lint, then the whole test suite (what CI runs), with its 15 slowest tests
	$(PY) -m pytest -q --durations=15

golden: setup  ## regenerate tests/golden after a deliberate change of NUMERICS_VERSION or ANALYSIS_VERSION
	MKL_CBWR=AVX2 $(PY) tests/golden/fingerprints.py --write

study: setup  ## run every version notebook with parameters/default.run.yaml
	$(PY) -m rnlib run parameters/default.run.yaml

smoke: setup  ## tiny end-to-end run with parameters/smoke.run.yaml
	$(PY) -m rnlib run parameters/smoke.run.yaml

readme: setup  ## regenerate README results from executed/default
	$(PY) -m rnlib readme

RUN ?= executed/default
report: setup  ## static HTML of a run (RUN=executed/default) into RUN/html; open RUN/html/index.html
	$(PY) -m rnlib report $(RUN)

bench: setup  ## run every benchmark script
	@set -e; for f in benchmarks/*.py; do [ -e "$$f" ] || continue; echo "== $$f"; $(PY) "$$f"; done

clean:  ## remove build and tool caches (keeps .venv and the result cache .cache/rnlib)
	rm -rf .pytest_cache .ruff_cache *.egg-info build dist executed/smoke executed/interactive
	find . -path ./.venv -prune -o -name __pycache__ -type d -exec rm -rf {} +
