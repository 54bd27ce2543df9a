"""The documentation site (mkdocs.yml, docs/): every page is in the navigation, the reference
covers exactly the public modules, the configuration table is generated from `GuardSettings`, and
the Python examples of every page compile. `make docs` builds the site with ``--strict``."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from m2m_guard import GuardSettings
from tests.packages import import_public_module

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PUBLIC_MODULES = ["m2m_guard", "m2m_guard.asgi", "m2m_guard.wsgi", "m2m_guard.starlette",
                  "m2m_guard.fastapi", "m2m_guard.flask", "m2m_guard.django", "m2m_guard.drf",
                  "m2m_guard.health", "m2m_guard.events", "m2m_guard.otel", "m2m_guard.testing",
                  "m2m_guard.local_issuer", "m2m_guard.mcp", "m2m_guard.fastmcp",
                  "m2m_guard.dpop"]


def _hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("m2m_docs", DOCS / "hooks" / "m2m_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _config() -> dict[str, object]:
    return dict(yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8")))


def _nav_pages(nav: object) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [page for item in nav for page in _nav_pages(item)]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in _nav_pages(value)]
    return []


def _pages() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if "hooks" not in p.relative_to(DOCS).parts)


def test_every_page_is_in_the_navigation_and_every_entry_exists() -> None:
    nav = _nav_pages(_config()["nav"])
    assert sorted(nav) == sorted(p.relative_to(DOCS).as_posix() for p in _pages())


def test_the_reference_covers_exactly_the_public_modules() -> None:
    documented = []
    for page in sorted((DOCS / "reference").glob("*.md")):
        documented += re.findall(r"^::: (\S+)$", page.read_text(encoding="utf-8"), re.MULTILINE)
    assert sorted(documented) == sorted(PUBLIC_MODULES)


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_each_public_module_has_a_docstring_and_public_names(name: str) -> None:
    module = import_public_module(name)
    assert module.__doc__, f"{name} has no module docstring for its reference page"
    assert hasattr(module, "__all__"), f"{name} does not declare its public names"


def test_the_configuration_table_is_generated_from_the_settings() -> None:
    table = _hooks().settings_table()
    rows = re.findall(r"^\| `(M2M_GUARD_[A-Z_]+)` \| `([a-z_]+)` \|", table, re.MULTILINE)
    fields = [field.name for field in dataclasses.fields(GuardSettings)]
    assert rows == [(f"M2M_GUARD_{name.upper()}", name) for name in fields]
    assert "| `M2M_GUARD_LEEWAY` | `leeway` | `float` | `30s` |" in table


def test_the_configuration_table_refuses_an_undocumented_option(
        monkeypatch: pytest.MonkeyPatch) -> None:
    hooks = _hooks()
    section = hooks.readme_section("Configuration")
    without = "\n".join(line for line in section.splitlines()
                        if not line.startswith("| `M2M_GUARD_LEEWAY`"))
    monkeypatch.setattr(hooks, "readme_section", lambda title: without)
    with pytest.raises(hooks.DocsError, match="leeway"):
        hooks.settings_table()


def test_links_outside_the_docs_point_at_the_repository() -> None:
    hooks = _hooks()
    text = hooks.rewrite_links("[r](../README.md#security) [d](django.md) [x](https://a.b/)\n"
                               "```\n[kept](../README.md)\n```\n", "", DOCS)
    assert text == ("[r](https://github.com/m2m-guard/m2m-guard/blob/main/README.md#security) "
                    "[d](django.md) [x](https://a.b/)\n```\n[kept](../README.md)\n```\n")
    with pytest.raises(hooks.DocsError):
        hooks.rewrite_links("[gone](../no-such-file.md)", "", DOCS)
    assert hooks.from_readme("[o](docs/operations.md) [e](examples/demo.py)", "reference") == \
        "[o](../operations.md) [e](../../examples/demo.py)"


def _snippets() -> list[tuple[str, str]]:
    found = []
    for page in _pages():
        text = page.read_text(encoding="utf-8")
        for number, code in enumerate(re.findall(r"```python\n(.*?)```", text, re.DOTALL)):
            found.append((f"{page.relative_to(DOCS).as_posix()}#{number}", code))
    return found


@pytest.mark.parametrize(("where", "code"), _snippets(), ids=[w for w, _ in _snippets()])
def test_every_python_example_of_the_docs_compiles(where: str, code: str) -> None:
    compile(code, where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
