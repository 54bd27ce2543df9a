"""OpenTelemetry metrics and spans from the event stream (``pip install "m2m-guard[otel]"``).

``instrument(verifier)`` subscribes to `verifier`'s events and records, through the global (or
the given) meter and tracer providers:

| instrument | kind | unit | attributes |
|---|---|---|---|
| ``m2m_guard.decisions`` | counter | ``{decision}`` | outcome, reason, issuer, algorithm |
| ``m2m_guard.verification.duration`` | histogram | ``s`` | outcome, issuer, algorithm, cache |
| ``m2m_guard.token_cache.lookups`` | counter | ``{lookup}`` | result (hit, miss), issuer |
| ``m2m_guard.jwks.fetches`` | counter | ``{fetch}`` | result (ok, not_modified, error), issuer |
| ``m2m_guard.jwks.refreshes`` | counter | ``{refresh}`` | issuer |
| ``m2m_guard.jwks.unknown_kids`` | counter | ``{token}`` | issuer |
| ``m2m_guard.jwks.cooldown_hits`` | counter | ``{token}`` | issuer |
| ``m2m_guard.jwks.changes`` | counter | ``{change}`` | issuer |
| ``m2m_guard.jwks.keys`` | gauge (observed) | ``{key}`` | issuer |
| ``m2m_guard.jwks.usable`` | gauge (observed) | ``1`` | issuer |

`outcome` is ``allowed``, ``refused`` or ``issuer_unavailable``; `reason` a code of
`m2m_guard.events.REASONS` (absent when allowed); `algorithm` the token's (accepted) algorithm;
`issuer` a configured issuer (absent when the token named none). All are low-cardinality; the
token never appears, and `client_id` is added (to decisions on verified tokens) only when
`GuardSettings.events_client_id` is on.

A span ``m2m_guard.verify`` is recorded per verification by the verifier (with the attributes
above, status ERROR for ``issuer_unavailable`` and ``internal_error``), when `traces` is true;
with no tracer provider configured OpenTelemetry makes it a no-op. The span is recorded when
the decision is known, with its real start time, so it is not the parent of key-set fetches.

`import m2m_guard` never imports OpenTelemetry; this module imports it when called.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from . import events as ev
from .events import Event

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
    from opentelemetry.trace import TracerProvider

    from .verifier import TokenVerifier

__all__ = ["DURATION_BUCKETS", "instrument"]

# Seconds: a cached verification takes microseconds, a signature check tens to hundreds of
# microseconds, a verification that waits for a key-set fetch milliseconds to seconds.
DURATION_BUCKETS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_SCOPE = "m2m_guard"
_FETCH_RESULTS = {ev.KEYS_FETCHED: "ok", ev.KEYS_NOT_MODIFIED: "not_modified",
                  ev.KEYS_FETCH_FAILED: "error"}
_ERROR_REASONS = frozenset({"issuer_unavailable", "internal_error"})
_MAX_CACHED_ATTRIBUTES = 4096


def _version() -> str:
    from . import __version__
    return __version__


class _Recorder:
    """The subscriber: turns each `Event` into metric points (and a span for decisions)."""

    def __init__(self, meter: Any, tracer: Any, *, client_id: bool) -> None:
        self.decisions = meter.create_counter(
            "m2m_guard.decisions", unit="{decision}",
            description="Token verifications and requests refused by the guard, by outcome.")
        try:
            self.duration = meter.create_histogram(
                "m2m_guard.verification.duration", unit="s",
                description="Time to verify a token (cache hits included).",
                explicit_bucket_boundaries_advisory=DURATION_BUCKETS)
        except TypeError:  # an API without bucket advice: the SDK's defaults apply
            self.duration = meter.create_histogram(
                "m2m_guard.verification.duration", unit="s",
                description="Time to verify a token (cache hits included).")
        self.cache = meter.create_counter(
            "m2m_guard.token_cache.lookups", unit="{lookup}",
            description="Verified-token cache lookups by tokens reaching it, hit or miss.")
        self.fetches = meter.create_counter(
            "m2m_guard.jwks.fetches", unit="{fetch}",
            description="Key-set fetches by result (ok, not_modified, error).")
        self.refreshes = meter.create_counter(
            "m2m_guard.jwks.refreshes", unit="{refresh}",
            description="Background key-set refreshes started.")
        self.unknown_kids = meter.create_counter(
            "m2m_guard.jwks.unknown_kids", unit="{token}",
            description="Tokens naming a key id the cached key set does not hold.")
        self.cooldown_hits = meter.create_counter(
            "m2m_guard.jwks.cooldown_hits", unit="{token}",
            description="Unknown key ids that could not cause a refetch (cooldown, backoff).")
        self.changes = meter.create_counter(
            "m2m_guard.jwks.changes", unit="{change}",
            description="Key-set changes (first load included).")
        self.tracer = tracer
        self.client_id = client_id
        self._attributes: dict[tuple[Any, ...], tuple[dict[str, Any], dict[str, Any]]] = {}
        self._issuer_attributes: dict[str | None, dict[str, Any]] = {}
        self._result_attributes: dict[tuple[str | None, str], dict[str, Any]] = {}
        self.active = True

    def _issuer(self, issuer: str | None) -> dict[str, Any]:
        found = self._issuer_attributes.get(issuer)
        if found is None:
            found = {"issuer": issuer} if issuer is not None else {}
            if len(self._issuer_attributes) < _MAX_CACHED_ATTRIBUTES:
                self._issuer_attributes[issuer] = found
        return found

    def _with_result(self, issuer: str | None, result: str) -> dict[str, Any]:
        key = (issuer, result)
        found = self._result_attributes.get(key)
        if found is None:
            found = {**self._issuer(issuer), "result": result}
            if len(self._result_attributes) < _MAX_CACHED_ATTRIBUTES:
                self._result_attributes[key] = found
        return found

    def _decision_attributes(self, event: Event) -> tuple[dict[str, Any], dict[str, Any]]:
        """(counter and span attributes, histogram attributes), cached per combination."""
        reason = ev.metric_reason(event.reason)
        client = event.client_id if self.client_id else None
        key = (event.kind, reason, event.issuer, event.algorithm, client, event.cached)
        found = self._attributes.get(key)
        if found is None:
            timed: dict[str, Any] = {"outcome": event.kind}
            if event.issuer is not None:
                timed["issuer"] = event.issuer
            if event.algorithm is not None:
                timed["algorithm"] = event.algorithm
            if event.cached is not None:
                timed["cache"] = "hit" if event.cached else "miss"
            counted = {k: v for k, v in timed.items() if k != "cache"}
            if reason is not None:
                counted["reason"] = reason
            if client is not None:
                counted["client_id"] = client
            found = (counted, timed)
            if len(self._attributes) >= _MAX_CACHED_ATTRIBUTES:
                self._attributes.clear()
            self._attributes[key] = found
        return found

    def __call__(self, event: Event) -> None:
        if not self.active:
            return
        kind = event.kind
        if kind in ev.DECISION_KINDS:
            self._decision(event)
        elif kind in _FETCH_RESULTS:
            self.fetches.add(1, self._with_result(event.issuer, _FETCH_RESULTS[kind]))
        elif kind == ev.REFRESH_AHEAD:
            self.refreshes.add(1, self._issuer(event.issuer))
        elif kind == ev.UNKNOWN_KID:
            self.unknown_kids.add(1, self._issuer(event.issuer))
        elif kind == ev.COOLDOWN_HIT:
            self.cooldown_hits.add(1, self._issuer(event.issuer))
        elif kind == ev.KEYS_CHANGED:
            self.changes.add(1, self._issuer(event.issuer))

    def _decision(self, event: Event) -> None:
        counted, timed = self._decision_attributes(event)
        self.decisions.add(1, counted)
        if event.cached is not None:
            self.cache.add(1, self._with_result(event.issuer, "hit" if event.cached else "miss"))
        if event.duration is None:  # refused by an adapter: not a verification
            return
        self.duration.record(event.duration, timed)
        if self.tracer is not None:
            self._span(event, {**counted, **timed})

    def _span(self, event: Event, attributes: dict[str, Any]) -> None:
        from opentelemetry.trace import SpanKind, Status, StatusCode

        end = time.time_ns()
        start = end - int((event.duration or 0.0) * 1e9)
        span = self.tracer.start_span("m2m_guard.verify", kind=SpanKind.INTERNAL,
                                      start_time=start, attributes=attributes)
        if event.reason in _ERROR_REASONS:
            span.set_status(Status(StatusCode.ERROR, event.reason))
        span.end(end_time=end)


def instrument(verifier: TokenVerifier, *, meter_provider: MeterProvider | None = None,
               tracer_provider: TracerProvider | None = None,
               traces: bool = True) -> Callable[[], None]:
    """Record `verifier`'s events as OpenTelemetry metrics (and spans); returns a function
    that stops recording. Providers default to the global ones (`opentelemetry.metrics` /
    `opentelemetry.trace`). Raises `ImportError` naming the extra when OpenTelemetry is
    missing.
    """
    try:
        from opentelemetry import metrics, trace
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError('m2m_guard.otel needs OpenTelemetry: pip install "m2m-guard[otel]"'
                          ) from exc
    meter = (meter_provider or metrics.get_meter_provider()).get_meter(_SCOPE, _version())
    tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer(_SCOPE, _version()) \
        if traces else None
    recorder = _Recorder(meter, tracer, client_id=verifier.settings.events_client_id)
    _observe_key_sets(meter, verifier, recorder)
    unsubscribe = verifier.subscribe(recorder)

    def stop() -> None:
        recorder.active = False  # the observed gauges have no unregister: they go quiet
        unsubscribe()

    return stop


def _observe_key_sets(meter: Any, verifier: TokenVerifier, recorder: _Recorder) -> None:
    from opentelemetry.metrics import Observation

    ref = weakref.ref(verifier)  # the meter must not keep the verifier alive

    def issuers() -> Iterable[tuple[str, dict[str, Any]]]:
        current = ref()
        if current is None or not recorder.active:
            return ()
        return tuple(current.health()["issuers"].items())

    def keys(options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(entry["keys"], {"issuer": name}) for name, entry in issuers()]

    def usable(options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(1 if entry["usable"] else 0, {"issuer": name})
                for name, entry in issuers()]

    meter.create_observable_gauge("m2m_guard.jwks.keys", callbacks=[keys], unit="{key}",
                                  description="Usable keys held per issuer.")
    meter.create_observable_gauge("m2m_guard.jwks.usable", callbacks=[usable], unit="1",
                                  description="1 when the issuer's key set is usable, else 0.")
