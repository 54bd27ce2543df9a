# Quick start: `make demo` and `make test` on a fresh clone (only Python 3.10+ and make needed).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit unit-no-speedups venv bench fuzz soak clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[test,server,speedups]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

lint: $(STAMP)
	$(BIN)/ruff check m2m_guard tests examples benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy --strict m2m_guard

unit: $(STAMP)
	$(BIN)/python -m pytest

# The suites that judge parsing and verification, again with the [speedups] extra turned off:
# behaviour must be the same with and without it.
NO_SPEEDUPS_TESTS := tests/fuzz tests/attacks tests/test_vectors.py \
	tests/test_claims_and_keys_edges.py tests/test_scopes_and_token.py tests/test_speedups.py

unit-no-speedups: $(STAMP)
	M2M_GUARD_SPEEDUPS=off $(BIN)/python -m pytest -q $(NO_SPEEDUPS_TESTS)

test: lint typecheck unit unit-no-speedups

# Not part of `make test`: side-by-side benchmarks (benchmark-only dependencies in the bench
# extra), a long fuzz run (Hypothesis properties and schemathesis against the local issuer), and
# a bounded soak against a real server.
BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[test,server,speedups,bench]"
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks.run

fuzz: $(STAMP)
	$(BIN)/python -m pytest tests/fuzz tests/issuer/test_schemathesis.py --hypothesis-profile=fuzz -q

soak: $(STAMP)
	$(BIN)/python -m tests.soak

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
