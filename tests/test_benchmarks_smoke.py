"""The benchmark harness runs end to end (tiny round counts, no HTTP) and produces every row.

Nothing here is timed and no ratio is asserted: figures come from `make bench`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from benchmarks.inprocess_bench import ASGI_NAMES, WSGI_NAMES
from benchmarks.verify_bench import ALGORITHMS

ROOT = Path(__file__).resolve().parent.parent
VERIFY_ROWS = ("raw cryptography", "PyJWT jwt.decode", "joserfc", "authlib",
               "TokenVerifier uncached", "TokenVerifier cached",
               "uncached: times faster than PyJWT", "cached: times faster than PyJWT")


def test_quick_run_prints_and_writes_the_whole_table(tmp_path: Path) -> None:
    # A child process, as `make bench` runs it: the benchmark's imports (joserfc, authlib) and its
    # garbage stay out of the test process, whose other tests watch event-loop stalls.
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--tiny", "--no-http", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    printed = done.stdout
    latest = (tmp_path / "latest.md").read_text(encoding="utf-8")
    dated = [p for p in tmp_path.glob("*-tiny.md")]
    assert len(dated) == 1 and dated[0].read_text(encoding="utf-8") == latest
    for text in (printed, latest):
        for alg in ALGORITHMS:
            section = f"verify {alg}"
            for name in VERIFY_ROWS:
                assert any(section in line and name in line for line in text.splitlines()), \
                    (alg, name)
        for name in ASGI_NAMES.values():
            assert "ASGI in-process (Starlette, RS256)" in text and name in text
        for section in ("WSGI in-process", "HTTP uvicorn 1 worker", "HTTP waitress"):
            lines = [line for line in text.splitlines() if section in line]
            for name in WSGI_NAMES.values():
                assert any(name in line for line in lines), (section, name)
        for alg in ALGORITHMS:
            for name in ("direct call (m2m_guard)", "PyJWT Algorithm.verify",
                         "PyJWT's extra cost per verification"):
                assert any(f"signature call {alg}" in line and name in line
                           for line in text.splitlines()), (alg, name)
        assert "unique tokens: times naive PyJWT throughput" in text
        assert "memory of 10,000 cached tokens" in text
        assert "most entries" in text and "most token bytes held" in text
        assert "key-set fetches" in text and "time to answer all" in text
        assert "not run (--no-http)" in text
        for mode in ("off", "noop", "otel", "otel+spans"):
            for path in ("cached", "full"):
                assert any("events and metrics" in line and f"events {mode} ({path})" in line
                           for line in text.splitlines()), (mode, path)
    # The Markdown names the machine and the package versions, and no host name.
    for label in ("| CPU |", "| Cores |", "| Python |", "| OS |", "| cryptography |",
                  "| PyJWT |", "| joserfc |", "| Authlib |"):
        assert label in latest
    assert "Targets met:" in printed
    # Every measured row has a figure (only skipped HTTP rows and a missing WSGI guard lack one).
    for line in latest.splitlines():
        if line.startswith("| verify ") or line.startswith("| ASGI in-process"):
            assert "| n/a |" not in line, line
