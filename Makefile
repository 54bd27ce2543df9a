# Quick start: `make demo` and `make test` on a fresh clone (only Python 3.10+ and make needed).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit docs docs-serve wheel-check venv bench fuzz soak clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[test,server,docs,release]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

lint: $(STAMP)
	$(BIN)/ruff check m2m_guard tests examples benchmarks docs noxfile.py

typecheck: $(STAMP)
	$(BIN)/mypy --strict m2m_guard

unit: $(STAMP)
	$(BIN)/python -m pytest

# The documentation site (mkdocs, Material, mkdocstrings): built with --strict, so a broken link
# or a missing reference fails. Output in site/ (ignored by git).
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

docs-serve: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

# Builds the sdist and wheel, checks them, installs the wheel into a clean venv outside the tree
# and runs the CLI and one request per adapter from there.
wheel-check: $(STAMP)
	$(BIN)/python -m tests.installed

test: lint typecheck unit docs wheel-check

# Not part of `make test`: side-by-side benchmarks (benchmark-only dependencies in the bench
# extra), a long fuzz run, and a bounded soak against a real server.
BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[test,server,bench]"
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks.run

fuzz: $(STAMP)
	$(BIN)/python -m pytest tests/fuzz --hypothesis-profile=fuzz -q

soak: $(STAMP)
	$(BIN)/python -m tests.soak

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info site .nox
