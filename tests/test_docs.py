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


def _section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README,
                      re.DOTALL | re.MULTILINE)
    assert match is not None, title
    return match.group(1)


def test_the_rules_example_runs_and_means_what_it_says() -> None:
    """README's "Rules beyond scopes" example, executed, on tokens of the seed's client."""
    from m2m_guard import AccessDenied, AccessToken, InsufficientScope

    [code] = re.findall(r"```python\n(.*?)```", _section("Rules beyond scopes"), re.DOTALL)
    namespace: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - our own README

    def token(environment: str, scopes: tuple[str, ...] = ("deploy:applications",),
              client: str = "m2morg_68315758685323697", **custom: str) -> AccessToken:
        claims = {"iss": "https://yourenv.scalekit.dev", "client_id": client, "exp": 2**31,
                  "custom_claims": {"environment": environment, **custom}}
        return AccessToken.from_claims(claims, frozenset(scopes), algorithm="RS256",
                                       key_id=None, fingerprint="0" * 16)

    def outcome(rule_name: str, access: AccessToken) -> str:
        try:
            namespace[rule_name].requirement.check(access)  # type: ignore[attr-defined]
        except AccessDenied as exc:
            return f"denied {exc.rule}"
        except InsufficientScope as exc:
            return f"scope {' '.join(exc.required)}"
        return "ok"

    assert outcome("production_only", token("production_us")) == "ok"
    assert outcome("production_only", token("production")) == \
        "denied claim:custom_claims.environment"
    assert outcome("production_any_region", token("production_eu")) == "ok"
    assert outcome("platform_clients", token("production")) == "ok"
    assert outcome("platform_clients", token("production", client="m2morg_1")) == \
        "denied clients"
    assert outcome("production_deploy", token("production_us", scopes=())) == \
        "scope deploy:applications"
    assert outcome("release_managers", token("production", service="release")) == "ok"
    assert outcome("release_managers", token("production", scopes=("admin:platform",))) == "ok"
    assert outcome("release_managers", token("production")) == \
        "denied any_of(scopes:admin:platform, release-service)"
