"""The benchmark harness runs end to end (tiny round counts, no HTTP) and produces every row.

Nothing here is timed and no ratio is asserted: figures come from `make bench`.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.chart import ASGI_SECTION, VERIFY_SECTION, series
from benchmarks.inprocess_bench import ASGI_NAMES, WSGI_NAMES
from benchmarks.report import Row
from benchmarks.verify_bench import ALGORITHMS, HIT_ROW, OVERHEAD_ALGORITHMS, OVERHEAD_ROW
from benchmarks.workers_bench import SECTION as WORKERS

ROOT = Path(__file__).resolve().parent.parent
VERIFY_ROWS = ("raw cryptography", "PyJWT jwt.decode", "joserfc", "authlib",
               "TokenVerifier uncached", "TokenVerifier cached", OVERHEAD_ROW, HIT_ROW,
               "uncached: times faster than PyJWT")
VERDICT = re.compile(r"\b(met|NOT met)( \(inside the noise\))?\b")


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
        # The rule on a cache hit is judged against its target (< 1 µs).
        assert any("rules on a cache hit" in line and "claim-equality rule on a cache hit"
                   in line and "< 1 µs" in line for line in text.splitlines()), "rules row"
        # Every target of the issue is judged, with its spread, in every run.
        lines = text.splitlines()
        for alg in ALGORITHMS:
            judged = [line for line in lines if f"verify {alg}" in line and
                      (HIT_ROW in line or (OVERHEAD_ROW in line and alg in OVERHEAD_ALGORITHMS))]
            assert len(judged) == (2 if alg in OVERHEAD_ALGORITHMS else 1), alg
            assert all(VERDICT.search(line) and " to " in line for line in judged), judged
        for name in ("repeated token: throughput vs no auth",
                     "unique tokens: times naive PyJWT throughput"):
            judged = [line for line in lines if "ASGI in-process" in line and name in line]
            assert len(judged) == 1 and VERDICT.search(judged[0]) and " to " in judged[0], name
        assert any(WORKERS in line and "2 workers vs 1: throughput" in line for line in lines)
        assert "memory of 10,000 cached tokens" in text
        for name in ("DPoP, cache hit, memory store", "DPoP, cache hit, Redis store",
                     "the proof's signature check alone", "Bearer hit with DPoP allowed vs off",
                     "DPoP's Python cost over a Bearer hit (signature skipped)",
                     "the signature check inside a DPoP request"):
            assert any("DPoP over Bearer" in line and name in line for line in lines), name
        judged = [line for line in lines if "DPoP adds, beyond the proof's signature" in line]
        assert len(judged) == 1 and VERDICT.search(judged[0]) and " to " in judged[0], judged
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
    assert "Targets met:" in printed and "inside the noise" in printed
    # Every measured row has a figure (only skipped HTTP rows and a missing WSGI guard lack one).
    for line in latest.splitlines():
        if line.startswith("| verify ") or line.startswith("| ASGI in-process"):
            assert "| n/a |" not in line, line

    # The chart: written beside the Markdown when matplotlib (the bench extra) is installed,
    # and said so when it is not; never silently missing.
    chart = tmp_path / "chart.svg"
    if importlib.util.find_spec("matplotlib") is None:
        assert "chart not written: matplotlib is not installed" in printed
        assert not chart.exists()
    else:
        svg = chart.read_text(encoding="utf-8")
        assert svg.startswith("<?xml") and "<svg" in svg
        for label in ("Verifying one RS256 token", "raw signature check: the limit",
                      "m2m_guard, cached token", "naive PyJWT middleware", "joserfc"):
            assert label in svg, label

def test_workers_section_measures_real_uvicorn_with_one_fetch_per_worker() -> None:
    # uvicorn --workers 1 and --workers 2 for real, under the pipelined load generator: every
    # answer counted is a 200 (the section raises otherwise), each worker fetched the key set
    # once, and the 2-worker figure is a measured verdict (not asserted: the machine decides).
    done = subprocess.run([sys.executable, "-m", "benchmarks.workers_bench", "--tiny"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line for line in done.stdout.splitlines() if WORKERS in line]
    rates = {}
    for line in lines:
        for name in ("1 worker ", "2 workers "):
            if name in line and "vs" not in line:
                rates[name] = float(re.search(r"([0-9,]+) req/s", line).group(1).replace(",", ""))
    assert rates.keys() == {"1 worker ", "2 workers "} and min(rates.values()) > 0, lines
    fetches = next(line for line in lines if "key-set fetches" in line)
    assert "= 1 per worker" in fetches and re.search(r"\bmet\b", fetches) \
        and "NOT met" not in fetches and "1 worker: 1, 2 workers: 2" in fetches, fetches
    scaling = next(line for line in lines if "2 workers vs 1: throughput" in line)
    assert "≥ 1.8x" in scaling and VERDICT.search(scaling), scaling
    if Path("/proc/net/tcp").exists():
        assert "connections balanced over the workers" in scaling, scaling
    share = next(line for line in lines if "load generator CPU" in line)
    assert float(re.search(r"([0-9.]+)x", share).group(1)) < 0.5, share

def _rows() -> list[Row]:
    rows = [Row(VERIFY_SECTION, name, value, "µs") for name, value in (
        ("raw cryptography", 16.0), ("PyJWT jwt.decode", 58.0), ("joserfc", 36.0),
        ("authlib", 32.0), ("TokenVerifier uncached", 25.0), ("TokenVerifier cached", 1.0))]
    rows += [Row(ASGI_SECTION, name, value, "µs") for name, value in (
        ("no auth", 6.0), ("m2m_guard, unique tokens", 44.0), ("m2m_guard, repeated token", 9.0),
        ("naive PyJWT middleware", 68.0), ("BaseHTTPMiddleware + PyJWT", 166.0))]
    return rows


def test_the_chart_shows_the_runs_figures_with_the_signature_check_as_the_limit() -> None:
    verify, asgi = series(_rows())
    assert dict(verify.bars) == {"m2m_guard, cached token": 1.0, "m2m_guard, uncached": 25.0,
                                 "authlib": 32.0, "joserfc": 36.0, "PyJWT": 58.0}
    assert verify.limit == ("raw signature check: the limit", 16.0)
    assert dict(asgi.bars) == {"no auth": 6.0, "m2m_guard, cached token": 9.0,
                               "m2m_guard, new token": 44.0, "naive PyJWT middleware": 68.0,
                               "BaseHTTPMiddleware + PyJWT": 166.0}
    assert asgi.limit[1] == 22.0  # no auth plus the raw signature check


def test_the_chart_refuses_a_run_without_a_figure() -> None:
    rows = [row for row in _rows() if row.name != "joserfc"]
    with pytest.raises(ValueError, match="joserfc"):
        series(rows)
    unmeasured = [Row(r.section, r.name, None if r.name == "no auth" else r.value, r.unit)
                  for r in _rows()]
    with pytest.raises(ValueError, match="no figure"):
        series(unmeasured)


def test_the_readme_shows_the_chart_of_the_published_run() -> None:
    """The README's chart is the one `make bench` wrote for benchmarks/results/latest.md: the
    SVG's title names that run's date and machine, and so does the README beside it."""
    latest = (ROOT / "benchmarks" / "results" / "latest.md").read_text(encoding="utf-8")
    match = re.search(r"^Run: (\d{4}-\d\d-\d\d \d\d:\d\d UTC) \((\w+)\)", latest, re.MULTILINE)
    assert match is not None
    when, mode = match.groups()
    cpu = re.search(r"^\| CPU \| (.+) \|$", latest, re.MULTILINE)
    assert cpu is not None
    svg = (ROOT / "docs" / "images" / "benchmarks.svg").read_text(encoding="utf-8")
    assert f"m2m_guard benchmarks: {when} ({mode}), {cpu.group(1)}" in svg
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "![" in readme and "](docs/images/benchmarks.svg)" in readme
    section = readme[readme.index("## Performance"):readme.index("## Operations")]
    assert when in section and cpu.group(1) in section
