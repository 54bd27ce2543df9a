"""docs/security.md publishes numbers from the test suite; they must match it."""

from __future__ import annotations

from pathlib import Path

from .evidence import DOC, EVIDENCE, FAULTS, published, render_evidence_table, render_fault_table

ROOT = Path(__file__).resolve().parents[1]
STALE = "docs/security.md is stale: run `python -m tests.evidence --write`"


def test_fault_table_is_current() -> None:
    assert published(DOC.read_text(encoding="utf-8"), FAULTS) == render_fault_table(), STALE


def test_evidence_table_is_current() -> None:
    assert published(DOC.read_text(encoding="utf-8"), EVIDENCE) == render_evidence_table(), STALE


def test_security_policy_names_a_private_reporting_channel() -> None:
    policy = (ROOT / "SECURITY.md").read_text(encoding="utf-8")
    assert "https://github.com/m2m-guard/m2m-guard/security/advisories/new" in policy
    assert "docs/security.md" in policy
    for placeholder in ("TODO", "TBD", "example.com", "security@"):
        assert placeholder not in policy
