"""OpenTelemetry integration: each metric and the verification span, read back through the SDK's
in-memory metric reader and span exporter, from a real verifier and key-set server."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider, ObservableCounter
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    InMemoryMetricReader,
    Sum,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from starlette.testclient import TestClient

from m2m_guard import GuardError, GuardSettings, TokenVerifier, otel
from m2m_guard.local_issuer import KeySetServer, SigningKey
from m2m_guard.otel import instrument

from .conftest import deployment_app


class Telemetry:
    def __init__(self, reader: InMemoryMetricReader | None = None) -> None:
        self.reader = reader or InMemoryMetricReader()
        self.meters = MeterProvider(metric_readers=[self.reader])
        self.spans = InMemorySpanExporter()
        self.tracers = TracerProvider()
        self.tracers.add_span_processor(SimpleSpanProcessor(self.spans))

    def instrument(self, verifier: TokenVerifier, **options: Any) -> Callable[[], None]:
        return instrument(verifier, meter_provider=self.meters, tracer_provider=self.tracers,
                          **options)

    def points(self, name: str) -> list[tuple[dict[str, Any], Any]]:
        """(attributes, value) of every point of metric `name` (value: sum, gauge value, or the
        histogram point itself)."""
        data = self.reader.get_metrics_data()
        found = []
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name != name:
                        continue
                    for point in metric.data.data_points:
                        value = getattr(point, "value", point)
                        found.append((dict(point.attributes or {}), value))
        return found

    def metrics(self) -> dict[str, Any]:
        """Every exported metric by name (one collection)."""
        data = self.reader.get_metrics_data()
        return {metric.name: metric for resource in (data.resource_metrics if data else ())
                for scope in resource.scope_metrics for metric in scope.metrics}

    def value(self, name: str, **attributes: Any) -> Any:
        """The summed value of the points of `name` whose attributes include `attributes`."""
        return sum(value for attrs, value in self.points(name)
                   if all(attrs.get(k) == v for k, v in attributes.items()))


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    tel = Telemetry()
    yield tel
    tel.meters.shutdown()
    tel.tracers.shutdown()


@pytest.fixture(scope="module")
def rotation_keys() -> dict[str, SigningKey]:
    return {name: SigningKey.generate("ES256", kid=f"snk_{name}") for name in ("old", "new")}


def test_decisions_latency_cache_and_spans(issuer: KeySetServer, settings: GuardSettings,
                                           telemetry: Telemetry) -> None:
    verifier = TokenVerifier(settings)
    telemetry.instrument(verifier)
    token = issuer.mint()
    verifier.verify_sync(token)
    verifier.verify_sync(token)
    expired = issuer.mint(exp=int(time.time()) - 3600)
    with pytest.raises(GuardError):
        verifier.verify_sync(expired)
    with pytest.raises(GuardError):
        verifier.verify_sync("garbage")

    url = issuer.url
    assert telemetry.points("m2m_guard.decisions") and sorted(
        (attrs, value) for attrs, value in
        [(tuple(sorted(a.items())), v) for a, v in telemetry.points("m2m_guard.decisions")]) == [
        ((("algorithm", "RS256"), ("issuer", url), ("outcome", "allowed")), 2),
        ((("algorithm", "RS256"), ("issuer", url), ("outcome", "refused"),
          ("reason", "expired")), 1),
        ((("outcome", "refused"), ("reason", "malformed")), 1),
    ]
    assert telemetry.value("m2m_guard.token_cache.lookups", result="hit") == 1
    assert telemetry.value("m2m_guard.token_cache.lookups", result="miss") == 2
    durations = telemetry.points("m2m_guard.verification.duration")
    assert sum(point.count for _, point in durations) == 4
    hit = [p for a, p in durations if a.get("cache") == "hit"]
    assert len(hit) == 1 and hit[0].count == 1
    assert all("reason" not in attrs for attrs, _ in durations)

    spans = telemetry.spans.get_finished_spans()
    assert [s.name for s in spans] == ["m2m_guard.verify"] * 4
    assert [s.attributes["outcome"] for s in spans] == ["allowed", "allowed", "refused",
                                                        "refused"]
    assert spans[1].attributes["cache"] == "hit" and spans[2].attributes["reason"] == "expired"
    assert all(s.end_time >= s.start_time for s in spans)
    assert all(s.status.status_code is StatusCode.UNSET for s in spans)
    # Nothing exported carries a token, a signature or the client id.
    exported = repr([(s.attributes, s.name) for s in spans]) + repr(
        telemetry.reader.get_metrics_data().to_json())
    for raw in (token, expired):
        assert raw not in exported and raw.split(".")[2] not in exported
    assert "m2morg_" not in exported and "client_id" not in exported


def test_client_id_attribute_when_enabled(issuer: KeySetServer,
                                          make_settings: Callable[..., GuardSettings],
                                          telemetry: Telemetry) -> None:
    verifier = TokenVerifier(make_settings(events_client_id=True))
    telemetry.instrument(verifier)
    verifier.verify_sync(issuer.mint(client_id="m2morg_7"))
    assert telemetry.value("m2m_guard.decisions", outcome="allowed", client_id="m2morg_7") == 1
    assert telemetry.spans.get_finished_spans()[0].attributes["client_id"] == "m2morg_7"


def test_jwks_fetches_changes_and_gauges(issuer: KeySetServer,
                                         make_settings: Callable[..., GuardSettings],
                                         telemetry: Telemetry) -> None:
    verifier = TokenVerifier(make_settings(jwks_cache_ttl=1, jwks_refetch_cooldown=1))
    telemetry.instrument(verifier)
    verifier.warm_up_sync()
    assert telemetry.value("m2m_guard.jwks.fetches", issuer=issuer.url, result="ok") == 1
    assert telemetry.value("m2m_guard.jwks.changes", issuer=issuer.url) == 1
    assert telemetry.points("m2m_guard.jwks.keys") == [({"issuer": issuer.url}, 4)]
    assert telemetry.points("m2m_guard.jwks.usable") == [({"issuer": issuer.url}, 1)]
    verifier.warm_up_sync()  # conditional request: 304
    assert telemetry.value("m2m_guard.jwks.fetches", result="not_modified") == 1
    assert telemetry.value("m2m_guard.jwks.changes") == 1
    issuer.set_fault("500")
    verifier.warm_up_sync()  # fails, but the last good set is kept: no error raised
    assert telemetry.value("m2m_guard.jwks.fetches", result="error") == 1
    assert telemetry.points("m2m_guard.jwks.keys") == [({"issuer": issuer.url}, 4)]


def test_issuer_unavailable_span_is_an_error(issuer: KeySetServer, settings: GuardSettings,
                                             telemetry: Telemetry) -> None:
    verifier = TokenVerifier(settings)
    telemetry.instrument(verifier)
    token = issuer.mint()
    issuer.stop()
    with pytest.raises(GuardError):
        verifier.verify_sync(token)
    assert telemetry.value("m2m_guard.decisions", outcome="issuer_unavailable",
                           reason="issuer_unavailable", issuer=issuer.url) == 1
    assert telemetry.value("m2m_guard.jwks.fetches", result="error") == 1
    assert telemetry.points("m2m_guard.jwks.usable") == [({"issuer": issuer.url}, 0)]
    [span] = telemetry.spans.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "issuer_unavailable"


def test_unknown_kids_cooldown_and_refresh(rotation_keys: dict[str, SigningKey],
                                           make_settings: Callable[..., GuardSettings],
                                           telemetry: Telemetry) -> None:
    old, new = rotation_keys["old"], rotation_keys["new"]
    with KeySetServer([old]) as server:
        verifier = TokenVerifier(make_settings(issuer=server.url, jwks_cache_ttl=100))
        telemetry.instrument(verifier)
        verifier.verify_sync(server.mint(old))
        server.publish(new)
        verifier.verify_sync(server.mint(new))
        with pytest.raises(GuardError):
            verifier.verify_sync(server.mint(old))  # left the set; inside the cooldown
        assert telemetry.value("m2m_guard.jwks.unknown_kids", issuer=server.url) == 2
        assert telemetry.value("m2m_guard.jwks.cooldown_hits", issuer=server.url) == 1
        assert telemetry.value("m2m_guard.jwks.changes", issuer=server.url) == 2
        assert telemetry.value("m2m_guard.decisions", outcome="refused",
                               reason="unknown_kid") == 1


def test_refreshes_counter(issuer: KeySetServer, make_settings: Callable[..., GuardSettings],
                           telemetry: Telemetry) -> None:
    now = [1000.0]
    verifier = TokenVerifier(make_settings(jwks_cache_ttl=100), clock=lambda: now[0])
    telemetry.instrument(verifier)
    verifier.warm_up_sync()
    now[0] += 95
    verifier.verify_sync(issuer.mint())
    deadline = time.monotonic() + 5
    while telemetry.value("m2m_guard.jwks.fetches", result="not_modified") < 1:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    verifier.close()
    assert telemetry.value("m2m_guard.jwks.refreshes", issuer=issuer.url) == 1


def test_adapter_refusals_are_counted_without_duration(issuer: KeySetServer,
                                                       settings: GuardSettings,
                                                       telemetry: Telemetry) -> None:
    verifier = TokenVerifier(settings)
    telemetry.instrument(verifier)
    with TestClient(deployment_app(settings, verifier=verifier)) as client:
        assert client.get("/deployments").status_code == 401
        narrow = issuer.mint(scopes=["audit:read"])
        assert client.get("/admin", headers={"Authorization": f"Bearer {narrow}"}
                          ).status_code == 403
    assert telemetry.value("m2m_guard.decisions", outcome="refused",
                           reason="missing_token") == 1
    assert telemetry.value("m2m_guard.decisions", outcome="refused", reason="insufficient_scope",
                           issuer=issuer.url, algorithm="RS256") == 1
    # One verification (the narrow token's), so one duration point and one span.
    durations = telemetry.points("m2m_guard.verification.duration")
    assert sum(point.count for _, point in durations) == 1
    assert len(telemetry.spans.get_finished_spans()) == 1


def test_stop_and_no_traces(issuer: KeySetServer, settings: GuardSettings,
                            telemetry: Telemetry) -> None:
    verifier = TokenVerifier(settings)
    stop = telemetry.instrument(verifier, traces=False)
    token = issuer.mint()
    verifier.verify_sync(token)
    assert telemetry.value("m2m_guard.decisions") == 1
    assert telemetry.spans.get_finished_spans() == ()
    stop()
    assert not verifier.subscribed
    verifier.verify_sync(token)
    # Counters keep reporting the total reached (cumulative, never back to zero); the key-set
    # gauges of a stopped verifier go quiet.
    assert telemetry.value("m2m_guard.decisions") == 1
    assert telemetry.value("m2m_guard.token_cache.lookups", result="miss") == 1
    assert telemetry.points("m2m_guard.jwks.keys") == []
    stop()  # stopping twice is harmless
    assert telemetry.value("m2m_guard.decisions") == 1


def test_global_providers_are_the_default(issuer: KeySetServer, settings: GuardSettings) -> None:
    """Without providers, the global (here: not configured, no-op) ones are used: nothing
    fails and verification is unaffected."""
    verifier = TokenVerifier(settings)
    stop = instrument(verifier)
    assert verifier.verify_sync(issuer.mint()).issuer == issuer.url
    stop()


def test_import_m2m_guard_does_not_import_opentelemetry() -> None:
    code = ("import sys, m2m_guard, m2m_guard.asgi, m2m_guard.events, m2m_guard.health;"
            "print(any(m.startswith('opentelemetry') for m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=60)
    assert result.stdout.strip() == "False"


COUNTERS = {
    "m2m_guard.decisions": "{decision}",
    "m2m_guard.token_cache.lookups": "{lookup}",
    "m2m_guard.jwks.fetches": "{fetch}",
    "m2m_guard.jwks.refreshes": "{refresh}",
    "m2m_guard.jwks.unknown_kids": "{token}",
    "m2m_guard.jwks.cooldown_hits": "{token}",
    "m2m_guard.jwks.changes": "{change}",
}


def test_counters_are_cumulative_monotonic_sums_with_their_units(
        issuer: KeySetServer, make_settings: Callable[..., GuardSettings],
        rotation_keys: dict[str, SigningKey], telemetry: Telemetry) -> None:
    """Counted in Python and observed at collection: still a monotonic cumulative Sum per
    counter, with its unit and description, and the histogram as before."""
    verifier = TokenVerifier(make_settings(jwks_cache_ttl=100))
    telemetry.instrument(verifier)
    token = issuer.mint()
    verifier.verify_sync(token)
    verifier.verify_sync(token)
    for _ in range(2):  # a key id the set lacks: a refetch, then a cooldown hit
        with pytest.raises(GuardError):
            verifier.verify_sync(issuer.mint(rotation_keys["old"]))
    found = telemetry.metrics()
    assert set(COUNTERS) - {"m2m_guard.jwks.refreshes"} <= set(found)
    for name, metric in found.items():
        if name in COUNTERS:
            assert metric.unit == COUNTERS[name] and metric.description
            assert isinstance(metric.data, Sum) and metric.data.is_monotonic
            assert metric.data.aggregation_temporality is AggregationTemporality.CUMULATIVE
    duration = found["m2m_guard.verification.duration"]
    assert duration.unit == "s" and list(duration.data.data_points[0].explicit_bounds) == list(
        otel.DURATION_BUCKETS)
    assert telemetry.value("m2m_guard.decisions", outcome="allowed") == 2
    verifier.verify_sync(token)  # a second collection reads the new total
    assert telemetry.value("m2m_guard.decisions", outcome="allowed") == 3
    assert telemetry.value("m2m_guard.jwks.unknown_kids", issuer=issuer.url) == 2
    assert telemetry.value("m2m_guard.jwks.cooldown_hits", issuer=issuer.url) == 1


def test_delta_reader_gets_increments(issuer: KeySetServer, settings: GuardSettings) -> None:
    """A reader preferring delta temporality gets the increments between collections."""
    reader = InMemoryMetricReader(
        preferred_temporality={ObservableCounter: AggregationTemporality.DELTA})
    tel = Telemetry(reader)
    try:
        verifier = TokenVerifier(settings)
        tel.instrument(verifier, traces=False)
        token = issuer.mint()
        verifier.verify_sync(token)
        assert tel.value("m2m_guard.decisions", outcome="allowed") == 1
        for _ in range(3):
            verifier.verify_sync(token)
        found = tel.metrics()  # one collection: each collection resets the deltas
        decisions = found["m2m_guard.decisions"].data
        lookups = found["m2m_guard.token_cache.lookups"].data
        assert decisions.aggregation_temporality is AggregationTemporality.DELTA
        assert [point.value for point in decisions.data_points] == [3]
        assert {point.attributes["result"]: point.value for point in lookups.data_points} == {
            "hit": 3, "miss": 0}
    finally:
        tel.meters.shutdown()
        tel.tracers.shutdown()


def test_counts_are_exact_across_threads(issuer: KeySetServer, settings: GuardSettings,
                                         telemetry: Telemetry) -> None:
    """Several threads verifying at once (cache hits, full verifications, refusals) while
    metrics are collected: every count is exact."""
    verifier = TokenVerifier(settings)
    telemetry.instrument(verifier)
    token = issuer.mint()
    verifier.verify_sync(token)  # the one cache miss
    threads_count, rounds = 6, 400
    barrier = threading.Barrier(threads_count + 1)
    failures: list[BaseException] = []

    def work() -> None:
        try:
            barrier.wait(timeout=10)
            for index in range(rounds):
                verifier.verify_sync(token)
                if index % 10 == 0:
                    with pytest.raises(GuardError):
                        verifier.verify_sync("garbage")
        except BaseException as exc:  # reported below, in the test's thread
            failures.append(exc)

    workers = [threading.Thread(target=work) for _ in range(threads_count)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: races show up
    try:
        for worker in workers:
            worker.start()
        barrier.wait(timeout=10)
        for _ in range(20):  # collections racing with the updates must not disturb them
            telemetry.reader.get_metrics_data()
        for worker in workers:
            worker.join(timeout=60)
    finally:
        sys.setswitchinterval(interval)
    assert not failures and not any(worker.is_alive() for worker in workers)

    hits = threads_count * rounds
    refused = threads_count * (rounds // 10)
    assert telemetry.value("m2m_guard.decisions", outcome="allowed") == hits + 1
    assert telemetry.value("m2m_guard.decisions", outcome="refused",
                           reason="malformed") == refused
    assert telemetry.value("m2m_guard.token_cache.lookups", result="hit") == hits
    assert telemetry.value("m2m_guard.token_cache.lookups", result="miss") == 1
    durations = telemetry.points("m2m_guard.verification.duration")
    assert sum(point.count for _, point in durations) == hits + 1 + refused
    assert len(telemetry.spans.get_finished_spans()) == hits + 1 + refused


def test_instrumenting_twice_is_refused(issuer: KeySetServer, settings: GuardSettings,
                                        telemetry: Telemetry) -> None:
    verifier = TokenVerifier(settings)
    stop = telemetry.instrument(verifier)
    with pytest.raises(RuntimeError, match="already instrumented"):
        telemetry.instrument(verifier)
    with pytest.raises(RuntimeError, match="already instrumented"):
        instrument(verifier, meter_provider=MeterProvider())  # other providers too
    token = issuer.mint()
    verifier.verify_sync(token)
    assert telemetry.value("m2m_guard.decisions") == 1  # counted once
    assert len(telemetry.spans.get_finished_spans()) == 1
    # After stop(), instrumenting again is allowed and continues the cumulative counts.
    stop()
    verifier.verify_sync(token)
    telemetry.instrument(verifier)
    verifier.verify_sync(token)
    assert telemetry.value("m2m_guard.decisions") == 2
    assert telemetry.value("m2m_guard.token_cache.lookups", result="hit") == 1
    assert len(telemetry.spans.get_finished_spans()) == 2


def test_two_verifiers_on_one_provider(issuer: KeySetServer, settings: GuardSettings,
                                       rotation_keys: dict[str, SigningKey],
                                       make_settings: Callable[..., GuardSettings],
                                       telemetry: Telemetry) -> None:
    """Both verifiers' counts and key-set gauges reach the one provider (the SDK keeps the
    first observable instrument of a name, so the counts are shared, not per verifier)."""
    with KeySetServer([rotation_keys["new"]]) as other:
        first = TokenVerifier(settings)
        second = TokenVerifier(make_settings(issuer=other.url))
        telemetry.instrument(first)
        stop_second = telemetry.instrument(second)
        first.verify_sync(issuer.mint())
        second.verify_sync(other.mint(rotation_keys["new"]))
        second.verify_sync(other.mint(rotation_keys["new"]))
        assert telemetry.value("m2m_guard.decisions", issuer=issuer.url) == 1
        assert telemetry.value("m2m_guard.decisions", issuer=other.url) == 2
        assert sorted(telemetry.points("m2m_guard.jwks.keys"), key=repr) == sorted(
            [({"issuer": issuer.url}, 4), ({"issuer": other.url}, 1)], key=repr)
        stop_second()
        assert telemetry.points("m2m_guard.jwks.keys") == [({"issuer": issuer.url}, 4)]
        assert telemetry.value("m2m_guard.decisions", issuer=other.url) == 2


def test_counter_series_are_bounded(issuer: KeySetServer,
                                    make_settings: Callable[..., GuardSettings],
                                    telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the series limit (client ids are unbounded) counts go to the overflow attribute
    set the SDK uses at its own limit, and the total stays exact."""
    monkeypatch.setattr(otel, "_MAX_SERIES", 3)
    verifier = TokenVerifier(make_settings(events_client_id=True))
    telemetry.instrument(verifier, traces=False)
    for index in range(7):
        verifier.verify_sync(issuer.mint(client_id=f"m2morg_{index}"))
    points = telemetry.points("m2m_guard.decisions")
    assert len(points) == 4
    assert telemetry.value("m2m_guard.decisions") == 7
    assert telemetry.value("m2m_guard.decisions", **{"otel.metric.overflow": True}) == 4
