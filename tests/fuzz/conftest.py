"""Fuzz properties count the examples they really ran; the count is printed after the run."""

from __future__ import annotations

from collections import Counter
from typing import Any

EXAMPLES: Counter[str] = Counter()


def counted(name: str) -> None:
    """Record one example of property `name`."""
    EXAMPLES[name] += 1


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not EXAMPLES:
        return
    terminalreporter.section("fuzz examples run")
    for name, count in sorted(EXAMPLES.items()):
        terminalreporter.write_line(f"{name}: {count}")
    terminalreporter.write_line(f"total: {sum(EXAMPLES.values())} examples over "
                                f"{len(EXAMPLES)} properties")
