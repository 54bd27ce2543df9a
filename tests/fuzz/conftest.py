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


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    """A long fuzz run (the "fuzz" profile) may take minutes per property: lift the suite's
    per-test timeout for these properties only, and only in such a run."""
    import pytest
    from hypothesis import settings

    if settings.default.max_examples <= 1000:
        return
    for item in items:
        if "fuzz" in item.nodeid.split("::", 1)[0].split("/"):
            item.add_marker(pytest.mark.timeout(3600))
