"""`make demo` runs examples/demo.py: it must finish on its own, exit 0 and show each answer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo.py"


def test_demo_runs_end_to_end() -> None:
    result = subprocess.run([sys.executable, str(DEMO)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("[")]
    statuses = [line.rsplit("-> ", 1)[1] for line in lines]
    assert statuses == ["200", "200", "202", "403", "401", "401", "401"]
    assert all(line.startswith("[ok ]") for line in lines)
    assert 'scope="admin:platform"' in result.stdout
    assert "all calls answered as expected" in result.stdout
