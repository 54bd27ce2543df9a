"""Attack tests by category (see test_*.py), each through a real Starlette app and key set."""
