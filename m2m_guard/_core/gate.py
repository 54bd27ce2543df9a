"""`Gate`: what every adapter does with a request, decided once, framework-free.

For each request an adapter builds a `RequestView` and asks the gate, in this order:

1. ``gate.answer(request)``: the guard's own endpoints (health, RFC 9728 metadata) answer before
   anything else, without a token; a non-None `EndpointResponse` is sent as is (no body for
   HEAD) and the request goes no further;
2. ``gate.passes(request)``: a public path, or an allowed CORS preflight, runs the app with no
   token checked (adapters may add their own reasons, e.g. Flask's public endpoints);
3. ``await gate.authenticate(request)`` or ``gate.authenticate_sync(request)``: a token the
   verified-token cache holds, sent as exactly ``Bearer <token>``, is answered at once
   (`cached`, the fast path, with the full path's outcome; never for a sender-constrained
   token); a bound token the cache holds, sent as exactly ``DPoP <token>``, skips only the
   credentials and the verification (`_dpop_hit`: its binding is confirmed and the checks run
   as below); otherwise the credentials (`presented`: RFC 6750 framing, the ``Bearer`` scheme and
   ``DPoP`` when DPoP is on), the token verified (`TokenVerifier`), its `cnf` binding confirmed
   (`confirmation.confirm_binding`: DPoP's ``jkt``, ...), then every `Check` in `checks`; the
   `AccessToken`, or None when there is no token and none is required. Every refusal is a
   `GuardError`, which the adapter answers with ``gate.refuse(error, access)`` (reported once,
   rendered with the configured realm, resource metadata and DPoP challenge).

`decide(request)` runs steps 1 and 2 in one call for adapters that branch on the outcome.

Sender-constrained tokens plug in through `confirmations` (one `Confirmation` per `cnf`
member, `confirmation.py`), which keep the Bearer fast path on. Rules on the token alone are
`_core/requirements.py`'s (route decorators, and the app-wide rules the verifier applies before
caching). Other checks after verification that need the request plug in here and only here:
`default_checks(settings)` lists the ones the settings turn on, and every adapter runs them. A
check reads the `RequestView` (method, URL, headers, client certificate), the raw token and the
verified `AccessToken`, and raises a `GuardError` to refuse. While any check is configured,
adapters' cache-hit fast paths are off (`fast_path`), so no request skips a check. See
docs/architecture.md ("How to add a check").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from ..errors import GuardError, InvalidToken, MissingToken, RenderedError
from ..events import logger, token_fingerprint
from .answers import EndpointResponse
from .bearer import extract_credentials, query_has_access_token
from .confirmation import (
    BEARER,
    DPOP,
    Confirmation,
    confirm_binding,
    confirm_binding_async,
    confirmations_for,
)
from .endpoints import OperationalEndpoints, render_refusal
from .request import RequestView
from .rules import PathRules, is_cors_preflight

if TYPE_CHECKING:
    from ..settings import GuardSettings
    from ..token import AccessToken
    from ..verifier import TokenVerifier

__all__ = ["AUTHENTICATE", "PASS", "Check", "Gate", "default_checks"]


class Check:
    """A rule every authenticated request must pass after its token is verified.

    Override `check` (synchronous; it must not block, it runs on the event loop under ASGI) and,
    for a rule that needs I/O, `check_async` as well. Raise a `GuardError` to refuse: it is
    answered and reported like every other refusal.
    """

    def check(self, request: RequestView, token: str, access: AccessToken) -> None:
        raise NotImplementedError

    async def check_async(self, request: RequestView, token: str, access: AccessToken) -> None:
        self.check(request, token, access)


def default_checks(settings: GuardSettings) -> tuple[Check, ...]:
    """The checks `settings` turn on, in the order they run (none yet: the bearer token's own
    verification is the whole decision)."""
    return ()


def _internal(scheme: str, token: str, exc: Exception) -> InvalidToken:
    """An unexpected exception while confirming a token's binding, as the refusal it becomes
    (logged at ERROR with its traceback, as the verifier does for its own)."""
    logger.error("m2m_guard unexpected error confirming fingerprint=%s",
                 token_fingerprint(token), exc_info=exc)
    error = InvalidToken("The token could not be verified.", reason="internal_error")
    if scheme == DPOP:
        error.challenge = "DPoP"
    return error


class _Decision:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: `Gate.decide`: run the app without checking a token.
PASS = _Decision("PASS")
#: `Gate.decide`: authenticate the request (`authenticate` / `authenticate_sync`).
AUTHENTICATE = _Decision("AUTHENTICATE")


class Gate:
    """The decisions of one `TokenVerifier` for every adapter (see the module doc).

    `checks` default to `default_checks(verifier.settings)`.
    """

    __slots__ = ("_cached_token", "_dpop_cached", "_dpop_required", "_schemes", "checks",
                 "confirmations", "endpoints", "fast_path", "paths", "settings", "verifier")

    def __init__(self, verifier: TokenVerifier, *, checks: Iterable[Check] | None = None,
                 confirmations: Mapping[str, Confirmation] | None = None) -> None:
        self.verifier = verifier
        self.settings = settings = verifier.settings
        self.paths = PathRules(tuple(settings.public_paths))
        #: Health and RFC 9728 endpoints (None unless configured).
        self.endpoints = OperationalEndpoints.for_verifier(verifier)
        self.checks = tuple(checks) if checks is not None else default_checks(settings)
        #: The `cnf` confirmation methods (sender-constrained tokens: DPoP's ``jkt``, ...), by
        #: member; `confirmation.py`.
        self.confirmations = dict(confirmations) if confirmations is not None else \
            confirmations_for(verifier)
        self._dpop_required = settings.dpop == "required"
        self._schemes = frozenset({BEARER} if settings.dpop == "off" else {BEARER, DPOP})
        #: May an adapter answer a cached token without `authenticate`? Only without checks,
        #: and not when every token must be DPoP-bound. (It never answers a bound token: the
        #: verifier keeps those apart, see `confirmation.py`.)
        self.fast_path = settings.token_cache_size > 0 and not self.checks \
            and not self._dpop_required
        self._cached_token = verifier.cached_token
        #: Look bound tokens sent as exactly ``DPoP <token>`` up in the cache (`_dpop_hit`)?
        self._dpop_cached = settings.token_cache_size > 0 and settings.dpop != "off"

    # -- before authentication ---------------------------------------------------------------
    def answer(self, request: RequestView) -> EndpointResponse | None:
        """The answer of an operational endpoint to `request`, or None when it is not one."""
        if self.endpoints is None:
            return None
        return self.endpoints.answer(request.path, request.method)

    def passes(self, request: RequestView) -> bool:
        """True for a public path or an allowed CORS preflight: no token is checked."""
        if self.paths.is_public(request.path):
            return True
        return self.settings.allow_cors_preflight and request.method == "OPTIONS" \
            and is_cors_preflight(request.method, request.has_header("origin"),
                                  request.has_header("access-control-request-method"))

    def decide(self, request: RequestView) -> EndpointResponse | _Decision:
        """Steps 1 and 2 of the module doc: an answer to send, `PASS` or `AUTHENTICATE`."""
        answer = self.answer(request)
        if answer is not None:
            return answer
        return PASS if self.passes(request) else AUTHENTICATE

    # -- authentication ----------------------------------------------------------------------
    def cached(self, request: RequestView) -> AccessToken | None:
        """The cache-hit fast path: `request`'s token when its one `Authorization` header reads
        exactly ``Bearer <token>`` and the verified-token cache holds a usable entry for it
        (`cached_bearer`); None means "take the full path". `authenticate` asks it first."""
        if not self.fast_path:
            return None
        value = request.single_authorization()
        return None if value is None else self.cached_bearer(value, request.query_string)

    def cached_bearer(self, authorization: str | bytes,
                      query_string: str | bytes) -> AccessToken | None:
        """The usable cached token of one `Authorization` value, raw (bytes under ASGI), or
        None. The same outcome as the full path for every request it answers: a cache key is a
        verified token, a canonical compact JWS, so ``Bearer <key>`` passes every rule of
        `extract_bearer` (a value holding several credentials, joined by a WSGI server, is no
        key); a query naming `access_token` is refused there, so it is declined here; while
        events are subscribed the verifier declines (`TokenVerifier.cached_token`) so that hits
        are reported. Callers check `fast_path` (no checks configured)."""
        if type(authorization) is bytes:
            if authorization[:7] != b"Bearer ":
                return None
        elif authorization[:7] != "Bearer ":
            return None
        if query_string and query_has_access_token(query_string):
            return None
        return self._cached_token(authorization[7:])

    def _dpop_hit(self, request: RequestView) -> tuple[str, AccessToken] | None:
        """``(token, access)`` when `request`'s one `Authorization` header reads exactly
        ``DPoP <token>`` and the verified-token cache holds `token` as a bound token: what
        `presented` and `verify` would give (a cache key is a canonical compact JWS, so
        ``DPoP <key>`` passes every rule of `extract_credentials`; a query naming
        `access_token` is refused there, so it is declined here; while events are subscribed
        the verifier declines). The binding is still confirmed, and the checks run, after it:
        only the credentials and the token's verification are skipped. None: the full path."""
        value = request.single_authorization()
        if value is None:
            return None
        if type(value) is bytes:
            if value[:5] != b"DPoP ":
                return None
        elif value[:5] != "DPoP ":
            return None
        query_string = request.query_string
        if query_string and query_has_access_token(query_string):
            return None
        token = value[5:]
        access = self._cached_token(token, bound=True)
        if access is None:
            return None
        return (token.decode("ascii") if isinstance(token, bytes) else token), access

    def credentials(self, request: RequestView) -> str | None:
        """The request's bearer token, or None without credentials; `GuardError` for malformed
        or ambiguous ones (RFC 6750 framing, a token in the query)."""
        found = self.presented(request)
        return None if found is None else found[1]

    def presented(self, request: RequestView) -> tuple[str, str] | None:
        """``(scheme, token)`` of the request's credentials (``bearer``, or ``dpop`` when DPoP is
        on), or None without any: the one place credentials are taken from a request."""
        return extract_credentials(request.authorization(), request.query_string,
                                   max_token_bytes=self.settings.max_token_bytes,
                                   schemes=self._schemes)

    def _no_token(self, required: bool | None) -> None:
        if self.settings.required if required is None else required:
            raise MissingToken()

    def _credentials(self, request: RequestView, required: bool | None
                     ) -> tuple[str, str, AccessToken | None] | None:
        """The scheme and token `request` presents, with the verified token when the DPoP
        cache lookup (`_dpop_hit`) already has it, else None for the verifier to decide; None
        when there is no token and none is required (`MissingToken` when one is)."""
        hit = self._dpop_hit(request) if self._dpop_cached else None
        if hit is not None:
            return DPOP, hit[0], hit[1]
        found = self.presented(request)
        if found is None:
            self._no_token(required)
            return None
        return found[0], found[1], None

    async def authenticate(self, request: RequestView, *, required: bool | None = None,
                           fast: bool = True) -> AccessToken | None:
        """Credentials, verification and checks (see the module doc); raises `GuardError`.
        `required` overrides `settings.required` (a dependency that demands a token); `fast`
        False skips the cache-hit fast path (a caller that has just tried it)."""
        if fast and self.fast_path:
            access = self.cached(request)
            if access is not None:
                return access
        found = self._credentials(request, required)
        if found is None:
            return None
        scheme, token, cached = found
        try:
            access = await self.verifier.verify(token) if cached is None else cached
            await confirm_binding_async(request, scheme, token, access, self.confirmations,
                                        required=self._dpop_required)
        except GuardError as exc:
            if scheme == DPOP:
                exc.challenge = "DPoP"
            raise
        except Exception as exc:  # noqa: BLE001 - never let a bug become a 500
            raise _internal(scheme, token, exc) from None
        for check in self.checks:
            await check.check_async(request, token, access)
        return access

    def authenticate_sync(self, request: RequestView, *, required: bool | None = None,
                          fast: bool = True) -> AccessToken | None:
        """The blocking `authenticate` (WSGI, Django's sync chain, DRF)."""
        if fast and self.fast_path:
            access = self.cached(request)
            if access is not None:
                return access
        found = self._credentials(request, required)
        if found is None:
            return None
        scheme, token, cached = found
        try:
            access = self.verifier.verify_sync(token) if cached is None else cached
            confirm_binding(request, scheme, token, access, self.confirmations,
                            required=self._dpop_required)
        except GuardError as exc:
            if scheme == DPOP:
                exc.challenge = "DPoP"
            raise
        except Exception as exc:  # noqa: BLE001 - never let a bug become a 500
            raise _internal(scheme, token, exc) from None
        for check in self.checks:
            check.check(request, token, access)
        return access

    # -- refusals ----------------------------------------------------------------------------
    def refuse(self, error: GuardError, access: AccessToken | None = None) -> RenderedError:
        """The answer to a refused request: reported once, rendered with this configuration."""
        return render_refusal(self.verifier, error, access)
