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

Counters are counted in plain Python (a dict per counter, behind one short lock, so counts are
exact under any threading) and reported through observable counters: OpenTelemetry reads the
cumulative totals when it collects, so each point is a monotonic, cumulative Sum as before, and a
verification pays a dictionary update instead of the SDK's per-call measurement path. The
duration histogram stays synchronous (OpenTelemetry has no observable histogram). The counts
belong to the meter provider, shared by every verifier instrumented on it, as the instruments
are.

`instrument()` returns ``stop``: the verifier's events are no longer recorded and its key-set
gauges stop reporting; counters keep reporting the totals reached (a cumulative counter does
not go back to zero), and another `instrument()` of the verifier continues from them.
Instrumenting a verifier that is already instrumented raises `RuntimeError` (it would count
every event twice).

`import m2m_guard` never imports OpenTelemetry; this module imports it when called.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Hashable, Iterable
from typing import TYPE_CHECKING, Any

from . import events as ev
from .events import Event

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation
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
# Distinct attribute sets one counter keeps; further ones are counted under the attribute set
# the OpenTelemetry SDK itself uses past its cardinality limit (2000 by default, so normally the
# SDK folds first). Bounds memory when `events_client_id` meets many clients.
_MAX_SERIES = 4096
_OVERFLOW_KEY: Hashable = ("otel.metric.overflow",)
_OVERFLOW_ATTRIBUTES: dict[str, Any] = {"otel.metric.overflow": True}


def _version() -> str:
    from . import __version__
    return __version__


class _Sum:
    """One counter's cumulative counts: attribute-set key -> count, and key -> attributes.

    Updated under the owning `_Hub`'s lock: an uncontended `threading.Lock` costs about 0.1 µs,
    a fiftieth of a synchronous SDK counter update, and keeps counts exact under any
    interleaving (a bare ``d[k] = d.get(k, 0) + 1`` can lose an update when a thread switch
    falls between the read and the write, and free-threaded builds have no GIL at all).
    """

    __slots__ = ("attributes", "counts")

    def __init__(self) -> None:
        self.counts: dict[Hashable, int] = {}
        self.attributes: dict[Hashable, dict[str, Any]] = {}

    def add_new(self, key: Hashable, attributes: dict[str, Any]) -> None:
        """First count of `key` (the caller holds the lock and found no count for it)."""
        if len(self.counts) >= _MAX_SERIES:
            key, attributes = _OVERFLOW_KEY, _OVERFLOW_ATTRIBUTES
        self.attributes[key] = attributes
        self.counts[key] = self.counts.get(key, 0) + 1

    def observe(self, lock: threading.Lock) -> list[Observation]:
        from opentelemetry.metrics import Observation

        with lock:
            items = list(self.counts.items())
        # Read under the lock above is safe too: an entry of `attributes` is written before
        # its count and never removed.
        return [Observation(count, self.attributes[key]) for key, count in items]


class _Hub:
    """The instruments of one meter provider and the counts behind its observable counters,
    shared by every verifier instrumented on that provider (as synchronous instruments would
    be: the SDK returns the same instrument for the same name, and ignores the callbacks of a
    second observable instrument of that name)."""

    def __init__(self, meter: Meter) -> None:
        self.lock = threading.Lock()
        self.decisions = _Sum()
        self.cache = _Sum()
        self.fetches = _Sum()
        self.refreshes = _Sum()
        self.unknown_kids = _Sum()
        self.cooldown_hits = _Sum()
        self.changes = _Sum()
        self.verifiers: tuple[tuple[weakref.ref[TokenVerifier], _Recorder], ...] = ()
        self._counter(meter, self.decisions, "m2m_guard.decisions", "{decision}",
                      "Token verifications and requests refused by the guard, by outcome.")
        try:
            self.duration = meter.create_histogram(
                "m2m_guard.verification.duration", unit="s",
                description="Time to verify a token (cache hits included).",
                explicit_bucket_boundaries_advisory=DURATION_BUCKETS)
        except TypeError:  # an API without bucket advice: the SDK's defaults apply
            self.duration = meter.create_histogram(
                "m2m_guard.verification.duration", unit="s",
                description="Time to verify a token (cache hits included).")
        self._counter(meter, self.cache, "m2m_guard.token_cache.lookups", "{lookup}",
                      "Verified-token cache lookups by tokens reaching it, hit or miss.")
        self._counter(meter, self.fetches, "m2m_guard.jwks.fetches", "{fetch}",
                      "Key-set fetches by result (ok, not_modified, error).")
        self._counter(meter, self.refreshes, "m2m_guard.jwks.refreshes", "{refresh}",
                      "Background key-set refreshes started.")
        self._counter(meter, self.unknown_kids, "m2m_guard.jwks.unknown_kids", "{token}",
                      "Tokens naming a key id the cached key set does not hold.")
        self._counter(meter, self.cooldown_hits, "m2m_guard.jwks.cooldown_hits", "{token}",
                      "Unknown key ids that could not cause a refetch (cooldown, backoff).")
        self._counter(meter, self.changes, "m2m_guard.jwks.changes", "{change}",
                      "Key-set changes (first load included).")
        self._gauges(meter)

    def _counter(self, meter: Meter, counts: _Sum, name: str, unit: str,
                 description: str) -> None:
        lock = self.lock

        def observe(options: CallbackOptions) -> Iterable[Observation]:
            return counts.observe(lock)

        meter.create_observable_counter(name, callbacks=[observe], unit=unit,
                                        description=description)

    def attach(self, verifier: TokenVerifier, recorder: _Recorder) -> None:
        with self.lock:  # the meter must not keep the verifier alive: a weak reference
            self.verifiers = (*self.verifiers, (weakref.ref(verifier), recorder))

    def detach(self, recorder: _Recorder) -> None:
        with self.lock:
            self.verifiers = tuple(item for item in self.verifiers if item[1] is not recorder)

    def _issuers(self) -> list[tuple[str, dict[str, Any]]]:
        found = []
        for ref, recorder in self.verifiers:
            current = ref()
            if current is not None and recorder.active:
                found.extend(current.health()["issuers"].items())
        return found

    def _gauges(self, meter: Meter) -> None:
        from opentelemetry.metrics import Observation

        def keys(options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(entry["keys"], {"issuer": name})
                    for name, entry in self._issuers()]

        def usable(options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(1 if entry["usable"] else 0, {"issuer": name})
                    for name, entry in self._issuers()]

        meter.create_observable_gauge("m2m_guard.jwks.keys", callbacks=[keys], unit="{key}",
                                      description="Usable keys held per issuer.")
        meter.create_observable_gauge("m2m_guard.jwks.usable", callbacks=[usable], unit="1",
                                      description="1 when the issuer's key set is usable, "
                                                  "else 0.")


# One hub per meter provider (weakly held: a discarded provider takes its hub with it); the
# global provider has one hub of its own, made through the global proxy so that it follows a
# provider set later.
_hubs: weakref.WeakKeyDictionary[Any, _Hub] = weakref.WeakKeyDictionary()
_global_hub: list[_Hub] = []
_registry_lock = threading.Lock()
_instrumented: weakref.WeakSet[TokenVerifier] = weakref.WeakSet()


def _hub(provider: Any, *, is_global: bool) -> _Hub:
    """The hub of `provider` (caller holds `_registry_lock`)."""
    if is_global:
        if not _global_hub:
            _global_hub.append(_Hub(provider.get_meter(_SCOPE, _version())))
        return _global_hub[0]
    try:
        hub = _hubs.get(provider)
    except TypeError:  # a provider that cannot be weakly referenced: a hub of its own
        return _Hub(provider.get_meter(_SCOPE, _version()))
    if hub is None:
        hub = _Hub(provider.get_meter(_SCOPE, _version()))
        _hubs[provider] = hub
    return hub


# A decision's attributes, prepared once per combination: the counter key and attributes,
# the histogram attributes, the span attributes, the cache-lookup key and attributes.
_Prepared = tuple[Hashable, dict[str, Any], dict[str, Any], dict[str, Any],
                  Hashable, dict[str, Any]]


class _Recorder:
    """The subscriber: turns each `Event` into counts, a histogram point and a span."""

    def __init__(self, hub: _Hub, tracer: Any, *, client_id: bool) -> None:
        self.hub = hub
        self.lock = hub.lock
        self.decisions = hub.decisions
        self.cache = hub.cache
        self.duration = hub.duration
        self.tracer = tracer
        self.client_id = client_id
        self._attributes: dict[Hashable, _Prepared] = {}
        self._issuer_attributes: dict[str | None, dict[str, Any]] = {}
        self.active = True
        if tracer is not None:
            from opentelemetry.trace import SpanKind, Status, StatusCode

            self._internal = SpanKind.INTERNAL
            self._error = {reason: Status(StatusCode.ERROR, reason) for reason in _ERROR_REASONS}

    def _issuer(self, issuer: str | None) -> dict[str, Any]:
        found = self._issuer_attributes.get(issuer)
        if found is None:
            found = {"issuer": issuer} if issuer is not None else {}
            if len(self._issuer_attributes) < _MAX_CACHED_ATTRIBUTES:
                self._issuer_attributes[issuer] = found
        return found

    def _prepare(self, event: Event) -> _Prepared:
        """The attributes of a decision, cached per combination."""
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
            result = None if event.cached is None else "hit" if event.cached else "miss"
            lookup = {**self._issuer(event.issuer), "result": result}
            found = (key[:5], counted, timed, {**counted, **timed}, (event.issuer, result),
                     lookup)
            if len(self._attributes) >= _MAX_CACHED_ATTRIBUTES:
                self._attributes.clear()
            self._attributes[key] = found
        return found

    def _count(self, counts: _Sum, key: Hashable, attributes: dict[str, Any]) -> None:
        with self.lock:
            found = counts.counts.get(key)
            if found is None:
                counts.add_new(key, attributes)
            else:
                counts.counts[key] = found + 1

    def __call__(self, event: Event) -> None:
        if not self.active:
            return
        kind = event.kind
        if kind in ev.DECISION_KINDS:
            self._decision(event)
            return
        hub, issuer = self.hub, event.issuer
        if kind in _FETCH_RESULTS:
            result = _FETCH_RESULTS[kind]
            self._count(hub.fetches, (issuer, result), {**self._issuer(issuer), "result": result})
        elif kind == ev.REFRESH_AHEAD:
            self._count(hub.refreshes, issuer, self._issuer(issuer))
        elif kind == ev.UNKNOWN_KID:
            self._count(hub.unknown_kids, issuer, self._issuer(issuer))
        elif kind == ev.COOLDOWN_HIT:
            self._count(hub.cooldown_hits, issuer, self._issuer(issuer))
        elif kind == ev.KEYS_CHANGED:
            self._count(hub.changes, issuer, self._issuer(issuer))

    def _decision(self, event: Event) -> None:
        key, counted, timed, spanned, lookup_key, lookup = self._prepare(event)
        decisions, cache = self.decisions.counts, self.cache.counts
        with self.lock:  # both counts in one short critical section
            found = decisions.get(key)
            if found is None:
                self.decisions.add_new(key, counted)
            else:
                decisions[key] = found + 1
            if event.cached is not None:
                found = cache.get(lookup_key)
                if found is None:
                    self.cache.add_new(lookup_key, lookup)
                else:
                    cache[lookup_key] = found + 1
        if event.duration is None:  # refused by an adapter: not a verification
            return
        self.duration.record(event.duration, timed)
        if self.tracer is not None:
            end = time.time_ns()
            span = self.tracer.start_span("m2m_guard.verify", kind=self._internal,
                                          start_time=end - int(event.duration * 1e9),
                                          attributes=spanned)
            if event.reason in _ERROR_REASONS:
                span.set_status(self._error[event.reason])
            span.end(end_time=end)


def instrument(verifier: TokenVerifier, *, meter_provider: MeterProvider | None = None,
               tracer_provider: TracerProvider | None = None,
               traces: bool = True) -> Callable[[], None]:
    """Record `verifier`'s events as OpenTelemetry metrics (and spans); returns a function
    that stops recording (counters then keep their totals; see the module docstring).

    Providers default to the global ones (`opentelemetry.metrics` / `opentelemetry.trace`).
    Raises `RuntimeError` if `verifier` is already instrumented (call the first `stop()`
    before instrumenting it again, even with other providers: to export to several backends,
    give one meter provider several readers), and `ImportError` naming the extra when
    OpenTelemetry is missing.
    """
    try:
        from opentelemetry import metrics, trace
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError('m2m_guard.otel needs OpenTelemetry: pip install "m2m-guard[otel]"'
                          ) from exc
    provider = meter_provider or metrics.get_meter_provider()
    is_global = provider is metrics.get_meter_provider()
    tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer(_SCOPE, _version()) \
        if traces else None
    with _registry_lock:
        if verifier in _instrumented:
            raise RuntimeError(
                "this TokenVerifier is already instrumented: call the stop() returned by the "
                "first m2m_guard.otel.instrument() before instrumenting it again (instrumenting "
                "it twice would count every event twice)")
        hub = _hub(provider, is_global=is_global)
        recorder = _Recorder(hub, tracer, client_id=verifier.settings.events_client_id)
        _instrumented.add(verifier)
    hub.attach(verifier, recorder)
    unsubscribe = verifier.subscribe(recorder)
    ref = weakref.ref(verifier)

    def stop() -> None:
        with _registry_lock:
            if not recorder.active:
                return  # stopped already
            recorder.active = False
            current = ref()
            if current is not None:
                _instrumented.discard(current)
        hub.detach(recorder)
        unsubscribe()

    return stop
