"""Sender-constrained tokens: confirming a verified token's `cnf` claim (RFC 7800) against the
request that presents it. The gate's one hook for proof of possession (docs/architecture.md).

A `Confirmation` handles one `cnf` member: DPoP's ``jkt`` (RFC 9449, `DPoPConfirmation`) and
mTLS's ``x5t#S256`` (RFC 8705, `CertificateConfirmation`, over the pure rules of `mtls.py`).
For every verified token the gate calls `confirm(request, scheme, token, access)`
(`Gate.authenticate`):

- a token without `cnf` presented with the ``Bearer`` scheme needs nothing (and is refused with
  ``dpop_required`` when `dpop` is ``required``); presented with the ``DPoP`` scheme it is
  refused (``dpop_unbound_token``, RFC 9449 §7.1);
- a token with `cnf` must have a confirmation for each of its members, each of which confirms
  (an unknown method: ``unsupported_cnf``); a ``DPoP`` request must carry ``jkt``.

Bound tokens are never answered by a Bearer cache-hit fast path: the verifier keeps them in the
verified-token cache under a key those paths do not look up, so every bound token comes here.

`DPoPConfirmation` refuses a token bound with `cnf.jkt` under any scheme but ``DPoP``, in every
mode (RFC 9449 §7.2: no downgrade to Bearer). Under ``DPoP`` it judges the `DPoP` header with
`dpop.ProofChecker` (htm, htu from `request_target`, ath of the token, the server nonce when
`dpop_nonce` is on), compares the proof's thumbprint with `cnf.jkt` and records the proof in the
replay store (`replay.py`), in that order.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ..errors import InvalidDPoPProof, InvalidToken
from .dpop import Proof, ProofChecker, request_htu
from .encoding import b64url_encode
from .mtls import CNF_X5T, TrustedProxies, check_binding
from .replay import ReplayStore, make_replay_store, replay_key, replay_ttl
from .request import RequestView

if TYPE_CHECKING:
    from ..settings import GuardSettings
    from ..token import AccessToken
    from ..verifier import TokenVerifier

__all__ = ["BEARER", "DPOP", "CertificateConfirmation", "Confirmation", "DPoPConfirmation",
           "NonceSource", "confirm_binding", "confirm_binding_async", "confirmations_for",
           "default_confirmations",
           "request_target"]

#: The authorization schemes, as `Gate` reads them (lower case).
BEARER = "bearer"
DPOP = "dpop"


class Confirmation:
    """One confirmation method of the `cnf` claim (see the module doc). `member` is its name
    in `cnf`; `confirm` raises a `GuardError` unless the request proves possession of what
    `value` names. `confirm_async` is for a method that needs I/O (a shared replay store)."""

    member: str = ""

    def confirm(self, request: RequestView, scheme: str, token: str, access: AccessToken,
                value: Any) -> None:
        raise NotImplementedError

    async def confirm_async(self, request: RequestView, scheme: str, token: str,
                            access: AccessToken, value: Any) -> None:
        self.confirm(request, scheme, token, access, value)


def _unbound() -> InvalidToken:
    return InvalidToken("The token is not bound to a DPoP key (no cnf.jkt): send it as Bearer, "
                        "or get a DPoP-bound token.", reason="dpop_unbound_token")


def _members(scheme: str, access: AccessToken, confirmations: Mapping[str, Confirmation],
             required: bool) -> list[tuple[Confirmation, Any]]:
    """The confirmations `access` calls for, or [] for a plain bearer token; refuses what no
    confirmation can judge."""
    cnf = access.cnf
    if cnf is None:
        if scheme == DPOP:
            raise _unbound()
        if required:
            raise InvalidToken("This API accepts DPoP-bound tokens only: send "
                               "Authorization: DPoP <token> with a DPoP proof.",
                               reason="dpop_required")
        return []
    if (type(cnf) is not MappingProxyType and not isinstance(cnf, Mapping)) or not cnf:
        raise InvalidToken("The token's cnf claim is not a non-empty JSON object.",
                           reason="invalid_cnf")
    found = []
    for member, value in cnf.items():
        confirmation = confirmations.get(member)
        if confirmation is None:
            raise InvalidToken("The token is bound by a confirmation method (cnf) this API does "
                               "not support.", reason="unsupported_cnf")
        found.append((confirmation, value))
    if scheme == DPOP and "jkt" not in cnf:
        raise _unbound()
    return found


def confirm_binding(request: RequestView, scheme: str, token: str, access: AccessToken,
                    confirmations: Mapping[str, Confirmation], *, required: bool) -> None:
    """Confirm `access`'s binding to `request` (see the module doc); `required`: only
    sender-constrained tokens are accepted (`dpop` = ``required``)."""
    for confirmation, value in _members(scheme, access, confirmations, required):
        confirmation.confirm(request, scheme, token, access, value)


async def confirm_binding_async(request: RequestView, scheme: str, token: str,
                                access: AccessToken, confirmations: Mapping[str, Confirmation],
                                *, required: bool) -> None:
    """`confirm_binding` for asyncio servers."""
    for confirmation, value in _members(scheme, access, confirmations, required):
        await confirmation.confirm_async(request, scheme, token, access, value)


# -- the request's URI, behind a proxy too --------------------------------------------------------
def _last(value: str) -> str:
    """The last element of a comma-separated header value (the one the nearest proxy set)."""
    return value.rsplit(",", 1)[-1].strip(" \t")


def _forwarded_pairs(value: str) -> dict[str, str]:
    """The parameters of the last element of an RFC 7239 `Forwarded` value (lower-case
    names, quotes removed)."""
    pairs: dict[str, str] = {}
    for pair in _last(value).split(";"):
        name, sep, item = pair.partition("=")
        if sep:
            pairs[name.strip(" \t").lower()] = item.strip(" \t").strip('"')
    return pairs


def _safe_host(host: str) -> bool:
    return bool(host) and len(host) <= 255 and host.isascii() and \
        not any(c in host for c in "/\\@?# \t\"")


_HTTP_SCHEMES = {"ws": "http", "wss": "https"}


def request_target(request: RequestView, forwarded: tuple[str, ...] = ()) -> str:
    """The URI a proof's `htu` must match: the request's scheme, host and full path (mount
    point included) as the application sees them; with `forwarded` (the trusted headers of
    `dpop_forwarded_headers`), the scheme, host, port and path prefix the proxy reports
    instead. WSGI and ASGI give the same answer for the same request (`target_path`)."""
    scheme = request.scheme
    scheme = _HTTP_SCHEMES.get(scheme, scheme)
    host = request.host
    if not forwarded:
        return request_htu(scheme, host, request.target_path)
    prefix = ""
    port = None
    for name in forwarded:
        values = request.headers(name)
        if not values:
            continue
        value = ",".join(values)
        if name == "forwarded":
            pairs = _forwarded_pairs(value)
            proto, fhost = pairs.get("proto", "").lower(), pairs.get("host", "")
            if proto in ("http", "https"):
                scheme = proto
            if _safe_host(fhost):
                host = fhost
        elif name == "x-forwarded-proto":
            proto = _last(value).lower()
            if proto in ("http", "https"):
                scheme = proto
        elif name == "x-forwarded-host":
            fhost = _last(value)
            if _safe_host(fhost):
                host = fhost
        elif name == "x-forwarded-port":
            fport = _last(value)
            if fport.isdigit() and len(fport) <= 5:
                port = fport
        elif name == "x-forwarded-prefix":
            fprefix = _last(value).rstrip("/")
            if fprefix.startswith("/") and _safe_host(fprefix.replace("/", "x")):
                prefix = fprefix
    if port is not None:
        base = host[:host.find("]") + 1] if host.startswith("[") else host.split(":", 1)[0]
        host = f"{base}:{port}"
    return request_htu(scheme, host, prefix.encode("latin-1") + request.target_path)


# -- server nonces (RFC 9449 §9) ------------------------------------------------------------------
class NonceSource:
    """Server nonces that need no storage: the nonce of each `lifetime`-long period is an HMAC
    of the period's number under `secret`, so every worker given the same secret agrees. The
    current nonce and the previous one are accepted (a client that just got one keeps working
    across a rotation)."""

    __slots__ = ("_clock", "_known", "_lock", "_secret", "lifetime")

    def __init__(self, secret: str | None, lifetime: float, *,
                 clock: Callable[[], float] = time.time) -> None:
        self._secret = (secret or secrets.token_urlsafe(32)).encode("utf-8")
        self.lifetime = lifetime
        self._clock = clock
        self._known: tuple[int, tuple[str, str]] | None = None
        self._lock = threading.Lock()

    def _nonce(self, period: int) -> str:
        digest = hmac.new(self._secret, str(period).encode("ascii"), hashlib.sha256).digest()
        return b64url_encode(digest[:18])

    def valid(self) -> tuple[str, str]:
        """(current, previous): the current nonce first (the one to hand out)."""
        period = int(self._clock() // self.lifetime)
        known = self._known
        if known is not None and known[0] == period:
            return known[1]
        pair = (self._nonce(period), self._nonce(period - 1))
        self._known = (period, pair)
        return pair


# -- DPoP -----------------------------------------------------------------------------------------
class DPoPConfirmation(Confirmation):
    """`cnf.jkt`: the token is bound to a DPoP key (see the module doc)."""

    member = "jkt"

    def __init__(self, settings: GuardSettings, *, store: ReplayStore | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.enabled = settings.dpop != "off"
        self.algorithms = tuple(settings.dpop_algorithms)
        self.checker = ProofChecker(algorithms=self.algorithms,
                                    iat_window=settings.dpop_iat_window)
        self.forwarded = tuple(settings.dpop_forwarded_headers)
        # Forwarded headers are the proxies' word: from any other peer they are not read.
        self.proxies = TrustedProxies(settings.trusted_proxies)
        self.window = settings.dpop_iat_window
        self._clock = clock
        self.store: ReplayStore | None = None
        if self.enabled:
            self.store = store if store is not None else make_replay_store(
                settings.dpop_replay_store, max_entries=settings.dpop_replay_max_entries)
        self.nonces = NonceSource(settings.dpop_nonce_secret, settings.dpop_nonce_lifetime,
                                  clock=clock) if settings.dpop_nonce else None

    def _proof(self, request: RequestView, scheme: str, token: str,
               value: Any) -> tuple[Proof, float]:
        if scheme != DPOP or not self.enabled:
            raise InvalidToken("The token is bound to a DPoP key (cnf.jkt): send it with "
                               "Authorization: DPoP and a DPoP proof, not as Bearer.",
                               reason="bound_token_as_bearer")
        if not isinstance(value, str) or not value:
            raise InvalidToken("The token's cnf.jkt is not a string.", reason="invalid_cnf")
        now = self._clock()
        proof = self.checker.check(
            request.headers("dpop"), method=request.method,
            url=request_target(request, self._forwarded_from(request)), now=now, access_token=token,
            nonces=self.nonces.valid() if self.nonces is not None else None)
        if not (value.isascii() and hmac.compare_digest(proof.jkt, value)):
            raise InvalidDPoPProof("The DPoP proof is signed by another key than the one the "
                                   "token is bound to (cnf.jkt).", reason="dpop_key_mismatch")
        return proof, now

    def _forwarded_from(self, request: RequestView) -> tuple[str, ...]:
        """The forwarded headers to read for `request`: the configured ones when its peer is a
        trusted proxy, else none (the URL as the server saw it)."""
        if self.forwarded and self.proxies.trusts(request.peer):
            return self.forwarded
        return ()

    def _replayed(self) -> InvalidDPoPProof:
        return InvalidDPoPProof("The DPoP proof was already used: make a fresh proof (a new jti) "
                                "for every request.", reason="dpop_replayed")

    def confirm(self, request: RequestView, scheme: str, token: str, access: AccessToken,
                value: Any) -> None:
        proof, now = self._proof(request, scheme, token, value)
        assert self.store is not None
        if not self.store.claim(replay_key(proof.jkt, proof.jti),
                                replay_ttl(proof.iat, now, self.window)):
            raise self._replayed()

    async def confirm_async(self, request: RequestView, scheme: str, token: str,
                            access: AccessToken, value: Any) -> None:
        proof, now = self._proof(request, scheme, token, value)
        assert self.store is not None
        if not await self.store.claim_async(replay_key(proof.jkt, proof.jti),
                                            replay_ttl(proof.iat, now, self.window)):
            raise self._replayed()


# -- mTLS ---------------------------------------------------------------------------------------
class CertificateConfirmation(Confirmation):
    """`cnf["x5t#S256"]`: the token is bound to the client's TLS certificate (RFC 8705 §3),
    under any scheme. The certificate comes from the server or, from a peer in
    `trusted_proxies`, from its `client_cert_header` (`mtls.client_thumbprint`)."""

    member = CNF_X5T

    def __init__(self, settings: GuardSettings) -> None:
        self.proxies = TrustedProxies(settings.trusted_proxies)
        self.header = settings.client_cert_header

    def confirm(self, request: RequestView, scheme: str, token: str, access: AccessToken,
                value: Any) -> None:
        check_binding(request, value, self.proxies, self.header)


def default_confirmations(settings: GuardSettings) -> dict[str, Confirmation]:
    """The confirmation methods, by `cnf` member. Both are always there: in every mode, a
    token bound with `cnf.jkt` is refused when presented as Bearer, and a token bound with
    `cnf["x5t#S256"]` without its client certificate."""
    dpop = DPoPConfirmation(settings)
    certificate = CertificateConfirmation(settings)
    return {dpop.member: dpop, certificate.member: certificate}


_BY_VERIFIER: weakref.WeakKeyDictionary[TokenVerifier, dict[str, Confirmation]] = \
    weakref.WeakKeyDictionary()
_BY_VERIFIER_LOCK = threading.Lock()


def confirmations_for(verifier: TokenVerifier) -> dict[str, Confirmation]:
    """`default_confirmations` of `verifier.settings`, made once per verifier: every gate of one
    verifier (an adapter may build several) shares one replay store, so a proof accepted
    through one is a replay through another."""
    with _BY_VERIFIER_LOCK:
        found = _BY_VERIFIER.get(verifier)
        if found is None:
            found = _BY_VERIFIER[verifier] = default_confirmations(verifier.settings)
        return found
