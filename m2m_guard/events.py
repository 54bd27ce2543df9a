"""One event stream for a verifier's decisions and key-set activity.

Subscribe a callback (``TokenVerifier(settings, on_event=callback)`` or
``verifier.subscribe(callback)``) and it receives an `Event` for each of these `kind`s:

decisions (one per token verification, or per request refused by an adapter):
    ``allowed``             a token was verified (`cached` tells whether the verified-token cache
                            answered), `duration` in seconds;
    ``refused``             a request was refused: `reason` (see `REASONS`) and HTTP `status`;
    ``issuer_unavailable``  no usable key because the issuer cannot be reached (status 503);
key-set activity (per issuer):
    ``keys_fetched``        the key set was fetched (HTTP 200); `keys` = usable keys now held;
    ``keys_not_modified``   the issuer answered 304 Not Modified to a conditional refresh;
    ``keys_fetch_failed``   discovery or the key-set fetch failed; `error` says why;
    ``keys_changed``        the usable keys differ from before (first load included):
                            `added` / `removed` hold key ids;
    ``refresh_ahead``       a background refresh started (ahead of expiry, or a retry while a
                            stale set is served);
    ``unknown_kid``         a token named a key id the set does not hold;
    ``cooldown_hit``        ... and that could not cause a refetch (cooldown, backoff, or the key
                            id is already known to be absent).

Events never hold a token or a secret. `client_id` is filled only on decisions about verified
tokens and only when `GuardSettings.events_client_id` is on (it is an unbounded value). `kid`
comes from the token header on refusals: it is reduced to printable ASCII, at most 64 characters.

Subscribers run synchronously on the verifying thread: keep them short (count, enqueue). An
exception raised by a subscriber never reaches verification; it is logged once per subscriber.
With no subscriber the verifier pays one attribute check per verification and nothing else.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ParamSpec

from .errors import GuardError, IssuerUnavailable

if TYPE_CHECKING:
    from ._core.fetch import FetchResult
    from ._core.keys import KeySet
    from .settings import GuardSettings
    from .token import AccessToken
    from .verifier import TokenVerifier

__all__ = [
    "ALLOWED",
    "COOLDOWN_HIT",
    "DECISION_KINDS",
    "Event",
    "EventStream",
    "ISSUER_UNAVAILABLE",
    "KEYS_CHANGED",
    "KEYS_FETCHED",
    "KEYS_FETCH_FAILED",
    "KEYS_NOT_MODIFIED",
    "KINDS",
    "MISSING_CLAIM",
    "REASONS",
    "REFRESH_AHEAD",
    "REFUSED",
    "RefusalContext",
    "Subscriber",
    "UNKNOWN_KID",
    "metric_reason",
    "never_raises",
    "safe_text",
    "subscribe",
    "token_fingerprint",
]

logger = logging.getLogger("m2m_guard")

ALLOWED = "allowed"
REFUSED = "refused"
ISSUER_UNAVAILABLE = "issuer_unavailable"
KEYS_FETCHED = "keys_fetched"
KEYS_NOT_MODIFIED = "keys_not_modified"
KEYS_FETCH_FAILED = "keys_fetch_failed"
KEYS_CHANGED = "keys_changed"
REFRESH_AHEAD = "refresh_ahead"
UNKNOWN_KID = "unknown_kid"
COOLDOWN_HIT = "cooldown_hit"

DECISION_KINDS = frozenset({ALLOWED, REFUSED, ISSUER_UNAVAILABLE})
KINDS = DECISION_KINDS | {KEYS_FETCHED, KEYS_NOT_MODIFIED, KEYS_FETCH_FAILED, KEYS_CHANGED,
                          REFRESH_AHEAD, UNKNOWN_KID, COOLDOWN_HIT}

# Every `GuardError.reason` the library raises: stable, low-cardinality codes (safe as metric
# attributes). docs/operations.md explains each and how to fix it; a test keeps both in step.
REASONS: frozenset[str] = frozenset({
    # ambiguous credentials (400 invalid_request) and missing credentials (401, no error code)
    "missing_token", "multiple_authorization_headers", "token_in_query",
    "token_in_header_and_query",
    # an MCP request body that is not strict JSON (m2m_guard.mcp.ToolScopes, 400)
    "ambiguous_request_body", "request_body_too_large",
    # a Bearer credential that is not a well-formed token (401 invalid_token)
    "malformed_authorization",
    # token format (401 invalid_token)
    "token_too_large", "malformed", "malformed_header", "malformed_claims", "invalid_kid",
    "algorithm_refused", "crit_refused", "b64_refused", "zip_refused", "type_refused",
    "cty_refused",
    # issuer and key
    "untrusted_issuer", "unknown_kid", "ambiguous_key", "algorithm_mismatch", "key_refused",
    "bad_signature",
    # claims
    "expired", "not_yet_valid", "issued_in_future", "missing_exp", "missing_aud",
    "wrong_audience", "invalid_aud", "invalid_exp", "invalid_nbf", "invalid_iat", "invalid_sub",
    "invalid_jti", "invalid_client_id", "invalid_azp", "invalid_oid",
    # certificate-bound tokens (RFC 8705; 401 invalid_token)
    "invalid_cnf", "client_certificate_missing", "client_certificate_mismatch",
    "client_certificate_unreadable",
    # scopes (403), availability (503), and the safety net for bugs (401)
    "insufficient_scope", "issuer_unavailable", "internal_error",
    # rules other than scopes (403 access_denied): a claim value, the client allow-list, a
    # predicate or an any_of, a token that is not a machine token
    "claim_refused", "client_refused", "rule_failed", "not_machine_token",
    # DPoP proofs (401 invalid_dpop_proof, or use_dpop_nonce): docs/dpop.md
    "dpop_proof_missing", "dpop_multiple_proofs", "dpop_proof_too_large", "dpop_malformed",
    "dpop_type_refused", "dpop_algorithm_refused", "dpop_key_refused", "dpop_private_key",
    "dpop_bad_signature", "dpop_invalid_claims", "dpop_method_mismatch", "dpop_url_mismatch",
    "dpop_too_old", "dpop_in_future", "dpop_ath_mismatch", "dpop_nonce_required",
    "dpop_key_mismatch", "dpop_replayed", "replay_store_unavailable",
    # sender-constrained tokens (401 invalid_token): the cnf claim and the scheme
    "bound_token_as_bearer", "dpop_unbound_token", "dpop_required", "unsupported_cnf",
})
# A claim named in `required_claims` that is absent gives "missing_<claim>"; metrics fold those
# into this one value so a configuration cannot create unbounded attribute values.
MISSING_CLAIM = "missing_claim"
_MAX_KID = 64


def metric_reason(reason: str | None) -> str | None:
    """`reason` as a metric attribute: a known code, `missing_claim`, or `other`."""
    if reason is None or reason in REASONS:
        return reason
    return MISSING_CLAIM if reason.startswith("missing_") else "other"


@dataclass(slots=True)
class Event:
    """Something the guard decided or did. Fields not relevant to a `kind` are None / empty.

    Every subscriber receives the same object: treat it as read-only. (It is not a frozen
    dataclass only because building a frozen one costs several times more, on every request.)

    `time` is epoch seconds. `duration` (seconds) is set on decisions made by the verifier.
    `rule` names the rule an ``access_denied`` refusal failed (never a claim value).
    `status` is the HTTP status a refusal answers with. `fingerprint` is 16 hex digits of the
    token's SHA-256 (the same as `AccessToken.fingerprint`), never the token.
    """

    kind: str
    issuer: str | None = None
    reason: str | None = None
    status: int | None = None
    algorithm: str | None = None
    kid: str | None = None
    duration: float | None = None
    cached: bool | None = None
    client_id: str | None = None
    fingerprint: str | None = None
    keys: int | None = None
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    error: str | None = None
    time: float = 0.0
    rule: str | None = None


Subscriber = Callable[[Event], object]


@dataclass(frozen=True, slots=True)
class RefusalContext:
    """What is known about the token of a refused request, for events and log lines.

    `verified` tells where the values come from: a verified token (a request refused after
    verification, e.g. for its scopes) or a token that failed verification, whose values are
    only what it claims (`kid` and `client_id` are then made safe with `safe_text`). `issuer` is
    set once the token named a configured issuer. `fingerprint` is 16 hex digits of the token's
    SHA-256, or None when there was no token.
    """

    issuer: str | None = None
    kid: str | None = None
    algorithm: str | None = None
    client_id: str | None = None
    fingerprint: str | None = None
    verified: bool = False

    @classmethod
    def of_token(cls, access: AccessToken | None) -> RefusalContext:
        """The context of a request whose verified token (if any) is `access`."""
        if access is None:
            return _NO_TOKEN
        return cls(access.issuer, safe_text(access.key_id), access.algorithm, access.client_id,
                   access.fingerprint, verified=True)


_NO_TOKEN = RefusalContext()


def safe_text(value: object, limit: int = _MAX_KID) -> str | None:
    """An untrusted value made safe to log or export: printable ASCII, bounded, or None."""
    if not isinstance(value, str):
        return None
    if len(value) <= limit and value.isascii() and value.isprintable():
        return value  # the common case, without building a new string
    return "".join(c if " " <= c < "\x7f" else "?" for c in value[:limit])


def token_fingerprint(token: object) -> str | None:
    """16 hex digits of the token's SHA-256 (as `AccessToken.fingerprint`); None if not a str."""
    if not isinstance(token, str):
        return None
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def key_ids(keys: KeySet | None) -> set[str]:
    """The key ids of a key set (a key without one is named ``no-kid``), made safe."""
    if keys is None:
        return set()
    return {safe_text(key.kid) or "no-kid" for key in keys.keys}


_P = ParamSpec("_P")
_hook_failed = False


def never_raises(hook: Callable[_P, None]) -> Callable[_P, None]:
    """For hooks that run inside verification (events, log lines): a bug in one must not turn
    into a refusal or a 500. The first failure is logged with its traceback."""

    @functools.wraps(hook)
    def guarded(*args: _P.args, **kwargs: _P.kwargs) -> None:
        global _hook_failed
        try:
            hook(*args, **kwargs)
        except Exception:  # reported, never raised into verification
            if not _hook_failed:
                _hook_failed = True
                logger.exception("m2m_guard could not report an event or a log line "
                                 "(verification goes on)")

    return guarded


class EventStream:
    """A verifier's subscribers, and the hooks through which the verifier reports to them.

    Built by `subscribe`; the verifier holds one only while someone is subscribed.
    """

    __slots__ = ("_cache_on", "_client_id", "_failed", "_lock", "subscribers")

    def __init__(self, settings: GuardSettings) -> None:
        self.subscribers: tuple[Subscriber, ...] = ()
        self._lock = threading.Lock()
        self._failed: set[int] = set()
        self._client_id = settings.events_client_id
        self._cache_on = settings.token_cache_size > 0

    def add(self, callback: Subscriber) -> None:
        with self._lock:
            self.subscribers = (*self.subscribers, callback)

    def remove(self, callback: Subscriber) -> None:
        with self._lock:
            items = list(self.subscribers)
            for index, item in enumerate(items):
                if item is callback or item == callback:
                    del items[index]
                    break
            self.subscribers = tuple(items)

    def emit(self, event: Event) -> None:
        """Hand `event` to every subscriber; a subscriber's exception is logged, not raised."""
        for callback in self.subscribers:
            try:
                callback(event)
            except Exception:  # noqa: BLE001 - a subscriber must never break verification
                self._subscriber_failed(callback)

    def _subscriber_failed(self, callback: Subscriber) -> None:
        key = id(callback)
        if key in self._failed:
            logger.debug("m2m_guard event subscriber %r failed again", callback, exc_info=True)
            return
        self._failed.add(key)
        logger.exception("m2m_guard event subscriber %r failed (verification goes on; further "
                         "failures of this subscriber are logged at DEBUG)", callback)

    # -- hooks called by the verifier and the adapters --------------------------------------
    @staticmethod
    def start() -> float:
        """The start time of a verification (pass it back to `allowed` / `refused`)."""
        return time.perf_counter()

    @never_raises
    def allowed(self, access: AccessToken, started: float, *, cached: bool) -> None:
        duration = time.perf_counter() - started
        self.emit(Event(
            ALLOWED, issuer=access.issuer, algorithm=access.algorithm,
            kid=safe_text(access.key_id), duration=duration,
            cached=cached if self._cache_on else None,
            client_id=access.client_id if self._client_id else None,
            fingerprint=access.fingerprint, time=time.time(),
        ))

    @never_raises
    def refused(self, error: GuardError, context: RefusalContext,
                started: float | None = None) -> None:
        """A refusal: by the verifier (`started` set: the event has a `duration`) or by an
        adapter (framing, missing token, a route's scopes)."""
        duration = None if started is None else time.perf_counter() - started
        # Whether the cache answered is known of a token that reached key selection only.
        cached = False if self._cache_on and context.issuer is not None \
            and not context.verified else None
        self.emit(Event(
            ISSUER_UNAVAILABLE if isinstance(error, IssuerUnavailable) else REFUSED,
            issuer=context.issuer, reason=error.reason, status=error.status_code,
            algorithm=context.algorithm, kid=context.kid, duration=duration, cached=cached,
            client_id=context.client_id if context.verified and self._client_id else None,
            fingerprint=context.fingerprint, time=time.time(),
            rule=getattr(error, "rule", None),
        ))

    @never_raises
    def key_set(self, issuer: str, result: FetchResult | None, error: str | None,
                before: KeySet | None, after: KeySet | None) -> None:
        now = time.time()
        if result is None:
            self.emit(Event(KEYS_FETCH_FAILED, issuer=issuer, error=error, time=now,
                            keys=len(after) if after is not None else None))
            return
        kind = KEYS_NOT_MODIFIED if result.keys is None else KEYS_FETCHED
        self.emit(Event(kind, issuer=issuer, keys=len(after) if after is not None else 0,
                        time=now))
        if after is not before and after is not None:
            old, new = key_ids(before), key_ids(after)
            self.emit(Event(KEYS_CHANGED, issuer=issuer, keys=len(after),
                            added=tuple(sorted(new - old)), removed=tuple(sorted(old - new)),
                            time=now))

    @never_raises
    def unknown_kid(self, issuer: str, kid: str | None, *, refetch: bool) -> None:
        now = time.time()
        self.emit(Event(UNKNOWN_KID, issuer=issuer, kid=safe_text(kid), time=now))
        if not refetch:
            self.emit(Event(COOLDOWN_HIT, issuer=issuer, kid=safe_text(kid), time=now))

    @never_raises
    def refresh_ahead(self, issuer: str) -> None:
        self.emit(Event(REFRESH_AHEAD, issuer=issuer, time=time.time()))


def subscribe(verifier: TokenVerifier, callback: Subscriber) -> Callable[[], None]:
    """Add `callback` to `verifier`'s event stream; return a function that removes it.

    The same as ``verifier.subscribe(callback)``: when the last subscriber is removed the
    verifier stops building events altogether.
    """
    return verifier.subscribe(callback)
