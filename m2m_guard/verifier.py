"""`TokenVerifier`: the one verification engine, with an async and a sync front (DESIGN §1).

The pipeline, in order: size limit, compact framing, canonical base64url, strict JSON header
(`jws.parse_compact`); token type; strict JSON claims and issuer selection by `iss` (only
configured issuers are ever contacted); the issuer's key set from the cache and the key by `kid`;
the signature with the algorithm pinned to the key; then the claims (`aud`, `exp`, `nbf`, `iat`,
claim types, required claims). Success gives an immutable `AccessToken`; every failure raises a
`GuardError` subclass, and an unexpected exception inside verification becomes `InvalidToken`
(logged with its traceback), never an error the caller has to handle as a 500.

Both fronts share everything but the waiting: key selection is a generator that yields what it
needs (`_NEED_FETCH`, `_SPAWN_REFRESH`) and each front satisfies that with its own I/O driver.
One fetch per issuer runs at a time, across tasks and threads (single flight).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable, Generator, Mapping
from typing import Any, NamedTuple

import anyio
import anyio.to_thread

from .encoding import loads_json
from .errors import GuardError, InvalidToken, IssuerUnavailable
from .events import EventStream, Subscriber, subscribe
from .fetch import FetchError, FetchResult, fetch_key_set_async, fetch_key_set_sync
from .jwks import CachePolicy, Fetch, KeySetState
from .jws import CompactJWS, HeaderCache, check_signature, check_token_size, parse_compact
from .keys import KeySet, VerificationKey
from .logs import log_key_set, log_refusal
from .scopes import ScopeReader, scopes_from_claims
from .settings import GuardSettings, IssuerSettings
from .token import AccessToken
from .token_cache import VerifiedTokenCache

__all__ = ["TokenVerifier"]

logger = logging.getLogger("m2m_guard")
_sha256 = hashlib.sha256

_TYPES = frozenset({"jwt", "at+jwt", "application/at+jwt"})
_STRICT_TYPES = frozenset({"at+jwt", "application/at+jwt"})
_MAX_NUMERIC_DATE = 253402300799  # 9999-12-31T23:59:59Z: beyond it no datetime can hold it
_STRING_CLAIMS = ("sub", "jti", "client_id", "azp", "oid")
_ABSENT = object()  # not an int: an absent time claim goes to `_number`, which says None
# Cached claim sets share strings (`_SharedStrings`) once the cache holds this many entries:
# below it the saving is at most ~1.3 MB, not worth ~1.3 µs on every insertion.
_SHARE_FROM = 1024


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


class _Issuer:
    """Per-issuer cache state, the lock that guards it and the fetch in progress."""

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


class _Want:
    """What key selection asks its front to do before it can go on."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


_NEED_FETCH = _Want("start or join a fetch, and wait for it")
_JOIN_FETCH = _Want("wait for the fetch in progress, if any")
_SPAWN_REFRESH = _Want("start a background refresh")


class _Job(NamedTuple):
    """A token past framing and issuer selection, on its way to key selection and claims.

    Immutable; built with `_new_job(_Job, (...))` on the hot path (no Python-level `__new__`)."""

    digest: bytes
    jws: CompactJWS
    claims: dict[str, Any]
    issuer: _Issuer


_new_job = tuple.__new__


# token, the key that verified it and the key set it was in, its issuer, and its validity window
# (not_after, not_before)
_CacheEntry = tuple[AccessToken, VerificationKey, KeySet | None, _Issuer, float, float]


class _SharedStrings:
    """Claim names, and the claim values that repeat from token to token (issuer, client,
    organization, audience, scopes), shared between cached claim sets, so that 10,000 cached
    tokens do not hold 10,000 copies of "client_id" or of the issuer URL.

    The claim set of the latest token whose names (in order) differ from the template's becomes
    the template; a later claim set with the same names gets the template's name objects, and at
    each sharing position a value equal to the template's is replaced by the template's object.
    Only strings and arrays of strings are shared (an equal value is then the same value of the
    same type), and the raw claims are never mutated after verification, so sharing cannot change
    what a token says. Safe across threads: the template is one tuple, replaced at once.
    """

    __slots__ = ("template",)

    VALUES = frozenset({"iss", "sub", "client_id", "azp", "cid", "appid", "oid", "org_id", "aud",
                        "scope", "scopes", "scp", "typ", "tid", "ver"})

    def __init__(self) -> None:
        self.template: tuple[tuple[str, ...], tuple[int, ...], list[Any]] | None = None

    def share(self, claims: dict[str, Any]) -> dict[str, Any]:
        """`claims` with shared objects where possible (equal values, same names)."""
        names = tuple(claims)
        template = self.template
        if template is None or names != template[0]:
            positions = tuple(i for i, name in enumerate(names) if name in self.VALUES)
            models = [value if _shareable(value) else None for value in claims.values()]
            self.template = (names, positions, models)
            return claims
        shared_names, positions, models = template
        values = list(claims.values())
        for i in positions:
            value, model = values[i], models[i]
            if model is not None and value == model:
                values[i] = model
            elif _shareable(value):
                models[i] = value  # a new client or audience: share this one from now on
        return dict(zip(shared_names, values, strict=True))


def _shareable(value: Any) -> bool:
    kind = type(value)
    if kind is str:
        return len(value) <= 512
    return (kind is list and len(value) <= 64
            and all(type(item) is str and len(item) <= 512 for item in value))


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    if name not in claims:
        return None
    value = claims[name]  # present but null is as invalid as a string: not treated as absent
    if type(value) is int and 0 <= value <= _MAX_NUMERIC_DATE:  # the usual case, checked fast
        return value
    # One rule for every wrong value: not a JSON number (a string, a boolean), NaN or an
    # infinity (`1e400` parses as one), before 1970 or after 9999-12-31, and an integer too
    # large for a float (`10**400`): compared as an int, never converted, so no OverflowError.
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not 0 <= value <= _MAX_NUMERIC_DATE):
        raise InvalidToken(f"The token's {name} is not a valid NumericDate (seconds since "
                           "1970, at most 253402300799: the end of the year 9999).",
                           reason=f"invalid_{name}")
    return float(value)


class TokenVerifier:
    """Verifies bearer tokens for one `GuardSettings`. Create one per application and share it.

    `await verify(token)` and `verify_sync(token)` return an `AccessToken` or raise a
    `GuardError`. `warm_up()` loads every issuer's key set ahead of the first request;
    `health()` reports on them; `aclose()` / `close()` stop background refreshes.
    `on_event` subscribes a callback to the event stream (see `subscribe` and
    `m2m_guard.events`). `clock` (monotonic, for the cache) and `wall_clock` (epoch seconds, for
    claims) exist for tests.
    """

    def __init__(
        self,
        settings: GuardSettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        on_event: Subscriber | None = None,
    ) -> None:
        self.settings = settings if settings is not None else GuardSettings.from_env()
        self.policy = CachePolicy.from_settings(self.settings)
        self._clock = clock
        self._wall = wall_clock
        self._issuers = {entry.issuer: _Issuer(entry) for entry in self.settings.issuers}
        self._cache: VerifiedTokenCache[_CacheEntry] | None = (
            VerifiedTokenCache(self.settings.token_cache_size)
            if self.settings.token_cache_size > 0 else None)
        self._audiences = frozenset(self.settings.audiences)
        self._algorithms = frozenset(self.settings.algorithms)
        self._types = _STRICT_TYPES if self.settings.strict_typ else _TYPES
        self._required = tuple(dict.fromkeys(("exp", *self.settings.required_claims)))
        self._scope_claims = self.settings.scope_claims
        self._read_scopes = ScopeReader(self._scope_claims, read=scopes_from_claims)
        self._leeway = self.settings.leeway
        self._max_token_bytes = self.settings.max_token_bytes
        self._headers = HeaderCache()
        self._header_rules = self._check_header  # bound once, not once per token
        self._strings = _SharedStrings()
        self._tasks: set[asyncio.Task[None]] = set()
        self._threads: set[threading.Thread] = set()
        self._closed = False
        # Events and metrics: None while nobody subscribes, so the hot path pays one check.
        self._observer: EventStream | None = None
        if on_event is not None:
            self.subscribe(on_event)

    # -- public fronts -----------------------------------------------------------------
    async def verify(self, token: str) -> AccessToken:
        """Verify `token` (the bearer string) and return its `AccessToken`; raise `GuardError`."""
        job: _Job | None = None
        observer = self._observer  # events hook: None unless someone subscribed
        started = observer.start() if observer is not None else 0.0
        try:
            begun = self._begin(token)
            if isinstance(begun, AccessToken):
                if observer is not None:
                    observer.allowed(begun, started, cached=True)
                return begun
            job = begun
            selection = self._select_key(job.issuer, job.jws)
            if not isinstance(selection, VerificationKey):
                selection = await self._drive_async(selection, job.issuer)
            access = self._finish(job, selection)
            if observer is not None:
                observer.allowed(access, started, cached=False)
            return access
        except GuardError as exc:
            self._log_refusal(token, job, exc)
            if observer is not None:
                observer.refused(token, job, exc, started)
            raise
        except Exception as exc:  # noqa: BLE001 - never let a bug become a 500
            error = self._internal(token, exc)
            if observer is not None:
                observer.refused(token, job, error, started)
            raise error from None

    def verify_sync(self, token: str) -> AccessToken:
        """The blocking twin of `verify` (sync HTTP driver; safe from many threads).

        Do not call it on an event loop's thread: use `await verify(...)` there.
        """
        job: _Job | None = None
        observer = self._observer  # events hook: None unless someone subscribed
        started = observer.start() if observer is not None else 0.0
        try:
            begun = self._begin(token)
            if isinstance(begun, AccessToken):
                if observer is not None:
                    observer.allowed(begun, started, cached=True)
                return begun
            job = begun
            selection = self._select_key(job.issuer, job.jws)
            if not isinstance(selection, VerificationKey):
                selection = self._drive_sync(selection, job.issuer)
            access = self._finish(job, selection)
            if observer is not None:
                observer.allowed(access, started, cached=False)
            return access
        except GuardError as exc:
            self._log_refusal(token, job, exc)
            if observer is not None:
                observer.refused(token, job, exc, started)
            raise
        except Exception as exc:  # noqa: BLE001 - never let a bug become a 500
            error = self._internal(token, exc)
            if observer is not None:
                observer.refused(token, job, error, started)
            raise error from None

    async def _drive_async(self, selection: Generator[_Want, None, VerificationKey],
                           issuer: _Issuer) -> VerificationKey:
        while True:
            try:
                want = selection.send(None)
            except StopIteration as stop:
                key: VerificationKey = stop.value
                return key
            if want is _SPAWN_REFRESH:
                self._spawn_async(issuer)
            else:
                await self._fetch_async(issuer, join_only=want is _JOIN_FETCH)

    def _drive_sync(self, selection: Generator[_Want, None, VerificationKey],
                    issuer: _Issuer) -> VerificationKey:
        while True:
            try:
                want = selection.send(None)
            except StopIteration as stop:
                key: VerificationKey = stop.value
                return key
            if want is _SPAWN_REFRESH:
                self._spawn_thread(issuer)
            else:
                self._fetch_sync(issuer, join_only=want is _JOIN_FETCH)

    async def warm_up(self) -> None:
        """Load every issuer's key set now (issuers in parallel).

        Raises `IssuerUnavailable` naming the issuers whose keys could not be loaded.
        """
        async with anyio.create_task_group() as group:
            for issuer in self._issuers.values():
                group.start_soon(self._fetch_async, issuer)
        self._raise_if_cold()

    def warm_up_sync(self) -> None:
        """The blocking twin of `warm_up` (issuers one after the other)."""
        for issuer in self._issuers.values():
            self._fetch_sync(issuer)
        self._raise_if_cold()

    async def warm_up_at_startup(self) -> bool:
        """`warm_up` for an app's startup: True when every key set loaded. A failure is logged,
        never raised: the app must start while its issuer is down (requests retry)."""
        try:
            await self.warm_up()
        except Exception as exc:  # noqa: BLE001 - startup must not fail because of the guard
            _log_warm_up_failure(exc)
            return False
        return True

    def warm_up_at_startup_sync(self) -> bool:
        """The blocking twin of `warm_up_at_startup`."""
        try:
            self.warm_up_sync()
        except Exception as exc:  # noqa: BLE001 - startup must not fail because of the guard
            _log_warm_up_failure(exc)
            return False
        return True

    def _raise_if_cold(self) -> None:
        failed = [f"{issuer.settings.issuer}: {issuer.state.last_error}"
                  for issuer in self._issuers.values() if issuer.state.keys is None]
        if failed:
            raise IssuerUnavailable("Key sets could not be loaded: " + "; ".join(failed))

    def token_endpoint(self, issuer: str | None = None) -> str | None:
        """The `token_endpoint` announced by the discovery document of `issuer` (default: the
        first configured one); None before discovery has run, or when `jwks_url` is configured
        (no discovery) or the document names none. For documentation (OpenAPI), not security.
        """
        entry = self._issuers.get(issuer) if issuer is not None \
            else next(iter(self._issuers.values()))
        return entry.token_endpoint if entry is not None else None

    def health(self) -> dict[str, Any]:
        """Per issuer: keys held, age, last success and error, next refresh; `ready` overall.

        `ready` is True when every issuer has a usable key set. Times are epoch seconds.
        """
        now = self._clock()
        wall = self._wall()
        report: dict[str, Any] = {}
        for name, issuer in self._issuers.items():
            with issuer.lock:
                state = issuer.state
                usable = state.keys is not None and now < self.policy.usable_until(state)
                fresh = usable and now < self.policy.expires_at(state)
                report[name] = {
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
                    "next_refresh": (wall + self.policy.refresh_at(state) - now)
                    if state.keys is not None else None,
                    "fetches": state.fetches,
                }
        return {"ready": all(entry["usable"] for entry in report.values()), "issuers": report}

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call `callback(event)` for every `m2m_guard.events.Event`; returns an unsubscribe
        function. A callback's exception never affects verification (it is logged once)."""
        return subscribe(self, callback)

    async def aclose(self) -> None:
        """Cancel background refreshes (async ones; threads are waited for briefly)."""
        self._closed = True
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
        """Stop background refreshes (waits for refresh threads up to the HTTP timeout).

        Safe from any thread: async refreshes are cancelled on their own event loop.
        """
        self._closed = True
        for task in list(self._tasks):
            try:
                task.get_loop().call_soon_threadsafe(task.cancel)
            except RuntimeError:  # that loop is closed: the task cannot run any more
                self._tasks.discard(task)
        self._join_threads()

    async def __aenter__(self) -> TokenVerifier:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __enter__(self) -> TokenVerifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the engine ----------------------------------------------------------------------
    def _begin(self, token: str) -> AccessToken | _Job:
        """A still-valid cached `AccessToken`, or the parsed token ready for key selection."""
        if not isinstance(token, str):
            raise InvalidToken("The token must be a string.", reason="malformed")
        if len(token) > self._max_token_bytes:
            check_token_size(token, self._max_token_bytes)  # before hashing it
        digest = _sha256(token.encode("utf-8", "surrogatepass")).digest()
        if self._cache is not None:
            cached = self._hit(digest)
            if cached is not None:
                return cached
        jws, claims, issuer = self._parse(token)
        return _new_job(_Job, (digest, jws, claims, issuer))

    def _hit(self, digest: bytes) -> AccessToken | None:
        """The cached token under `digest` if it may still be used; a stale entry is dropped."""
        cache = self._cache
        assert cache is not None
        entry = cache.get(digest)
        if entry is None:
            return None
        access, key, key_set, issuer, not_after, not_before = entry
        if not_before <= self._wall() < not_after and self._clock() < issuer.fast_until:
            keys = issuer.state.keys
            # The set that verified it, or a later one that still holds that very key object.
            if keys is key_set or (keys is not None and keys.contains(key)):
                return access
        cache.discard(digest)
        return None

    def cached_token(self, token: str | bytes) -> AccessToken | None:
        """The `AccessToken` of `token` when the verified-token cache holds it and a hit may be
        used now (the same checks as in `verify`: `exp`/`nbf`, fresh key set, key still in it);
        otherwise None, meaning "call `verify`". Never raises, never fetches, never logs.

        For adapters' fast paths, `token` may be the raw header bytes after the scheme (an ASCII
        token hashes the same as bytes or as str; other bytes never match a verified token).
        None as well while events are subscribed (`verify` reports them), when the cache is off
        or the token is over `max_token_bytes`.
        """
        if type(token) is not bytes:
            if not isinstance(token, str) or not token.isascii():
                return None
            token = token.encode("ascii")
        if self._cache is None or self._observer is not None \
                or len(token) > self._max_token_bytes:
            return None
        return self._hit(_sha256(token).digest())

    def _parse(self, token: str) -> tuple[CompactJWS, dict[str, Any], _Issuer]:
        jws = parse_compact(token, max_bytes=self._max_token_bytes,
                            header_cache=self._headers, header_rules=self._header_rules)
        try:
            claims = loads_json(jws.payload)
        except ValueError:
            raise InvalidToken("The token claims are not a strict JSON object.",
                               reason="malformed_claims") from None
        if not isinstance(claims, dict):
            raise InvalidToken("The token claims are not a JSON object.", reason="malformed_claims")
        iss = claims.get("iss")
        issuer = self._issuers.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise InvalidToken("The token's issuer is not trusted.", reason="untrusted_issuer")
        return jws, claims, issuer

    def _check_header(self, header: Mapping[str, Any], alg: str) -> None:
        """This verifier's header rules (algorithm allow-list, `typ`, `cty`). They run once per
        distinct header segment: `parse_compact` remembers headers that passed them."""
        if alg not in self._algorithms:
            raise InvalidToken("The token's algorithm is not accepted.", reason="algorithm_refused")
        typ = header.get("typ")
        # Present members must have their type: `"typ": null` is refused, not read as absent.
        if "typ" in header and (not isinstance(typ, str) or typ.lower() not in self._types):
            raise InvalidToken("The token type is not accepted for access tokens.",
                               reason="type_refused")
        if "typ" not in header and self.settings.strict_typ:
            raise InvalidToken("The token has no typ; at+jwt is required.", reason="type_refused")
        if "cty" in header:
            raise InvalidToken("Nested or typed content (cty) is not accepted.",
                               reason="cty_refused")

    def _pick(self, issuer: _Issuer, jws: CompactJWS) -> VerificationKey | None:
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

    def _select_key(
        self, issuer: _Issuer, jws: CompactJWS
    ) -> VerificationKey | Generator[_Want, None, VerificationKey]:
        if self._clock() < issuer.fast_until:
            key = self._pick(issuer, jws)
            if key is not None:
                return key
        return self._select_key_slow(issuer, jws)

    def _select_key_slow(
        self, issuer: _Issuer, jws: CompactJWS
    ) -> Generator[_Want, None, VerificationKey]:
        policy, state = self.policy, issuer.state
        waited = False
        while True:
            with issuer.lock:
                plan = policy.plan(state, self._clock())
            # One fetch (or join) per verification: with a zero cooldown, a failed fetch leaves
            # no backoff and the plan would ask for another one forever.
            if plan.fetch is Fetch.WAIT and not waited:
                waited = True
                yield _NEED_FETCH
                continue
            if plan.fetch is Fetch.BACKGROUND:
                yield _SPAWN_REFRESH
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
        if self._observer is not None:  # events hook
            self._observer.unknown_kid(issuer.settings.issuer, jws.kid, refetch=allowed)
        if allowed:
            yield _JOIN_FETCH if joining else _NEED_FETCH
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

    def _finish(self, job: _Job, key: VerificationKey) -> AccessToken:
        jws, claims, digest = job.jws, job.claims, job.digest
        check_signature(jws, key)
        not_after, not_before = self._check_claims(claims)
        cache = self._cache
        if cache is not None and len(cache) >= _SHARE_FROM:
            claims = self._strings.share(claims)
        access = AccessToken.from_claims(
            claims, self._read_scopes(claims), algorithm=jws.alg,
            key_id=jws.kid, fingerprint=digest[:8].hex(),
        )
        if cache is not None:
            # Remember the current set only if it holds the key (a refresh may have replaced
            # the set the key came from); a hit then needs only an identity check.
            keys = job.issuer.state.keys
            key_set = keys if keys is not None and keys.contains(key) else None
            cache.put(digest, (access, key, key_set, job.issuer, not_after, not_before),
                            len(jws.signing_input) + len(jws.signature))
        return access

    def check_claims(self, claims: Mapping[str, Any]) -> None:
        """Apply this verifier's claim rules to claims whose signature and issuer were checked
        elsewhere (e.g. by a server that holds its own keys): required claims, `exp` / `nbf` /
        `iat` with the leeway (NumericDates must be numbers), claim types and the audience.
        Raises `InvalidToken`."""
        self._check_claims(claims if isinstance(claims, dict) else dict(claims))

    def _check_claims(self, claims: dict[str, Any]) -> tuple[float, float]:
        """Check time claims, audience, claim types and required claims.

        Returns the wall-clock window (not_after, not_before) in which the token stays valid,
        leeway included, for the verified-token cache.
        """
        for name in self._required:
            if name not in claims:
                raise InvalidToken(f"The token has no {name} claim.", reason=f"missing_{name}")
        now = self._wall()
        leeway = self._leeway
        # Time claims: an int in range is the usual case, checked inline; `_number` does the rest.
        exp = claims["exp"]  # required above
        if type(exp) is not int or not 0 <= exp <= _MAX_NUMERIC_DATE:
            exp = _number(claims, "exp")
        if now >= exp + leeway:
            raise InvalidToken("The token has expired.", reason="expired")
        nbf = claims.get("nbf", _ABSENT)
        if type(nbf) is not int or not 0 <= nbf <= _MAX_NUMERIC_DATE:
            nbf = _number(claims, "nbf")
        not_before = -math.inf if nbf is None else nbf - leeway
        if now < not_before:
            raise InvalidToken("The token is not valid yet (nbf).", reason="not_yet_valid")
        iat = claims.get("iat", _ABSENT)
        if type(iat) is not int or not 0 <= iat <= _MAX_NUMERIC_DATE:
            iat = _number(claims, "iat")
        if iat is not None and iat > now + leeway:
            raise InvalidToken("The token was issued in the future (iat).",
                               reason="issued_in_future")
        for name in _STRING_CLAIMS:
            value = claims.get(name)
            if value is not None and type(value) is not str and not isinstance(value, str):
                raise InvalidToken(f"The {name} claim must be a string.", reason=f"invalid_{name}")
        if self.settings.verify_audience:
            aud = claims.get("aud")
            if isinstance(aud, str):
                audiences: list[Any] = [aud]
            elif isinstance(aud, list) and aud:
                audiences = aud
            elif aud is None:
                raise InvalidToken("The token has no aud claim.", reason="missing_aud")
            else:
                raise InvalidToken("The aud claim must be a string or an array of strings.",
                                   reason="invalid_aud")
            for item in audiences:
                if not isinstance(item, str):
                    raise InvalidToken("The aud claim must be a string or an array of strings.",
                                       reason="invalid_aud")
            if self._audiences.isdisjoint(audiences):
                raise InvalidToken("The token is not meant for this audience.",
                                   reason="wrong_audience")
        return exp + leeway, not_before

    # -- fetching --------------------------------------------------------------------------
    def _start_flight(self, issuer: _Issuer, *, async_owner: bool,
                      join_only: bool = False) -> tuple[_Flight | None, bool]:
        with issuer.lock:
            if issuer.flight is not None or join_only:
                return issuer.flight, False
            # The event is made by the owner only (a cold start has many joiners).
            flight = issuer.flight = _Flight(anyio.Event() if async_owner else None)
            return flight, True

    def _store(self, issuer: _Issuer, result: FetchResult | None, error: str | None,
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
        if self._observer is not None:  # events hook
            self._observer.key_set(issuer.settings.issuer, result, error, before, after)

    async def _fetch_async(self, issuer: _Issuer, *, join_only: bool = False) -> None:
        flight, owner = self._start_flight(issuer, async_owner=True, join_only=join_only)
        if flight is None:
            return
        timeout = self.settings.http_timeout * 2 + 1
        if not owner:
            await flight.wait_async(timeout)
            return
        try:
            result: FetchResult | None = None
            error: str | None = None
            retry_after: float | None = None
            try:
                result = await fetch_key_set_async(
                    issuer.settings, self.settings, jwks_url=issuer.jwks_url,
                    etag=issuer.state.etag if issuer.state.keys is not None else None)
            except FetchError as exc:
                error, retry_after = str(exc), exc.retry_after
            except Exception as exc:
                logger.exception("m2m_guard unexpected error fetching keys of %s",
                                 issuer.settings.issuer)
                error = f"unexpected error: {type(exc).__name__}"
            self._store(issuer, result, error, retry_after)
        finally:
            with issuer.lock:
                issuer.flight = None
            flight.finish()

    def _fetch_sync(self, issuer: _Issuer, *, join_only: bool = False) -> None:
        flight, owner = self._start_flight(issuer, async_owner=False, join_only=join_only)
        if flight is None:
            return
        if not owner:
            flight.done.wait(self.settings.http_timeout * 2 + 1)
            return
        try:
            result: FetchResult | None = None
            error: str | None = None
            retry_after: float | None = None
            try:
                result = fetch_key_set_sync(
                    issuer.settings, self.settings, jwks_url=issuer.jwks_url,
                    etag=issuer.state.etag if issuer.state.keys is not None else None)
            except FetchError as exc:
                error, retry_after = str(exc), exc.retry_after
            except Exception as exc:
                logger.exception("m2m_guard unexpected error fetching keys of %s",
                                 issuer.settings.issuer)
                error = f"unexpected error: {type(exc).__name__}"
            self._store(issuer, result, error, retry_after)
        finally:
            with issuer.lock:
                issuer.flight = None
            flight.finish()

    def _spawn_async(self, issuer: _Issuer) -> None:
        if self._closed or issuer.flight is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not asyncio (e.g. trio): refresh on a thread instead
            self._spawn_thread(issuer)
            return
        if self._observer is not None:  # events hook (before the fetch can report back)
            self._observer.refresh_ahead(issuer.settings.issuer)
        task = loop.create_task(self._fetch_async(issuer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _spawn_thread(self, issuer: _Issuer) -> None:
        if self._closed or issuer.flight is not None:
            return
        thread = threading.Thread(target=self._fetch_sync, args=(issuer,),
                                  name="m2m-guard-refresh", daemon=True)
        if self._observer is not None:  # events hook (before the fetch can report back)
            self._observer.refresh_ahead(issuer.settings.issuer)
        self._threads.add(thread)
        thread.start()

    def _join_threads(self) -> None:
        deadline = time.monotonic() + self.settings.http_timeout * 2 + 1
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads = {t for t in self._threads if t.is_alive()}

    # -- logging ---------------------------------------------------------------------------
    def _log_refusal(self, token: object, job: _Job | None, exc: GuardError) -> None:
        exc._reported = True  # adapters do not report it again
        log_refusal(token, job, exc)

    def _internal(self, token: object, exc: Exception) -> InvalidToken:
        logger.error("m2m_guard unexpected error verifying fingerprint=%s", _fingerprint(token),
                     exc_info=exc)
        error = InvalidToken("The token could not be verified.", reason="internal_error")
        error._reported = True  # logged above, at ERROR
        return error


def _fingerprint(token: object) -> str:
    if not isinstance(token, str):
        return "-"
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _log_warm_up_failure(exc: Exception) -> None:
    if isinstance(exc, GuardError):
        logger.warning("m2m_guard could not warm up key sets at startup (requests will retry): %s",
                       exc.description)
    else:
        logger.error("m2m_guard unexpected error warming up key sets", exc_info=exc)
