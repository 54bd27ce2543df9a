"""The cost of events and metrics: verification with events off, with a no-op subscriber, and
with OpenTelemetry metrics, and with metrics and spans (SDK providers, in-memory metric reader,
spans recorded but not exported).

Two paths are measured: a verified-token cache hit (the common case, where any overhead shows
most) and a full verification (cache off: signature check included). Rounds of each variant are
interleaved and the median per-call time of each is reported, with its ratio to "off" on the
same path.

    python -m benchmarks.bench_events [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

from m2m_guard import GuardSettings, TokenVerifier
from m2m_guard.local_issuer import KeySetServer, SigningKey

__all__ = ["run"]

# off: no subscriber; noop: one subscriber that does nothing; otel: m2m_guard.otel metrics;
# otel+spans: metrics and a recorded span per verification.
_MODES = ("off", "noop", "otel", "otel+spans")


def _otel(verifier: TokenVerifier, *, traces: bool) -> Callable[[], None] | None:
    try:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
    except ImportError:
        return None
    from m2m_guard.otel import instrument

    meters = MeterProvider(metric_readers=[InMemoryMetricReader()])
    tracers = TracerProvider()  # records spans; no processor, so nothing is exported
    return instrument(verifier, meter_provider=meters, tracer_provider=tracers, traces=traces)


def _variant(settings: GuardSettings, mode: str) -> TokenVerifier | None:
    verifier = TokenVerifier(settings)
    if mode == "noop":
        verifier.subscribe(lambda event: None)
    elif mode.startswith("otel") and _otel(verifier, traces=mode == "otel+spans") is None:
        return None
    verifier.warm_up_sync()
    return verifier


def _per_call_us(verify: Callable[[str], Any], token: str, calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        verify(token)
    return (time.perf_counter() - started) / calls * 1e6


def run(quick: bool = False) -> list[dict[str, object]]:
    """Rows ``{"name", "median_us", "ratio"}``: per-call medians and ratios to events off."""
    rounds = 3 if quick else 15
    calls = {"cached": 300 if quick else 2000, "full": 30 if quick else 200}
    rows: list[dict[str, object]] = []
    with KeySetServer([SigningKey.generate("ES256", kid="bench")]) as server:
        token = server.mint()
        for path in ("cached", "full"):
            settings = GuardSettings(issuer=server.url, audience="deployment-api",
                                     token_cache_size=10000 if path == "cached" else 0)
            verifiers = {mode: _variant(settings, mode) for mode in _MODES}
            active = {mode: v for mode, v in verifiers.items() if v is not None}
            for verifier in active.values():  # warm every path once
                _per_call_us(verifier.verify_sync, token, calls[path] // 10 or 1)
            samples: dict[str, list[float]] = {mode: [] for mode in active}
            for _ in range(rounds):
                for mode, verifier in active.items():
                    samples[mode].append(_per_call_us(verifier.verify_sync, token,
                                                      calls[path]))
            base = statistics.median(samples["off"])
            for mode in _MODES:
                if mode not in samples:
                    rows.append({"name": f"events {mode} ({path})", "median_us": None,
                                 "ratio": None})
                    continue
                median = statistics.median(samples[mode])
                rows.append({"name": f"events {mode} ({path})", "median_us": round(median, 2),
                             "ratio": round(median / base, 2)})
            for verifier in active.values():
                verifier.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    args = parser.parse_args()
    print(f"{'variant':<34} {'median µs/call':>15} {'vs off':>8}")
    for row in run(quick=args.quick):
        median, ratio = row["median_us"], row["ratio"]
        shown = ("n/a (no OpenTelemetry SDK)" if median is None
                 else f"{median:>15.2f} {ratio:>7.2f}x")
        print(f"{row['name']:<34} {shown}")


if __name__ == "__main__":
    main()
