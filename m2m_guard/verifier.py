"""`TokenVerifier`: the one verification engine, with an async and a sync front.

The pipeline, in order: size limit, compact framing, canonical base64url, strict JSON header
(`jws.parse_compact`); token type; strict JSON claims and issuer selection by `iss` (only
configured issuers are ever contacted); the issuer's key set from the key store and the key by
`kid`; the signature with the algorithm pinned to the key; then the claim rules
(`claims.ClaimRules`: `exp`, `nbf`, `iat`, claim types, required claims, `aud`). Success gives an
immutable `AccessToken`; every failure raises a `GuardError` subclass, and an unexpected
exception inside verification becomes `InvalidToken` (logged with its traceback), never an error
the caller has to handle as a 500.

The whole pipeline is one generator (`_flow`) that yields what it needs from the outside world
(`keystore.Need`: a fetch to start or join, a refresh to schedule) and returns the token; events,
the refusal log line and the safety net live there, once. `verify` and `verify_sync` only drive
it, each with its own way of waiting. A token in the verified-token cache is answered before the
generator is built when nobody subscribes to events (nothing would be reported). See
docs/architecture.md for the layers around it.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import weakref
from collections.abc import Callable, Generator, Mapping
from typing import Any, NamedTuple

from ._core.claims import ClaimRules
from ._core.encoding import loads_json
from ._core.jws import CompactJWS, HeaderCache, check_signature, check_token_size, parse_compact
from ._core.keys import KeySet, VerificationKey
from ._core.keystore import Fetcher, IssuerKeys, KeyStore, Need
from ._core.logs import log_refusal
from ._core.requirements import settings_requirement
from ._core.scopes import ScopeReader, scopes_from_claims
from ._core.token_cache import SHARE_FROM, SharedStrings, VerifiedTokenCache
from .errors import GuardError, InvalidToken
from .events import EventStream, RefusalContext, Subscriber, safe_text
from .settings import GuardSettings
from .token import AccessToken

__all__ = ["TokenVerifier"]

logger = logging.getLogger("m2m_guard")
_sha256 = hashlib.sha256

_TYPES = frozenset({"jwt", "at+jwt", "application/at+jwt"})
_STRICT_TYPES = frozenset({"at+jwt", "application/at+jwt"})
_CLIENT_CLAIMS = ("client_id", "azp", "sub")
# The verified-token cache keeps sender-constrained tokens under this prefix (a token is ASCII,
# so no token's own bytes start with it).
_BOUND = b"\x00"


class _Job(NamedTuple):
    """A token past framing and issuer selection, on its way to key selection and claims.

    Immutable; built with `_new_job(_Job, (...))` on the hot path (no Python-level `__new__`)."""

    raw: bytes  # the token's bytes: the cache key, and what the fingerprint is computed from
    jws: CompactJWS
    claims: dict[str, Any]
    issuer: IssuerKeys


_new_job = tuple.__new__


# The pipeline: yields what it needs, is sent the exception satisfying it raised (or None).
_Flow = Generator[Need, "Exception | None", AccessToken]


def _resume(flow: _Flow | None, error: Exception | None) -> Need | AccessToken:
    """Run `flow` to its next `Need` or its result, raising `error` inside it if given."""
    assert flow is not None
    try:
        return flow.throw(error) if error is not None else flow.send(None)
    except StopIteration as done:
        access: AccessToken = done.value
        return access


# token, the key that verified it and the key set it was in, its issuer, and its validity window
# (not_after, not_before)
_CacheEntry = tuple[AccessToken, VerificationKey, KeySet | None, IssuerKeys, float, float]


class TokenVerifier:
    """Verifies bearer tokens for one `GuardSettings`. Create one per application and share it.

    `await verify(token)` and `verify_sync(token)` return an `AccessToken` or raise a
    `GuardError`. `warm_up()` loads every issuer's key set ahead of the first request;
    `health()` reports on them; `aclose()` / `close()` stop background refreshes.
    `on_event` subscribes a callback to the event stream (see `subscribe` and
    `m2m_guard.events`). `clock` (monotonic, for the cache) and `wall_clock` (epoch seconds, for
    claims) exist for tests; so does `fetcher`, the key-set I/O (default: httpx, see
    docs/architecture.md).
    """

    def __init__(
        self,
        settings: GuardSettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        on_event: Subscriber | None = None,
        fetcher: Fetcher | None = None,
    ) -> None:
        self.settings = settings if settings is not None else GuardSettings.from_env()
        self._clock = clock
        self._wall = wall_clock
        self._keys = KeyStore(self.settings, fetcher=fetcher, clock=clock, wall=wall_clock)
        self.policy = self._keys.policy
        self._issuers = self._keys.issuers
        self._bound_cached = False  # has a sender-constrained token been cached?
        self._cache: VerifiedTokenCache[_CacheEntry] | None = (
            VerifiedTokenCache(self.settings.token_cache_size)
            if self.settings.token_cache_size > 0 else None)
        self._claims = ClaimRules(self.settings)
        self._algorithms = frozenset(self.settings.algorithms)
        self._types = _STRICT_TYPES if self.settings.strict_typ else _TYPES
        self._read_scopes = ScopeReader(self.settings.scope_claims, read=scopes_from_claims)
        # App-wide rules (allowed_clients, required_claim_values, machine_tokens_only): checked
        # before a token is cached, so a cache hit has passed them.
        self._app_rules = settings_requirement(self.settings)
        self._client_claims = tuple(self.settings.client_id_claims)
        self._max_token_bytes = self.settings.max_token_bytes
        self._headers = HeaderCache()
        self._header_rules = self._check_header  # bound once, not once per token
        self._strings = SharedStrings()
        # Refusals already logged and sent as events (adapters do not report them again).
        self._reported: weakref.WeakSet[GuardError] = weakref.WeakSet()
        # Events and metrics: None while nobody subscribes, so the hot path pays one check.
        self._observer: EventStream | None = None
        if on_event is not None:
            self.subscribe(on_event)

    # -- public fronts: they only drive the pipeline ----------------------------------------
    async def verify(self, token: str) -> AccessToken:
        """Verify `token` (the bearer string) and return its `AccessToken`; raise `GuardError`."""
        flow, step = self._start(token)
        while type(step) is Need:
            step = _resume(flow, await self._keys.satisfy_async(step))
        return step  # type: ignore[return-value]

    def verify_sync(self, token: str) -> AccessToken:
        """The blocking twin of `verify` (sync HTTP driver; safe from many threads).

        Do not call it on an event loop's thread: use `await verify(...)` there.
        """
        flow, step = self._start(token)
        while type(step) is Need:
            step = _resume(flow, self._keys.satisfy_sync(step))
        return step  # type: ignore[return-value]

    async def warm_up(self) -> None:
        """Load every issuer's key set now (issuers in parallel).

        Raises `IssuerUnavailable` naming the issuers whose keys could not be loaded.
        """
        await self._keys.warm_up()

    def warm_up_sync(self) -> None:
        """The blocking twin of `warm_up` (issuers one after the other)."""
        self._keys.warm_up_sync()

    async def warm_up_at_startup(self) -> bool:
        """`warm_up` for an app's startup: True when every key set loaded. A failure is logged,
        never raised: the app must start while its issuer is down (requests retry)."""
        try:
            await self._keys.warm_up()
        except Exception as exc:  # noqa: BLE001 - startup must not fail because of the guard
            _log_warm_up_failure(exc)
            return False
        return True

    def warm_up_at_startup_sync(self) -> bool:
        """The blocking twin of `warm_up_at_startup`."""
        try:
            self._keys.warm_up_sync()
        except Exception as exc:  # noqa: BLE001 - startup must not fail because of the guard
            _log_warm_up_failure(exc)
            return False
        return True

    def token_endpoint(self, issuer: str | None = None) -> str | None:
        """The `token_endpoint` announced by the discovery document of `issuer` (default: the
        first configured one); None before discovery has run, or when `jwks_url` is configured
        (no discovery) or the document names none. For documentation (OpenAPI), not security.
        """
        return self._keys.token_endpoint(issuer)

    def health(self) -> dict[str, Any]:
        """Per issuer: keys held, age, last success and error, next refresh; `ready` overall.

        `ready` is True when every issuer has a usable key set. Times are epoch seconds.
        """
        return self._keys.health()

    @property
    def key_store(self) -> KeyStore:
        """The issuers' key sets (`request_refresh`, `background`): see docs/architecture.md."""
        return self._keys

    @property
    def token_cache(self) -> VerifiedTokenCache[Any] | None:
        """The verified-token cache (None when `token_cache_size` is 0): `len`, `bytes`,
        `clear()`. Its entries are the verifier's own."""
        return self._cache

    def check_claims(self, claims: Mapping[str, Any]) -> None:
        """Apply this verifier's claim rules to claims whose signature and issuer were checked
        elsewhere (e.g. by a server that holds its own keys): required claims, `exp` / `nbf` /
        `iat` with the leeway (NumericDates must be numbers), claim types and the audience.
        Raises `InvalidToken`."""
        self._claims.check(claims, self._wall())

    # -- events and refusal reporting --------------------------------------------------------
    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call `callback(event)` for every `m2m_guard.events.Event`; returns an unsubscribe
        function. A callback's exception never affects verification (it is logged once).
        When the last subscriber is removed the verifier stops building events altogether."""
        if not callable(callback):
            raise TypeError(f"an event subscriber must be callable, got {callback!r}")
        with _subscribe_lock:
            stream = self._observer
            if stream is None:
                stream = EventStream(self.settings)
            stream.add(callback)
            self._observe(stream)

        def unsubscribe() -> None:
            with _subscribe_lock:
                stream.remove(callback)
                if not stream.subscribers and self._observer is stream:
                    self._observe(None)

        return unsubscribe

    def _observe(self, stream: EventStream | None) -> None:
        self._observer = self._keys.observer = stream

    @property
    def subscribed(self) -> bool:
        """True while someone subscribes to this verifier's events."""
        return self._observer is not None

    def report_refusal(self, error: GuardError, access: AccessToken | None = None) -> None:
        """For adapters: log a refusal they send and pass it to the event stream, unless this
        verifier already did (refusals raised by `verify` are reported there, with more
        detail). `access` is the request's verified token, if any (refused for its scopes)."""
        if error in self._reported:
            return
        self._reported.add(error)
        context = RefusalContext.of_token(access)
        log_refusal(error, context)
        observer = self._observer
        if observer is not None:
            observer.refused(error, context)

    # -- lifecycle ---------------------------------------------------------------------------
    async def aclose(self) -> None:
        """Cancel background refreshes (async ones; threads are waited for briefly)."""
        await self._keys.aclose()

    def close(self) -> None:
        """Stop background refreshes (waits for refresh threads up to the HTTP timeout).

        Safe from any thread: async refreshes are cancelled on their own event loop.
        """
        self._keys.close()

    async def __aenter__(self) -> TokenVerifier:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __enter__(self) -> TokenVerifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the pipeline ------------------------------------------------------------------------
    def _start(self, token: str) -> tuple[_Flow | None, Need | AccessToken]:
        """The token, when it is cached or its keys are at hand and nothing needs reporting
        (the usual case, run here without a generator); else the pipeline started: its first
        `Need`, or its result."""
        if self._observer is not None or type(token) is not str \
                or len(token) > self._max_token_bytes:
            flow = self._flow(token, None)
            return flow, _resume(flow, None)
        raw = token.encode("utf-8", "surrogatepass")
        if self._cache is not None:
            cached = self._hit(raw)
            if cached is None and self._bound_cached:
                cached = self._hit(_BOUND + raw)
            if cached is not None:
                return None, cached
        # `_flow`'s steps up to key selection, without its generator (~0.5 µs per token); a key
        # set to fetch or refresh continues in `_flow`. Refusals are reported as there.
        job: _Job | None = None
        try:
            jws, claims, issuer = self._parse(token)
            job = _new_job(_Job, (raw, jws, claims, issuer))
            key = self._keys.select(issuer, jws)
            if isinstance(key, VerificationKey):
                return None, self._finish(job, key)
        except GuardError as exc:
            self._refused(exc, token, job, None, 0.0)
            raise
        except Exception as exc:  # noqa: BLE001 - never let a bug become a 500
            raise self._internal(token, exc, job, None, 0.0) from None
        flow = self._flow(token, raw, job, key)
        return flow, _resume(flow, None)

    def _flow(self, token: str, raw: bytes | None, job: _Job | None = None,
              selection: Generator[Need, None, VerificationKey] | None = None,
              ) -> _Flow:
        """The whole verification (see the module doc). `raw` (the token's bytes, the cache
        key) is given when `_start` has already looked the token up in the cache; `job` and
        `selection` when it has also parsed it and key selection must wait for the key store."""
        observer = self._observer  # events hook: None unless someone subscribed
        started = observer.start() if observer is not None else 0.0
        try:
            if job is None or selection is None:
                if raw is None:
                    if not isinstance(token, str):
                        raise InvalidToken("The token must be a string.", reason="malformed")
                    if len(token) > self._max_token_bytes:
                        check_token_size(token, self._max_token_bytes)  # before copying it
                    raw = token.encode("utf-8", "surrogatepass")
                    cached = self._hit(raw) if self._cache is not None else None
                    if cached is None and self._bound_cached:
                        cached = self._hit(_BOUND + raw)
                    if cached is not None:
                        if observer is not None:
                            observer.allowed(cached, started, cached=True)
                        return cached
                jws, claims, issuer = self._parse(token)
                job = _new_job(_Job, (raw, jws, claims, issuer))
                found = self._keys.select(issuer, jws)
                key = found if isinstance(found, VerificationKey) else (yield from found)
            else:
                key = yield from selection
            access = self._finish(job, key)
            if observer is not None:
                observer.allowed(access, started, cached=False)
            return access
        except GuardError as exc:
            self._refused(exc, token, job, observer, started)
            raise
        except Exception as exc:  # noqa: BLE001 - never let a bug become a 500
            raise self._internal(token, exc, job, observer, started) from None

    def _refused(self, exc: GuardError, token: object, job: _Job | None,
                 observer: EventStream | None, started: float) -> None:
        """Report a refusal raised inside the pipeline: logged, marked as reported (adapters do
        not report it again) and sent as an event."""
        context = _context(token, job)
        self._reported.add(exc)
        log_refusal(exc, context)
        if observer is not None:
            observer.refused(exc, context, started)

    def _hit(self, raw: bytes) -> AccessToken | None:
        """The cached token of `raw` (the token's bytes) if it may still be used; a stale entry
        is dropped."""
        cache = self._cache
        assert cache is not None
        entry = cache.get(raw)
        if entry is None:
            return None
        access, key, key_set, issuer, not_after, not_before = entry
        if not_before <= self._wall() < not_after and self._clock() < issuer.fast_until:
            keys = issuer.state.keys
            # The set that verified it, or a later one that still holds that very key object.
            if keys is key_set or (keys is not None and keys.contains(key)):
                return access
        cache.discard(raw)
        return None

    def cached_token(self, token: str | bytes, *, bound: bool = False) -> AccessToken | None:
        """The `AccessToken` of `token` when the verified-token cache holds it and a hit may be
        used now (the same checks as in `verify`: `exp`/`nbf`, fresh key set, key still in it);
        otherwise None, meaning "call `verify`". Never raises, never fetches, never logs.

        For adapters' fast paths, `token` may be the raw header bytes after the scheme (the cache
        is keyed by the token's bytes; other bytes never match a verified token).
        None as well while events are subscribed (`verify` reports them), when the cache is off
        or the token is over `max_token_bytes`. `bound` looks up sender-constrained tokens
        (`cnf`) instead, which only the gate may answer, after confirming their binding
        (`Gate.authenticate`'s DPoP path); plain tokens are never found then, nor bound ones
        without it.
        """
        if type(token) is not bytes:
            if not isinstance(token, str) or not token.isascii():
                return None
            token = token.encode("ascii")
        if self._cache is None or self._observer is not None \
                or len(token) > self._max_token_bytes:
            return None
        if bound:
            return self._hit(_BOUND + token) if self._bound_cached else None
        return self._hit(token)

    def _parse(self, token: str) -> tuple[CompactJWS, dict[str, Any], IssuerKeys]:
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

    def _finish(self, job: _Job, key: VerificationKey) -> AccessToken:
        jws, claims = job.jws, job.claims
        check_signature(jws, key)
        not_after, not_before = self._claims.check(claims, self._wall())
        cache = self._cache
        if cache is not None and len(cache) >= SHARE_FROM:
            claims = self._strings.share(claims)
        access = AccessToken.from_claims(
            claims, self._read_scopes(claims), algorithm=jws.alg,
            key_id=jws.kid, fingerprint=_sha256(job.raw).hexdigest()[:16],
            client_claims=self._client_claims,
        )
        if self._app_rules is not None:
            self._app_rules.check(access)  # refused tokens are never cached
        if cache is not None:
            # Remember the current set only if it holds the key (a refresh may have replaced
            # the set the key came from); a hit then needs only an identity check.
            keys = job.issuer.state.keys
            key_set = keys if keys is not None and keys.contains(key) else None
            entry = (access, key, key_set, job.issuer, not_after, not_before)
            if "cnf" in claims:
                # A sender-constrained token (RFC 7800 cnf: DPoP, mTLS) is kept under a key no
                # Bearer fast path looks up (`cached_token`), so only the gate, which confirms
                # the binding, is ever answered from it.
                self._bound_cached = True
                cache.put(_BOUND + job.raw, entry)
            else:
                cache.put(job.raw, entry)
        return access

    def _internal(self, token: object, exc: Exception, job: _Job | None,
                  observer: EventStream | None, started: float) -> InvalidToken:
        """An unexpected exception inside the pipeline, as the refusal it becomes (logged at
        ERROR with its traceback, sent as an event)."""
        logger.error("m2m_guard unexpected error verifying fingerprint=%s", _fingerprint(token),
                     exc_info=exc)
        error = InvalidToken("The token could not be verified.", reason="internal_error")
        self._reported.add(error)  # logged above, at ERROR
        if observer is not None:
            observer.refused(error, _context(token, job), started)
        return error


_subscribe_lock = threading.Lock()


def _context(token: object, job: _Job | None) -> RefusalContext:
    """What a refusal by the verifier can say about its token (claimed values made safe)."""
    if job is None:
        return RefusalContext(fingerprint=_fingerprint(token) if isinstance(token, str) else None)
    claims = job.claims
    client = next((safe_text(v) for v in (claims.get(n) for n in _CLIENT_CLAIMS)
                   if isinstance(v, str)), None)
    return RefusalContext(job.issuer.settings.issuer, safe_text(job.jws.kid), job.jws.alg, client,
                          _sha256(job.raw).hexdigest()[:16])


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
