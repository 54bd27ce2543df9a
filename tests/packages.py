"""The test extra's packages, and what a test does when one is missing: the one place that decides.

A test that needs a package of the test extra imports it with `require_package` (at module level
for a whole module). Installed: the module is returned. Missing: the test fails loudly with the
install line, because `make test` installs every package of the extra and nothing may skip there.
It skips, with the exact reason, in two cases only:

- the test extra's own marker leaves the package out of this Python (connectrpc before 3.11);
- this is noxfile.py's minimum-versions session (it sets ``M2M_TEST_MINIMUM_VERSIONS``) and
  pyproject.toml's ``[tool.m2m-guard.minimum-versions.left-out]`` names the package: it cannot be
  installed beside the core dependencies at their declared minimums, for the reason written there.
"""

from __future__ import annotations

import importlib
import os
import platform
import sys
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # the test extra installs tomli on Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
MINIMUM_VERSIONS = "M2M_TEST_MINIMUM_VERSIONS"


@cache
def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


@cache
def extra_requirements() -> dict[str, Requirement]:
    """The test extra's requirements by canonical name."""
    lines = pyproject()["project"]["optional-dependencies"]["test"]
    return {canonicalize_name(req.name): req for req in map(Requirement, lines)}


@cache
def left_out() -> dict[str, str]:
    """The packages the minimum-versions session leaves out, by canonical name, with the reason."""
    table = pyproject()["tool"]["m2m-guard"]["minimum-versions"]["left-out"]
    return {canonicalize_name(name): reason for name, reason in table.items()}


def absence_reason(distribution: str, *, minimum_versions: bool) -> str | None:
    """Why `distribution` may be missing here (the skip reason), or None: it must be installed."""
    name = canonicalize_name(distribution)
    requirement = extra_requirements().get(name)
    if requirement is None:
        raise LookupError(f"{distribution} is not a package of the test extra in pyproject.toml: "
                          f"add it there before a test relies on it")
    if requirement.marker is not None and not requirement.marker.evaluate():
        return (f"{distribution} is not for this Python ({platform.python_version()}): the test "
                f"extra installs it only where {requirement.marker}")
    if minimum_versions and name in left_out():
        return (f"{distribution} is left out of the minimum-versions session: {left_out()[name]} "
                f"(pyproject.toml, [tool.m2m-guard.minimum-versions.left-out])")
    return None


# The public modules of m2m_guard that import a package of their own extra at import time.
MODULE_PACKAGES = {"m2m_guard.mcp": "mcp", "m2m_guard.fastmcp": "fastmcp"}


def import_public_module(name: str) -> ModuleType:
    """Import a public module of m2m_guard, first requiring the package it is built on."""
    if name in MODULE_PACKAGES:
        require_package(MODULE_PACKAGES[name])
    return importlib.import_module(name)


def require_package(module: str, distribution: str | None = None) -> ModuleType:
    """Import `module`, of the test extra's package `distribution` (default: the same name).

    Missing, it skips the calling test or module only where `absence_reason` gives a reason, and
    fails it everywhere else."""
    distribution = distribution or module
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name != module.split(".")[0]:
            raise  # the package is there but something it imports is not: a real failure
    frame = sys._getframe(1)
    while frame.f_back is not None and frame.f_code.co_filename == __file__:
        frame = frame.f_back  # the test module that asked, not import_public_module
    caller = Path(frame.f_code.co_filename).resolve()
    where = caller.relative_to(ROOT).as_posix() if caller.is_relative_to(ROOT) else str(caller)
    reason = absence_reason(distribution, minimum_versions=bool(os.environ.get(MINIMUM_VERSIONS)))
    if reason is None:
        pytest.fail(f"{where}: {distribution} is not installed, but the test extra installs it "
                    f"and the tests that need it must run (pip install -e '.[test]')",
                    pytrace=False)
    pytest.skip(f"{where}: {reason}", allow_module_level=True)
