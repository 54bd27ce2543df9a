"""`M2MGuardMiddleware`: the guard as a pure ASGI middleware (Starlette, FastAPI, any ASGI app).

For `http` and `websocket` scopes: public paths and (when allowed) CORS preflight requests pass
through untouched; otherwise the bearer token is extracted (RFC 6750), verified, and the
`AccessToken` placed in `scope["m2m_guard.token"]` and in `current_token()`; with Starlette
installed also as `scope["auth"]` / `scope["user"]`, so `request.auth.scopes` and
`starlette.authentication.requires` work. A refusal is answered per the behaviour contract
(docs/architecture.md); a refused websocket gets an HTTP denial response where the server
supports it, else a close with code 1008 before accept. A `GuardError` raised by the app (e.g.
by `require_scopes`) is rendered the same way while the response has not started.

A token already in the verified-token cache, sent as a plain ``Bearer <token>`` header, is served
on a fast path (`TokenVerifier.cached_token`) with the same outcome as the full path.

For `lifespan`: startup warms the key sets (a failure is logged, not fatal); shutdown stops the
verifier's background work. An app that has an `M2MGuard` (FastAPI, ``app.state.m2m_guard``) is
told of this middleware on its first call (``attach_middleware``), so both share one verifier.

Settings read from the environment (no `settings`, no `verifier`) that do not validate (a
misspelled ``M2M_GUARD_*`` name, a missing issuer) do not raise while the app builds its
middleware stack (Starlette does that inside the lifespan call, where a server under
``lifespan: auto`` would take the error for "lifespan unsupported" and serve 500s). Instead:

- the lifespan startup is answered ``lifespan.startup.failed`` with the `ConfigurationError`'s
  message (did-you-mean hint included), so the server logs it and exits non-zero;
- without a lifespan (``--lifespan off``), the message is logged once at ERROR, and every
  request, public paths included (they are part of the settings that failed), is answered
  503 ``{"error": "temporarily_unavailable", ...}`` with ``Retry-After`` and a description that
  points at the server log, never a bare 500.

This module imports no web framework: Starlette's principal types are used only when Starlette
is installed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._core.asgi_io import (
    ASGIApp,
    Message,
    Misconfigured,
    Receive,
    ReceiveTracker,
    Scope,
    Send,
    SendTracker,
    send_answer,
    send_refusal,
)
from ._core.context import reset_current, set_current
from ._core.gate import Gate
from ._core.request import AsgiRequest
from ._core.rules import PathRules
from ._core.storage import SETTINGS_KEY, TOKEN_KEY, VERIFIER_KEY
from .errors import ConfigurationError, GuardError
from .settings import GuardSettings
from .token import AccessToken
from .verifier import TokenVerifier

if TYPE_CHECKING:
    from .starlette import TokenCredentials

__all__ = ["M2MGuardMiddleware", "PathRules", "TokenCredentials"]

_HANDLED = object()  # the request was answered before the app call
_PASS = object()  # a public path or preflight: the app runs with no token checked
# Stands in for settings that failed to load from the environment, so that the middleware can
# be built and report the failure (it never verifies anything with them).
_PLACEHOLDER_SETTINGS = GuardSettings(issuer="https://configuration-error.invalid",
                                      verify_audience=False)


def __getattr__(name: str) -> Any:
    if name == "TokenCredentials":  # Starlette's type: imported only when asked for
        from .starlette import TokenCredentials

        return TokenCredentials
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _principals() -> Callable[[AccessToken | None, bool], tuple[Any, Any]] | None:
    """Starlette's `request.auth` / `request.user` maker, or None without Starlette."""
    try:
        from .starlette import Principals
    except ImportError:  # a plain ASGI app: nothing reads scope["auth"]
        return None
    return Principals()


class M2MGuardMiddleware:
    """Pure ASGI middleware: ``Middleware(M2MGuardMiddleware, settings=GuardSettings(...))``.

    `settings` defaults to `GuardSettings.from_env()`. Pass `verifier` to share one
    `TokenVerifier` between several apps (it is then not closed at shutdown).
    """

    def __init__(self, app: ASGIApp, settings: GuardSettings | None = None, *,
                 verifier: TokenVerifier | None = None) -> None:
        self.app = app
        if verifier is not None and settings is not None and verifier.settings is not settings:
            raise ValueError("give either settings or a verifier built from them, not both")
        # A configuration error from the environment is reported by the server (see the module
        # doc), not raised here, where it would be lost.
        self._misconfigured: Misconfigured | None = None
        if verifier is None and settings is None:
            try:
                settings = GuardSettings.from_env()
            except ConfigurationError as exc:
                self._misconfigured = Misconfigured(app, exc)
                settings = _PLACEHOLDER_SETTINGS
        self.verifier = verifier if verifier is not None else TokenVerifier(settings)
        self.settings = self.verifier.settings
        self._owns_verifier = verifier is None
        self.gate = Gate(self.verifier)
        self._principals = _principals()
        self._announced = False
        self._fast_path = self.gate.fast_path
        self._preflight = self.settings.allow_cors_preflight
        self._has_public_paths = bool(self.settings.public_paths)
        self._cached_bearer = self.gate.cached_bearer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._misconfigured is not None:
            await self._misconfigured(scope, receive, send)
            return
        if not self._announced:
            self._announce(scope)
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            if kind == "lifespan":
                await self._lifespan(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        access: AccessToken | None = None
        hit = False
        if self._fast_path:
            # A cached token in the one Authorization header, "Bearer <token>": the same
            # outcome as the full path (a cached token is a canonical compact JWS, so it passes
            # every rule of `extract_bearer`), with nothing parsed or decoded. Anything else (no
            # or several headers, another spelling, a query string naming access_token, a path
            # the guard answers or lets through) takes the full path; so does a miss.
            found = None
            for name, value in scope["headers"]:
                if name == b"authorization":
                    if found is not None:
                        found = None
                        break
                    found = value
            gate = self.gate
            if (found is not None and found[:7] == b"Bearer "
                    and not (self._has_public_paths and gate.paths.is_public(scope["path"]))
                    and (gate.endpoints is None or kind == "websocket"
                         or not gate.endpoints.serves(scope["path"]))
                    and not (scope.get("method") == "OPTIONS" and self._preflight
                             and gate.passes(AsgiRequest(scope)))):
                access = self._cached_bearer(found, scope.get("query_string", b""))
                hit = access is not None
        untouched = False
        if not hit:
            outcome = await self._authenticate(scope, receive, send)
            if outcome is _HANDLED:
                return
            if outcome is _PASS:
                untouched = True  # a public path or preflight: the scope stays as it came
            else:
                access = outcome  # type: ignore[assignment]
        if not untouched:
            scope[TOKEN_KEY] = access
            scope[SETTINGS_KEY] = self.settings
            scope[VERIFIER_KEY] = self.verifier  # for exception handlers inside the app
            if self._principals is not None:
                scope["auth"], scope["user"] = self._principals(access, hit)
        if kind == "websocket":
            await self._call_websocket(scope, receive, send, access, untouched=untouched)
            return
        # The app, with `access` current. A `GuardError` it raises is answered per the contract
        # while nothing was sent, never as a 500 (also on a public path, e.g. `require_scopes`
        # under a public prefix). Inline, not a helper coroutine: one frame less per request.
        marker = None if untouched else set_current(access)
        tracker = SendTracker(send)
        try:
            await self.app(scope, receive, tracker)
        except GuardError as exc:
            if tracker.started:
                raise
            await self._refuse(scope, receive, send, exc)
        finally:
            if marker is not None:
                reset_current(marker)

    def _announce(self, scope: Scope) -> None:
        """Tell the app's `M2MGuard` (``app.state.m2m_guard``), if any, of this middleware."""
        self._announced = True
        guard = getattr(getattr(scope.get("app"), "state", None), "m2m_guard", None)
        attach = getattr(guard, "attach_middleware", None)
        if callable(attach):
            attach(self)

    async def _authenticate(self, scope: Scope, receive: Receive,
                            send: Send) -> AccessToken | object | None:
        """The full path: the gate's decision (an operational answer sent: `_HANDLED`; a public
        path or preflight: `_PASS`), then the token authenticated; a refusal is sent here
        (`_HANDLED`). Otherwise the `AccessToken`, or None (no token, not required)."""
        request = AsgiRequest(scope)
        gate = self.gate
        if scope["type"] == "http":  # operational endpoints answer HTTP requests only
            answer = gate.answer(request)
            if answer is not None:
                await send_answer(send, answer, head=scope["method"] == "HEAD")
                return _HANDLED
        if gate.passes(request):
            return _PASS
        try:
            # The fast path above was tried (or did not apply): no second cache lookup.
            return await self.gate.authenticate(request, fast=False)
        except GuardError as exc:
            await self._refuse(scope, receive, send, exc)
            return _HANDLED

    async def _call_websocket(self, scope: Scope, receive: Receive, send: Send,
                              access: AccessToken | None, *, untouched: bool = False) -> None:
        """`__call__`'s app call for a websocket: the same, and a refusal after the app read the
        connect event still denies the handshake."""
        marker = None if untouched else set_current(access)
        tracker = SendTracker(send)
        receiver = ReceiveTracker(receive)
        try:
            await self.app(scope, receiver, tracker)
        except GuardError as exc:
            if tracker.started:
                raise
            await self._refuse(scope, receive, send, exc,
                               connect_consumed=receiver.connect_consumed)
        finally:
            if marker is not None:
                reset_current(marker)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, exc: GuardError, *,
                      connect_consumed: bool = False) -> None:
        rendered = self.gate.refuse(exc, scope.get(TOKEN_KEY))
        await send_refusal(scope, receive, send, rendered, exc.body_error,
                           connect_consumed=connect_consumed)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def receive_warming() -> Message:
            message = await receive()
            if message.get("type") == "lifespan.startup":
                await self.verifier.warm_up_at_startup()
            return message

        async def send_closing(message: Message) -> None:
            if message.get("type") in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                if self._owns_verifier:
                    await self.verifier.aclose()
            await send(message)

        await self.app(scope, receive_warming, send_closing)
