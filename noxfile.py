"""The Python matrix: ``nox`` runs the test suite on every supported Python that is installed,
and once more with the lowest versions of the core dependencies that pyproject.toml declares.

    nox -l                    list the sessions
    nox                       all of them (a missing interpreter skips its session)
    nox -s tests-3.12         one Python
    nox -s minimum-versions   the declared minimums (starlette, PyJWT, cryptography, ...), without
                              the test packages that cannot be installed beside them
    nox -r ...                reuse the session's virtualenv from an earlier run

`make test` (what `.ci/run` runs) stays the one check of the development Python; this file is for
the versions around it. Extra arguments go to pytest: ``nox -s tests-3.13 -- -x tests/test_cli.py``.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

import nox
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # nox itself needs tomli on Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent
PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
EXTRAS = ".[test,server]"

nox.options.sessions = [f"tests-{version}" for version in PYTHONS] + ["minimum-versions"]
nox.options.error_on_missing_interpreters = False


def _find_pyenv_interpreters() -> None:
    """Put the real binaries of pyenv-installed Pythons on PATH: pyenv's shims answer only for
    the selected versions, so `python3.12` from a shim fails where the interpreter exists."""
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    if not root.is_dir():
        return
    found = []
    for version in PYTHONS:
        matches = sorted((p for p in root.glob(f"{version}.*/bin/python{version}") if p.is_file()),
                         key=lambda p: [int(x) for x in re.findall(r"\d+", p.parents[1].name)])
        if matches:
            found.append(str(matches[-1].parent))
    os.environ["PATH"] = os.pathsep.join([*found, os.environ.get("PATH", "")])


_find_pyenv_interpreters()


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The whole pytest suite on one Python."""
    session.install("-e", EXTRAS)
    session.run("python", "-m", "pytest", "-q", "-p", "no:cacheprovider", *session.posargs)


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def minimum_constraints() -> list[str]:
    """``name==X.Y`` for each core dependency's declared ``>=X.Y``: the minimum itself (X.Y.0),
    not its latest patch release."""
    project = _pyproject()["project"]
    constraints = []
    for requirement in project["dependencies"]:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*>=\s*([0-9.]+)", requirement)
        if match is None:
            raise ValueError(f"a core dependency without a plain >= minimum: {requirement!r}")
        name, version = match.groups()
        constraints.append(f"{name}=={version}")
    return constraints


def minimum_test_requirements() -> tuple[list[str], dict[str, str]]:
    """The test extra's requirements without the packages that pyproject.toml's
    ``[tool.m2m-guard.minimum-versions.left-out]`` names, and those names with their reasons."""
    pyproject = _pyproject()
    left_out = pyproject["tool"]["m2m-guard"]["minimum-versions"]["left-out"]
    test = pyproject["project"]["optional-dependencies"]["test"]
    wanted = {canonicalize_name(name) for name in left_out}
    kept = [line for line in test if canonicalize_name(Requirement(line).name) not in wanted]
    return kept, left_out


@nox.session(name="minimum-versions", python=PYTHONS[0])
def minimum_versions(session: nox.Session) -> None:
    """The suite on Python 3.10 with the lowest declared core dependencies.

    So that a claim such as ``starlette>=0.40`` is tested rather than hoped for. The test extra is
    installed without the packages that need more than those minimums (pyproject.toml lists them
    with the reason); the tests that need one skip, naming it and the reason
    (tests/packages.py, told by M2M_TEST_MINIMUM_VERSIONS)."""
    constraints = Path(session.create_tmp()) / "minimum-constraints.txt"
    constraints.write_text("\n".join(minimum_constraints()) + "\n", encoding="utf-8")
    requirements, left_out = minimum_test_requirements()
    session.log("constraints: " + ", ".join(minimum_constraints()))
    for name, reason in left_out.items():
        session.log(f"left out: {name}: {reason}")
    session.install("--constraint", str(constraints), "-e", ".[server]", *requirements)
    # a reused virtualenv (nox -r) may still hold one from an earlier run
    session.run("python", "-m", "pip", "uninstall", "--yes", *left_out, silent=True)
    session.run("python", "-m", "pip", "list", "--format=freeze", silent=False)
    session.run("python", "-m", "pytest", "-q", "-p", "no:cacheprovider", *session.posargs,
                env={"M2M_TEST_MINIMUM_VERSIONS": "1"})
