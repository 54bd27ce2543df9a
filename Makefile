# Quick start: `make demo` and `make test` on a fresh clone (only Python 3.10+ and make needed).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit unit-no-speedups docs docs-serve wheel-check venv node-sdk bench fuzz soak clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[test,server,speedups,emulator,docs,release]"
	touch $(STAMP)

venv: $(STAMP)

# The official Scalekit Node SDK for tests/issuer/test_scalekit_node.py, when npm exists (the
# tests say so when Node is missing, and fail in CI). One pinned package, no lock file kept.
NODE_DIR := tests/node
NODE_STAMP := $(NODE_DIR)/node_modules/.installed

$(NODE_STAMP): $(NODE_DIR)/package.json
	@if command -v npm >/dev/null 2>&1; then \
		npm install --prefix $(NODE_DIR) --no-audit --no-fund --no-package-lock --loglevel=error \
			&& touch $@; \
	else \
		echo "npm not found: the Node SDK tests will report that Node is missing"; \
	fi

node-sdk: $(NODE_STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

lint: $(STAMP)
	$(BIN)/ruff check m2m_guard tests examples benchmarks docs noxfile.py

typecheck: $(STAMP)
	$(BIN)/mypy --strict m2m_guard

unit: $(STAMP) node-sdk
	$(BIN)/python -m pytest

# The suites that judge parsing and verification, again with the [speedups] extra turned off:
# behaviour must be the same with and without it.
NO_SPEEDUPS_TESTS := tests/fuzz tests/attacks tests/test_vectors.py \
	tests/test_claims_and_keys_edges.py tests/test_scopes_and_token.py tests/test_speedups.py

# tests/fuzz/test_speedups.py compares the extra with the standard library, so it has nothing to
# compare here: it is left out rather than skipped (it runs in `unit`).
unit-no-speedups: $(STAMP)
	M2M_GUARD_SPEEDUPS=off $(BIN)/python -m pytest -q $(NO_SPEEDUPS_TESTS) \
		--ignore=tests/fuzz/test_speedups.py

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

test: lint typecheck unit unit-no-speedups docs wheel-check

# Not part of `make test`: side-by-side benchmarks (benchmark-only dependencies in the bench
# extra), a long fuzz run (Hypothesis properties and schemathesis against the local issuer), and
# a bounded soak against a real server.
BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[test,server,speedups,emulator,docs,release,bench]"
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks.run

fuzz: $(STAMP)
	$(BIN)/python -m pytest tests/fuzz tests/issuer/test_schemathesis.py --hypothesis-profile=fuzz -q

soak: $(STAMP)
	$(BIN)/python -m tests.soak

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info site .nox $(NODE_DIR)/node_modules
