"""`KeyStore`: the key sets of a verifier's issuers, and everything that keeps them fresh.

Per issuer it holds the cache state (`jwks.KeySetState`, decided by the sans-IO `CachePolicy`),
the lock that guards it and the fetch in progress (single flight: one fetch per issuer at a
time, across tasks and threads; the others wait for it). It selects the key for a token
(`select`), schedules refreshes (a background task on asyncio, a thread elsewhere), reports on
itself (`health`, `request_refresh`) and stops its background work (`aclose` / `close`).

Key selection is a generator that yields what it needs (`Need`: start or join a fetch and wait,
or start a background refresh) and returns the key; the verifier's two fronts satisfy a need
with `satisfy_async` or `satisfy_sync`. The I/O is behind a `Fetcher` (httpx drivers by default,
`HttpxFetcher`); tests and embedders may pass their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import anyio.to_thread

from ..errors import InvalidToken, IssuerUnavailable
from ..settings import GuardSettings, IssuerSettings
from .fetch import FetchError, FetchResult, fetch_key_set_async, fetch_key_set_sync
from .jwks import CachePolicy, Fetch, KeySetState
from .keys import VerificationKey
from .logs import log_key_set

if TYPE_CHECKING:
    from ..events import EventStream
    from .jws import CompactJWS

__all__ = ["Fetcher", "HttpxFetcher", "IssuerKeys", "KeyStore", "Need"]

logger = logging.getLogger("m2m_guard")


class Fetcher(Protocol):
    """How a `KeyStore` gets an issuer's key set: discovery when `jwks_url` is None, then the
    key set (conditional on `etag`). Raise `fetch.FetchError` for a failure the issuer caused;
    any other exception is logged as a bug and counts as a failed fetch."""

    async def fetch_async(self, issuer: IssuerSettings, *, jwks_url: str | None,
                          etag: str | None) -> FetchResult: ...

    def fetch_sync(self, issuer: IssuerSettings, *, jwks_url: str | None,
                   etag: str | None) -> FetchResult: ...


class HttpxFetcher:
    """The default `Fetcher`: `fetch.fetch_key_set_async` / `fetch_key_set_sync` over httpx."""

    __slots__ = ("settings",)

    def __init__(self, settings: GuardSettings) -> None:
        self.settings = settings

    async def fetch_async(self, issuer: IssuerSettings, *, jwks_url: str | None,
                          etag: str | None) -> FetchResult:
        return await fetch_key_set_async(issuer, self.settings, jwks_url=jwks_url, etag=etag)

    def fetch_sync(self, issuer: IssuerSettings, *, jwks_url: str | None,
                   etag: str | None) -> FetchResult:
        return fetch_key_set_sync(issuer, self.settings, jwks_url=jwks_url, etag=etag)


class _Flight:
    """One fetch in progress. Waiters in the owner's event-loop thread await `event`; others
    (threads, other loops) wait on `done`."""

    __slots__ = ("done", "event", "owner_thread")

    def __init__(self, event: anyio.Event | None) -> None:
        self.done = threading.Event()
        self.event = event
        self.owner_thread = threading.get_ident()

    def finish(self) -> None:
        self.done.set()
        if self.event is not None:
            self.event.set()

    async def wait_async(self, timeout: float) -> None:
        if self.event is not None and self.owner_thread == threading.get_ident():
            with anyio.move_on_after(timeout):
                await self.event.wait()
        else:
            await anyio.to_thread.run_sync(self.done.wait, timeout)


class IssuerKeys:
    """One issuer's cache state, the lock that guards it and the fetch in progress."""

    __slots__ = ("fast_until", "flight", "jwks_url", "lock", "settings", "state", "token_endpoint")

    def __init__(self, settings: IssuerSettings) -> None:
        self.settings = settings
        self.state = KeySetState()
        self.lock = threading.Lock()
        self.flight: _Flight | None = None
        self.jwks_url = settings.jwks_url
        self.token_endpoint: str | None = None  # from discovery, for documentation only
        # Until this monotonic time the key set is fresh: no planning needed on the hot path.
        self.fast_until = -math.inf


class Need:
    """What key selection asks its front to do for `issuer` before it can go on."""

    __slots__ = ("issuer", "kind")

    FETCH = "start or join a fetch, and wait for it"
    JOIN = "wait for the fetch in progress, if any"
    REFRESH = "start a background refresh"

    def __init__(self, kind: str, issuer: IssuerKeys) -> None:
        self.kind = kind
        self.issuer = issuer


class KeyStore:
    """The key sets of `settings.issuers` (see the module doc). `clock` is monotonic, `wall`
    epoch seconds; `observer` is the owner's event stream while someone subscribes."""

    def __init__(self, settings: GuardSettings, *, fetcher: Fetcher | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.policy = CachePolicy.from_settings(settings)
        self.fetcher: Fetcher = fetcher if fetcher is not None else HttpxFetcher(settings)
        self.issuers = {entry.issuer: IssuerKeys(entry) for entry in settings.issuers}
        self.observer: EventStream | None = None
        self._clock = clock
        self._wall = wall
        # A waiter gives up after this long (the owner's fetch is bounded by its own timeout).
        self._wait = settings.http_timeout * 2 + 1
        self._tasks: set[asyncio.Task[None]] = set()
        self._threads: set[threading.Thread] = set()
        self.closed = False

    # -- key selection ---------------------------------------------------------------------
    def select(self, issuer: IssuerKeys,
               jws: CompactJWS) -> VerificationKey | Generator[Need, None, VerificationKey]:
        """The key for `jws` at once when the set is fresh and holds it, else a generator that
        yields `Need`s and returns the key; both raise `InvalidToken` / `IssuerUnavailable`."""
        if self._clock() < issuer.fast_until:
            key = self._pick(issuer, jws)
            if key is not None:
                return key
        return self._select_slow(issuer, jws)

    def _pick(self, issuer: IssuerKeys, jws: CompactJWS) -> VerificationKey | None:
        keys = issuer.state.keys
        if keys is None:
            return None
        if jws.kid is not None:  # the usual case, one key for the kid, without a list
            pool = keys.by_kid.get(jws.kid)
            if pool is not None and len(pool) == 1 and jws.alg in pool[0].verifiers:
                return pool[0]
        candidates = keys.candidates(jws.kid, jws.alg)
        if len(candidates) == 1:
            return candidates[0]
        if not candidates and jws.kid is not None and jws.kid in keys.by_kid:
            # The kid is known but its key is pinned to (or only fits) other algorithms: a
            # refetch would not help, so say what is wrong without spending the cooldown.
            raise InvalidToken("The token's algorithm does not match its key.",
                               reason="algorithm_mismatch")
        if len(candidates) > 1:
            which = "match the token's kid" if jws.kid is not None else \
                "fit a token without kid"
            raise InvalidToken(f"Several keys {which}; the key is ambiguous.",
                               reason="ambiguous_key")
        return None

    def _select_slow(self, issuer: IssuerKeys,
                     jws: CompactJWS) -> Generator[Need, None, VerificationKey]:
        policy, state = self.policy, issuer.state
        waited = False
        while True:
            with issuer.lock:
                plan = policy.plan(state, self._clock())
            # One fetch (or join) per verification: with a zero cooldown, a failed fetch leaves
            # no backoff and the plan would ask for another one forever.
            if plan.fetch is Fetch.WAIT and not waited:
                waited = True
                yield Need(Need.FETCH, issuer)
                continue
            if plan.fetch is Fetch.BACKGROUND:
                yield Need(Need.REFRESH, issuer)
            if plan.keys is None:
                if state.keys is not None and state.failing:
                    detail = "and its cached keys are too old"
                else:
                    detail = "and no keys are cached"
                raise IssuerUnavailable(
                    f"The token issuer cannot be reached {detail}.",
                    retry_after=math.ceil(plan.retry_after or policy.cooldown),
                )
            break
        key = self._pick(issuer, jws)
        if key is not None:
            return key
        # The kid is unknown (or there is no kid and no single key fits): refetch at most once
        # per cooldown; join a fetch already running rather than starting one.
        with issuer.lock:
            now = self._clock()
            joining = issuer.flight is not None
            allowed = joining or policy.may_refetch_for(state, jws.kid, now)
            if allowed and not joining:
                policy.note_refetch(state, now)
        if self.observer is not None:  # events hook
            self.observer.unknown_kid(issuer.settings.issuer, jws.kid, refetch=allowed)
        if allowed:
            yield Need(Need.JOIN if joining else Need.FETCH, issuer)
            key = self._pick(issuer, jws)
            if key is not None:
                return key
            if jws.kid is not None:
                with issuer.lock:
                    policy.note_unknown_kid(state, jws.kid)
        if jws.kid is None:
            raise InvalidToken("The token has no kid and no single key of its issuer fits it.",
                               reason="unknown_kid")
        raise InvalidToken("The token's signing key is not in its issuer's key set.",
                           reason="unknown_kid")

    async def satisfy_async(self, need: Need) -> Exception | None:
        """Do what `need` asks, without blocking the event loop; an unexpected exception is
        returned (for the pipeline to refuse with), never raised."""
        try:
            if need.kind is Need.REFRESH:
                self.spawn_async(need.issuer)
            else:
                await self.fetch_async(need.issuer, join_only=need.kind is Need.JOIN)
        except Exception as exc:  # noqa: BLE001 - the pipeline turns it into a refusal
            return exc
        return None

    def satisfy_sync(self, need: Need) -> Exception | None:
        """Do what `need` asks, blocking this thread while a fetch runs (as `satisfy_async`)."""
        try:
            if need.kind is Need.REFRESH:
                self.spawn_thread(need.issuer)
            else:
                self.fetch_sync(need.issuer, join_only=need.kind is Need.JOIN)
        except Exception as exc:  # noqa: BLE001 - the pipeline turns it into a refusal
            return exc
        return None

    # -- fetching: one step each, the two drivers differ only in how they wait -------------
    def _start_flight(self, issuer: IssuerKeys, *, async_owner: bool,
                      join_only: bool) -> tuple[_Flight | None, bool]:
        with issuer.lock:
            if issuer.flight is not None or join_only:
                return issuer.flight, False
            # The event is made by the owner only (a cold start has many joiners).
            flight = issuer.flight = _Flight(anyio.Event() if async_owner else None)
            return flight, True

    def _conditions(self, issuer: IssuerKeys) -> dict[str, Any]:
        return {"jwks_url": issuer.jwks_url,
                "etag": issuer.state.etag if issuer.state.keys is not None else None}

    @contextlib.contextmanager
    def _owning(self, issuer: IssuerKeys, flight: _Flight) -> Iterator[list[FetchResult]]:
        """The owner's fetch, which puts its result in the list it is given: a failed fetch
        becomes the issuer's state (never raised), a result is stored, and the flight lands
        whatever happens, waking its waiters."""
        fetched: list[FetchResult] = []
        try:
            try:
                yield fetched
            except Exception as exc:  # a failed fetch is state, not an error
                if isinstance(exc, FetchError):
                    self._store(issuer, None, str(exc), exc.retry_after)
                else:
                    logger.error("m2m_guard unexpected error fetching keys of %s",
                                 issuer.settings.issuer, exc_info=exc)
                    self._store(issuer, None, f"unexpected error: {type(exc).__name__}")
            else:
                self._store(issuer, fetched[0], None)
        finally:
            with issuer.lock:
                issuer.flight = None
            flight.finish()

    async def fetch_async(self, issuer: IssuerKeys, *, join_only: bool = False) -> None:
        """Fetch `issuer`'s key set (or wait for the fetch in progress); never raises."""
        flight, owner = self._start_flight(issuer, async_owner=True, join_only=join_only)
        if flight is not None and not owner:
            await flight.wait_async(self._wait)
        elif flight is not None:
            with self._owning(issuer, flight) as fetched:
                fetched.append(await self.fetcher.fetch_async(issuer.settings,
                                                              **self._conditions(issuer)))

    def fetch_sync(self, issuer: IssuerKeys, *, join_only: bool = False) -> None:
        """The blocking `fetch_async`."""
        flight, owner = self._start_flight(issuer, async_owner=False, join_only=join_only)
        if flight is not None and not owner:
            flight.done.wait(self._wait)
        elif flight is not None:
            with self._owning(issuer, flight) as fetched:
                fetched.append(self.fetcher.fetch_sync(issuer.settings,
                                                       **self._conditions(issuer)))

    def _store(self, issuer: IssuerKeys, result: FetchResult | None, error: str | None,
               retry_after: float | None = None) -> None:
        now, wall = self._clock(), self._wall()
        with issuer.lock:
            state = issuer.state
            before = state.keys
            if result is not None:
                issuer.jwks_url = result.jwks_url if issuer.settings.jwks_url is None \
                    else issuer.settings.jwks_url
                if result.token_endpoint is not None:
                    issuer.token_endpoint = result.token_endpoint
                self.policy.on_success(state, result.keys, now, wall,
                                       max_age=result.max_age, etag=result.etag)
            else:
                if issuer.settings.jwks_url is None:
                    issuer.jwks_url = None  # discover again next time
                self.policy.on_failure(state, error or "unknown error", now, wall,
                                       retry_after=retry_after)
            issuer.fast_until = (self.policy.refresh_at(state)
                                 if state.keys is not None and not state.failing else -math.inf)
            after = state.keys
        log_key_set(issuer.settings.issuer, result, error, before, after, state.ttl)
        if self.observer is not None:  # events hook
            self.observer.key_set(issuer.settings.issuer, result, error, before, after)

    # -- background refreshes --------------------------------------------------------------
    def _may_spawn(self, issuer: IssuerKeys) -> bool:
        if self.closed or issuer.flight is not None:
            return False
        if self.observer is not None:  # events hook (before the fetch can report back)
            self.observer.refresh_ahead(issuer.settings.issuer)
        return True

    def spawn_async(self, issuer: IssuerKeys) -> None:
        """Refresh `issuer` in the background: a task on asyncio, a thread elsewhere."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not asyncio (e.g. trio): refresh on a thread instead
            self.spawn_thread(issuer)
            return
        if not self._may_spawn(issuer):
            return
        task = loop.create_task(self.fetch_async(issuer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def spawn_thread(self, issuer: IssuerKeys) -> None:
        """Refresh `issuer` on a daemon thread."""
        if not self._may_spawn(issuer):
            return
        thread = threading.Thread(target=self.fetch_sync, args=(issuer,),
                                  name="m2m-guard-refresh", daemon=True)
        self._threads.add(thread)
        thread.start()

    @property
    def background(self) -> int:
        """How many background refreshes (tasks and threads) are still running."""
        return len(self._tasks) + sum(1 for thread in self._threads if thread.is_alive())

    def request_refresh(self) -> int:
        """Start a background fetch for every issuer whose key set is not usable, unless one is
        running or the failure backoff says wait; return how many were started. Any thread."""
        started = 0
        if self.closed:
            return started
        now = self._clock()
        for issuer in self.issuers.values():
            with issuer.lock:
                state = issuer.state
                usable = state.keys is not None and now < self.policy.usable_until(state)
                due = now >= self.policy.retry_at(state) and issuer.flight is None
            if not usable and due:
                self.spawn_async(issuer)
                started += 1
        return started

    # -- warm-up, reports, shutdown ---------------------------------------------------------
    async def warm_up(self) -> None:
        """Load every key set now (issuers in parallel); `IssuerUnavailable` names failures."""
        async with anyio.create_task_group() as group:
            for issuer in self.issuers.values():
                group.start_soon(self.fetch_async, issuer)
        self._raise_if_cold()

    def warm_up_sync(self) -> None:
        """The blocking `warm_up` (issuers one after the other)."""
        for issuer in self.issuers.values():
            self.fetch_sync(issuer)
        self._raise_if_cold()

    def _raise_if_cold(self) -> None:
        failed = [f"{issuer.settings.issuer}: {issuer.state.last_error}"
                  for issuer in self.issuers.values() if issuer.state.keys is None]
        if failed:
            raise IssuerUnavailable("Key sets could not be loaded: " + "; ".join(failed))

    def token_endpoint(self, issuer: str | None = None) -> str | None:
        """The discovery document's `token_endpoint` of `issuer` (default: the first)."""
        entry = self.issuers.get(issuer) if issuer is not None \
            else next(iter(self.issuers.values()))
        return entry.token_endpoint if entry is not None else None

    def health(self) -> dict[str, Any]:
        """Per issuer: status, keys, age, last success and error, next refresh; `ready`."""
        now = self._clock()
        wall = self._wall()
        report: dict[str, Any] = {}
        for name, issuer in self.issuers.items():
            with issuer.lock:
                report[name] = self._entry(issuer, now, wall)
        return {"ready": all(entry["usable"] for entry in report.values()), "issuers": report}

    def _entry(self, issuer: IssuerKeys, now: float, wall: float) -> dict[str, Any]:
        state, policy = issuer.state, self.policy
        usable = state.keys is not None and now < policy.usable_until(state)
        fresh = usable and now < policy.expires_at(state)
        return {
            "status": "fresh" if fresh else "stale" if usable else
                      "unavailable" if state.failing else "cold",
            "usable": usable,
            "keys": len(state.keys) if state.keys is not None else 0,
            "key_ids": [k.kid for k in state.keys.keys] if state.keys else [],
            "dropped_keys": [
                {"kid": kid, "reason": reason} for kid, reason in state.keys.dropped
            ] if state.keys else [],
            "age": (now - state.fetched_at) if state.keys is not None else None,
            "ttl": state.ttl if state.keys is not None else None,
            "jwks_url": issuer.jwks_url,
            "last_success": state.last_success_wall,
            "last_error": state.last_error,
            "last_error_at": state.last_error_wall,
            "next_refresh": (wall + policy.refresh_at(state) - now)
            if state.keys is not None else None,
            "fetches": state.fetches,
        }

    async def aclose(self) -> None:
        """Cancel background refreshes (async ones; threads are waited for briefly)."""
        self.closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except BaseException as exc:  # noqa: BLE001 - cancelled or failed, either way done
                logger.debug("m2m_guard background refresh ended: %r", exc)
        self._tasks.clear()
        self._join_threads()

    def close(self) -> None:
        """Stop background refreshes from any thread (tasks cancelled on their own loop)."""
        self.closed = True
        for task in list(self._tasks):
            try:
                task.get_loop().call_soon_threadsafe(task.cancel)
            except RuntimeError:  # that loop is closed: the task cannot run any more
                self._tasks.discard(task)
        self._join_threads()

    def _join_threads(self) -> None:
        deadline = time.monotonic() + self._wait
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads = {t for t in self._threads if t.is_alive()}
