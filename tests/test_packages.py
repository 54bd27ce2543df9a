"""tests/packages.py, the one rule for a missing test package: it fails the tests that need it,
and skips them, with the reason, only where pyproject.toml says the package cannot be there."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.packages import (
    MINIMUM_VERSIONS,
    ROOT,
    absence_reason,
    extra_requirements,
    left_out,
    pyproject,
    require_package,
)


def test_every_left_out_package_is_a_test_package_with_a_reason() -> None:
    assert left_out(), "pyproject.toml: [tool.m2m-guard.minimum-versions.left-out] is empty"
    core = {canonicalize_name(Requirement(line).name)
            for line in pyproject()["project"]["dependencies"]}
    for name, reason in left_out().items():
        assert name in extra_requirements(), f"{name} is left out but not in the test extra"
        assert name not in core, f"{name} is a core dependency: it cannot be left out"
        assert name.split("-")[0] in reason and "needs" in reason, reason


@pytest.mark.parametrize("name", ["mcp", "fastmcp", "scalekit-sdk-python", "schemathesis"])
def test_a_left_out_package_may_be_missing_only_in_the_minimum_versions_session(
        name: str) -> None:
    assert absence_reason(name, minimum_versions=False) is None
    reason = absence_reason(name, minimum_versions=True)
    assert reason is not None and reason.startswith(
        f"{name} is left out of the minimum-versions session: {left_out()[name]}")


def test_any_other_test_package_must_be_installed() -> None:
    for name in ("pytest", "fastapi", "hypercorn", "hypothesis"):
        assert absence_reason(name, minimum_versions=True) is None, name
    with pytest.raises(LookupError, match="not a package of the test extra"):
        absence_reason("numpy", minimum_versions=False)


def test_missing_outside_the_session_fails_and_inside_it_skips(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mcp", None)  # `import mcp` now raises ModuleNotFoundError
    monkeypatch.delenv(MINIMUM_VERSIONS, raising=False)
    with pytest.raises(pytest.fail.Exception,
                       match=r"tests/test_packages.py: mcp is not installed, but the test extra"):
        require_package("mcp")
    monkeypatch.setenv(MINIMUM_VERSIONS, "1")
    with pytest.raises(pytest.skip.Exception,
                       match=r"tests/test_packages.py: mcp is left out of the minimum-versions "
                             r"session: mcp 2\.3 .* needs anyio"):
        require_package("mcp")
    monkeypatch.setitem(sys.modules, "hypercorn", None)
    with pytest.raises(pytest.fail.Exception, match="hypercorn is not installed"):
        require_package("hypercorn")


def test_no_test_skips_for_a_missing_package_any_other_way() -> None:
    """One mechanism: a bare importorskip would skip silently in `make test` too."""
    offenders = [path.relative_to(ROOT).as_posix() for path in (ROOT / "tests").rglob("*.py")
                 if path.name != Path(__file__).name
                 and "importorskip" in path.read_text(encoding="utf-8")]
    assert offenders == []
