"""Without the emulator extra everything works as before over plain HTTP: the demo (its SDK
step says why it did not run), the issuer command, and --tls / --grpc refuse with the install
line. The extra's packages are hidden from a child interpreter to show it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .test_demo import EXPECTED

ROOT = Path(__file__).resolve().parents[1]
HIDE = """
import importlib.abc, sys
class _Hidden(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("hypercorn", "connectrpc", "scalekit", "grpc"):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None
sys.meta_path.insert(0, _Hidden())
"""


def _run(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("M2M_GUARD_", "SCALEKIT_"))}
    return subprocess.run([sys.executable, "-c", HIDE + code, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=90, check=False)


def test_demo_runs_over_plain_http_without_the_extra() -> None:
    result = _run("import runpy, sys; sys.argv = ['demo.py']; "
                  "runpy.run_path('examples/demo.py', run_name='__main__')")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "issuer   http://127.0.0.1:" in out
    assert "(not run: it needs the emulator extra" in out
    assert "all calls answered as expected" in out
    statuses = [line.rsplit("-> ", 1)[1] for line in out.splitlines() if line.startswith("[")]
    assert statuses == EXPECTED  # the demo's calls, DPoP's included; no SDK step


def test_tls_and_grpc_options_name_the_extra(tmp_path: Path) -> None:
    for option in ("--tls", "--grpc"):
        result = _run("import sys; from m2m_guard.cli import main; sys.exit(main(sys.argv[1:]))",
                      "issuer", "--port", "0", "--db", str(tmp_path / "x.db"), option)
        assert result.returncode == 2, result.stdout + result.stderr
        assert "pip install 'm2m-guard[emulator]'" in result.stderr + result.stdout
