"""`python -m benchmarks.run` (or `make bench`): every benchmark in one run, side by side.

Prints the table of medians, ratios and targets, and writes it as Markdown to
`benchmarks/results/<date>-<time>-<mode>.md` and `benchmarks/results/latest.md`, and its
side-by-side figures as a chart to `docs/images/benchmarks.svg` (`benchmarks.chart`; needs
matplotlib, in the bench extra).

Options: ``--quick`` (a fast smoke run: fewer rounds and tokens, 1 s HTTP rounds), ``--no-http``
(skip the measurements over HTTP: wrk, and uvicorn with 1 and 2 workers), ``--out DIR`` (where
to write the Markdown; the chart then goes there too, unless ``--chart FILE`` says where).
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

from m2m_guard.local_issuer import KeySetServer, SigningKey, scalekit_claims

from . import (
    bench_events,
    cache_bench,
    chart,
    dpop_bench,
    http_bench,
    inprocess_bench,
    signature_bench,
    verify_bench,
    workers_bench,
)
from .harness import Config
from .report import SPREAD_NOTE, Row, machine, markdown, text_table

RESULTS = Path(__file__).parent / "results"
CHART = chart.CHART


def _config(args: argparse.Namespace) -> Config:
    if args.tiny:
        return Config.tiny()
    if args.quick:
        return Config.quick_run()
    return Config()


def run(config: Config, *, http: bool = True, log: bool = True) -> list[Row]:
    """Every benchmark; the rows of the table in order."""
    def say(message: str) -> None:
        if log:
            print(message, file=sys.stderr, flush=True)

    pool_size = 20 if config.batch < 10 else 200 if config.quick else 1000
    # RS256 first: the HTTP servers use the first key of the set.
    keys = {alg: SigningKey.generate(alg) for alg in verify_bench.ALGORITHMS}
    rows: list[Row] = []
    with KeySetServer(list(keys.values())) as issuer:
        say(f"minting {pool_size} tokens per algorithm ...")
        pools = {alg: [key.sign(scalekit_claims(issuer.url)) for _ in range(pool_size)]
                 for alg, key in keys.items()}
        rs256 = keys["RS256"]
        public = rs256.private_key.public_key()
        say("verification, per algorithm ...")
        rows += verify_bench.run(keys, issuer.url, pools, config)
        say("the signature call: direct or PyJWT's Algorithm.verify ...")
        rows += signature_bench.run(keys, pools, config)
        say("in-process ASGI and WSGI ...")
        asgi_rows = inprocess_bench.run_asgi(issuer.url, public, "RS256", pools["RS256"], config)
        rows += asgi_rows
        rows += inprocess_bench.run_wsgi(issuer.url, public, "RS256", pools["RS256"], config)
        say("HTTP (wrk) ...")
        rows += http_bench.run(issuer.url, pools["RS256"], config, enabled=http)
        say("uvicorn --workers 1 and 2 ...")
        rows += workers_bench.run(issuer, pools["RS256"][0], config) if http else [
            Row(workers_bench.SECTION, name, None, "req/s", note="not run (--no-http)")
            for name in ("1 worker", "2 workers", "2 workers vs 1: throughput")]
        say("DPoP over Bearer (memory and Redis replay stores) ...")
        rows += dpop_bench.run(issuer.url, rs256, config)
        say("cache memory and bound ...")
        rows += cache_bench.run_memory(keys["EdDSA"], issuer.url, config)
    say("events and metrics on and off ...")
    rows += event_rows(bench_events.run(quick=config.quick))
    say("cold start ...")
    unique = next(row.value for row in asgi_rows if row.name == "m2m_guard, unique tokens")
    rows += cache_bench.run_cold_start(rs256, config, unique or 0.0)
    return rows


def event_rows(measured: list[dict[str, object]]) -> list[Row]:
    """`bench_events.run`'s rows in the table: the cost of events and OpenTelemetry against
    events off, on a cache hit and on a full verification (ES256)."""
    rows = []
    for row in measured:
        value, ratio = row["median_us"], row["ratio"]
        rows.append(Row("events and metrics (ES256)", str(row["name"]),
                        float(value) if isinstance(value, (int, float)) else None, "µs",
                        ratio=float(ratio) if isinstance(ratio, (int, float)) else None,
                        baseline="events off",
                        note="" if value is not None else "opentelemetry-sdk not installed"))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a fast smoke run")
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # test suite
    parser.add_argument("--no-http", action="store_true", help="skip the measurements over HTTP")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the Markdown")
    parser.add_argument("--chart", type=Path, default=None,
                        help="where to write the SVG chart (default: docs/images/benchmarks.svg, "
                             "or chart.svg in --out)")
    args = parser.parse_args(argv)
    config = _config(args)
    started = time.monotonic()
    now = datetime.datetime.now(datetime.timezone.utc)
    rows = run(config, http=not args.no_http)
    table = text_table(rows)
    print(table)
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    took = time.monotonic() - started
    met = [row for row in rows if row.met is not None]
    noisy = sum(1 for row in met if row.inside_noise)
    summary = (f"Targets met: {sum(1 for row in met if row.met)} of {len(met)} "
               f"({noisy} verdicts inside the noise); took {took:.0f} s.")
    print(summary)
    print(SPREAD_NOTE)
    document = markdown(rows, title="m2m_guard benchmarks",
                        when=now.strftime("%Y-%m-%d %H:%M UTC"), mode=mode,
                        extra=[summary, "", SPREAD_NOTE, "", "Reproduce: `make bench` (or "
                               "`python -m benchmarks.run --quick` for a smoke run)."])
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"{now.strftime('%Y-%m-%d-%H%M%S')}-{mode}.md"
    (args.out / name).write_text(document, encoding="utf-8")
    (args.out / "latest.md").write_text(document, encoding="utf-8")
    print(f"written: {args.out / name} and latest.md")
    target = args.chart or (CHART if args.out == RESULTS else args.out / "chart.svg")
    write_chart(rows, target, when=now.strftime("%Y-%m-%d %H:%M UTC"), mode=mode)
    return 0


def write_chart(rows: list[Row], target: Path, *, when: str, mode: str) -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("chart not written: matplotlib is not installed (pip install -e '.[bench]', "
              "as make bench does)")
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    svg = chart.render(rows, subtitle=chart.subtitle(when, mode, machine()))
    target.write_text(svg, encoding="utf-8")
    print(f"written: {target}")


if __name__ == "__main__":
    sys.exit(main())
