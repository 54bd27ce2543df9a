"""`python -m tests.installed` (run by `make wheel-check`, part of `make test`): the package as a
user gets it.

1. Builds the sdist, and the wheel from that sdist (so a file missing from the sdist shows).
2. `check-wheel-contents` and `twine check --strict` on both.
3. A clean virtual environment in the system's temporary directory, outside the source tree; the
   wheel installed there with its extras (pip's cache is reused, so a second run downloads
   nothing).
4. From there: `m2m-guard --version`, `m2m-guard demo`, and `installed_checks.py` under pytest
   (the package data, the console script and the pytest plugin's entry point, and one request
   through each adapter).

Exit status 0 when everything passed. ``--keep`` leaves the temporary directory in place.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHECKS = Path(__file__).resolve().parent / "installed_checks.py"
EXTRAS = "fastapi,flask,django,drf,server,otel,mcp"
TOOLS = ("pytest>=8",)


def _run(title: str, command: list[str], *, cwd: Path, env: dict[str, str] | None = None,
         timeout: float = 600) -> str:
    started = time.monotonic()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    took = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"wheel check: {title} failed (exit {done.returncode}):\n"
                         f"$ {' '.join(command)}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    print(f"  {title}: ok ({took:.1f} s)", flush=True)
    return done.stdout


def _clean_env(venv: Path) -> dict[str, str]:
    """The environment of a user's shell with only the clean venv on PATH: nothing from this
    tree on the import path and no M2M_GUARD_* configuration leaking in."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("M2M_GUARD_", "PYTHON", "VIRTUAL_ENV", "DJANGO_"))}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    return env


def check(work: Path) -> None:
    python = sys.executable
    dist = work / "dist"
    print(f"wheel check in {work}", flush=True)
    _run("build sdist and wheel", [python, "-m", "build", "--outdir", str(dist), str(ROOT)],
         cwd=work)
    wheels, sdists = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        raise SystemExit(f"wheel check: expected one wheel and one sdist, found {wheels + sdists}")
    wheel = wheels[0]
    _run("check-wheel-contents", [python, "-m", "check_wheel_contents", str(wheel)], cwd=work)
    _run("twine check --strict", [python, "-m", "twine", "check", "--strict", str(wheel),
                                  str(sdists[0])], cwd=work)

    venv = work / "venv"
    _run("clean venv", [python, "-m", "venv", "--without-pip", str(venv)], cwd=work)
    installed = venv / "bin" / "python"
    _run(f"install the wheel [{EXTRAS}]",
         [python, "-m", "pip", "--python", str(installed), "install", "--quiet",
          "--disable-pip-version-check", f"{wheel}[{EXTRAS}]", *TOOLS], cwd=work)

    env = _clean_env(venv)
    home = work / "home"  # the CLI's working directory: nothing from the source tree
    home.mkdir()
    from m2m_guard import __version__

    printed = _run("m2m-guard --version", [str(venv / "bin" / "m2m-guard"), "--version"],
                   cwd=home, env=env, timeout=60)
    if printed.strip() != f"m2m-guard {__version__}":
        raise SystemExit(f"wheel check: the installed CLI says {printed.strip()!r}, "
                         f"the tree's version is {__version__}")
    demo = _run("m2m-guard demo", [str(venv / "bin" / "m2m-guard", ), "demo"], cwd=home,
                env=env, timeout=120)
    if "403" not in demo or "200" not in demo:
        raise SystemExit(f"wheel check: the demo did not show its requests:\n{demo[-3000:]}")
    shutil.copy(CHECKS, home / CHECKS.name)
    _run("installed_checks.py under pytest",
         [str(installed), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W",
          "ignore::DeprecationWarning", CHECKS.name], cwd=home, env=env, timeout=300)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.installed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="m2m-guard-wheel-"))
    try:
        check(work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"wheel check passed in {time.monotonic() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
