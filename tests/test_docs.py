"""The README stays true: its Python snippets compile and its table lists every option."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest

from m2m_guard import GuardSettings
from m2m_guard.settings import ENV_PREFIX

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
SNIPPETS = re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL)


def test_readme_has_snippets() -> None:
    assert len(SNIPPETS) >= 3


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[f"snippet{i}" for i in range(len(SNIPPETS))])
def test_readme_snippets_compile(snippet: str) -> None:
    compile(snippet, "README.md", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


def test_readme_table_lists_every_option() -> None:
    fields = [f.name for f in dataclasses.fields(GuardSettings)]
    for name in fields:
        row = f"| `{ENV_PREFIX}{name.upper()}` | `{name}` |"
        assert row in README, f"README configuration table lacks {name}"
    rows = re.findall(rf"^\| `{ENV_PREFIX}([A-Z_]+)` \|", README, flags=re.MULTILINE)
    assert sorted(rows) == sorted(name.upper() for name in fields)
