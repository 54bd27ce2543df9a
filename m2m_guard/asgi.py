"""`M2MGuardMiddleware`: the guard as a pure ASGI middleware (Starlette, FastAPI, any ASGI app).

For `http` and `websocket` scopes: public paths and (when allowed) CORS preflight requests pass
through untouched; otherwise the bearer token is extracted (RFC 6750), verified, and the
`AccessToken` placed in `scope["m2m_guard.token"]`, in `current_token()`, and as Starlette's
`scope["auth"]` / `scope["user"]` so `request.auth.scopes` and `starlette.authentication.requires`
work. A refusal is answered per DESIGN §4; a refused websocket gets an HTTP denial response where
the server supports it, else a close with code 1008 before accept. A `GuardError` raised by the
app (e.g. by `require_scopes`) is rendered the same way while the response has not started.

A token already in the verified-token cache, sent as a plain ``Bearer <token>`` header, is served
on a fast path (`TokenVerifier.cached_token`) with the same outcome as the full path.

For `lifespan`: startup warms the key sets (a failure is logged, not fatal); shutdown stops the
verifier's background work.

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
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.authentication import AuthCredentials, UnauthenticatedUser

from .bearer import extract_bearer, query_has_access_token
from .context import _CURRENT
from .endpoints import OperationalEndpoints, render_refusal
from .errors import ConfigurationError, GuardError, MissingToken
from .health import EndpointResponse
from .rules import PathRules, is_cors_preflight
from .settings import GuardSettings
from .starlette import ClientUser
from .token import AccessToken
from .verifier import TokenVerifier

__all__ = ["M2MGuardMiddleware", "PathRules", "TokenCredentials"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

logger = logging.getLogger("m2m_guard")
# Stands in for settings that failed to load from the environment, so that the middleware can
# be built and report the failure (it never verifies anything with them).
_PLACEHOLDER_SETTINGS = GuardSettings(issuer="https://configuration-error.invalid",
                                      verify_audience=False)
_SCOPE_KEY = "m2m_guard.token"
_UNAUTHENTICATED = (AuthCredentials(), UnauthenticatedUser())
_HANDLED = object()  # the request was answered (or passed on) before the app call
# `set_current_token` / `reset_current_token` without the wrapper calls (hot path).
_set_current = _CURRENT.set
_reset_current = _CURRENT.reset


# Credentials are shared per cached token; the memo keeps its tokens alive, so it stays small
# (machine clients are few, and each presents one token for its lifetime).
_AUTH_MEMO_SIZE = 256


class TokenCredentials(AuthCredentials):
    """`AuthCredentials` whose `scopes` (sorted) cannot be changed: one instance is shared by
    every request that presents the same cached token."""

    def __init__(self, scopes: frozenset[str]) -> None:
        # The base class would store a list; a tuple behind a read-only property is the same
        # to `requires()` and to `request.auth.scopes` readers, and cannot be changed.
        self._scopes = tuple(sorted(scopes))

    @property
    def scopes(self) -> tuple[str, ...]:  # type: ignore[override]
        return self._scopes


class _ReceiveTracker:
    """A websocket app's `receive`: notes whether the app consumed the connect event."""

    __slots__ = ("connect_consumed", "receive")

    def __init__(self, receive: Receive) -> None:
        self.receive = receive
        self.connect_consumed = False

    async def __call__(self) -> Message:
        message = await self.receive()
        if message.get("type") == "websocket.connect":
            self.connect_consumed = True
        return message


class _SendTracker:
    """The app's `send`: notes that the response started and hands the message on (a plain call
    returning the server's awaitable: no extra coroutine per message)."""

    __slots__ = ("send", "started")

    def __init__(self, send: Send) -> None:
        self.send = send
        self.started = False

    def __call__(self, message: Message) -> Awaitable[None]:
        self.started = True
        return self.send(message)


def _authorization_values(headers: list[tuple[bytes, bytes]]) -> list[str]:
    return [value.decode("latin-1") for name, value in headers if name == b"authorization"]


def _is_preflight(scope: Scope) -> bool:
    if scope.get("method") != "OPTIONS":
        return False
    names = {name for name, _ in scope.get("headers", ())}
    return is_cors_preflight("OPTIONS", b"origin" in names,
                             b"access-control-request-method" in names)


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
        self._configuration_error: ConfigurationError | None = None
        if verifier is None and settings is None:
            try:
                settings = GuardSettings.from_env()
            except ConfigurationError as exc:
                self._configuration_error = exc
                settings = _PLACEHOLDER_SETTINGS
        self.verifier = verifier if verifier is not None else TokenVerifier(settings)
        self.settings = self.verifier.settings
        self._owns_verifier = verifier is None
        self._paths = PathRules(tuple(self.settings.public_paths))
        # Health and RFC 9728 endpoints (None unless configured).
        self._endpoints = OperationalEndpoints.for_verifier(self.verifier)
        self._auth_memo: dict[int, tuple[AccessToken, tuple[AuthCredentials, ClientUser]]] = {}
        # The cache-hit fast path needs the verified-token cache and "Bearer" as the scheme
        # (the header check compares bytes).
        self._fast_path = self.settings.token_cache_size > 0
        self._preflight = self.settings.allow_cors_preflight
        self._has_public_paths = bool(self.settings.public_paths)
        self._cached_token = self.verifier.cached_token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._configuration_error is not None:
            await self._misconfigured(scope, receive, send, self._configuration_error)
            return
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
            if (found is not None and found[:7] == b"Bearer "
                    and not (self._has_public_paths and self._paths.is_public(scope["path"]))
                    and not (scope.get("query_string")
                             and query_has_access_token(scope["query_string"]))
                    and (self._endpoints is None or kind == "websocket"
                         or not self._endpoints.serves(scope["path"]))
                    and not (scope.get("method") == "OPTIONS" and self._preflight
                             and _is_preflight(scope))):
                access = self._cached_token(found[7:])
                hit = access is not None
        if not hit:
            outcome = await self._authenticate(scope, receive, send)
            if outcome is _HANDLED:
                return
            access = outcome  # type: ignore[assignment]
        scope[_SCOPE_KEY] = access
        scope["m2m_guard.settings"] = self.settings
        scope["m2m_guard.verifier"] = self.verifier  # for exception handlers inside the app
        if access is None:
            scope["auth"], scope["user"] = _UNAUTHENTICATED
        elif hit:  # shared per cached token (memoised on hits only: a flood of new tokens
            # would otherwise keep hundreds of principals alive for nothing)
            memo = self._auth_memo
            principal = memo.get(id(access))
            if principal is None or principal[0] is not access:
                if len(memo) >= _AUTH_MEMO_SIZE:
                    memo.clear()
                principal = memo[id(access)] = (access, self._principal(access))
            scope["auth"], scope["user"] = principal[1]
        else:
            scope["auth"], scope["user"] = self._principal(access)
        if kind == "websocket":
            await self._call_websocket(scope, receive, send, access)
            return
        marker = _set_current(access)
        tracker = _SendTracker(send)
        try:
            await self.app(scope, receive, tracker)
        except GuardError as exc:  # e.g. require_scopes: rendered while nothing was sent
            if tracker.started:
                raise
            await self._refuse(scope, receive, send, exc)
        finally:
            _reset_current(marker)

    async def _authenticate(self, scope: Scope, receive: Receive,
                            send: Send) -> AccessToken | object | None:
        """The full path: operational endpoints, public paths and preflights (answered or
        passed on here: `_HANDLED`), then the bearer token, verified; a refusal is sent here
        (`_HANDLED`). Otherwise the `AccessToken`, or None (no token, not required)."""
        settings = self.settings
        if self._endpoints is not None and scope["type"] == "http":  # operational endpoints
            answer = self._endpoints.answer(scope["path"], scope["method"])
            if answer is not None:
                await self._send_answer(send, answer, head=scope["method"] == "HEAD")
                return _HANDLED
        if self._paths.is_public(scope["path"]) or (
            settings.allow_cors_preflight and _is_preflight(scope)
        ):
            await self._pass_through(scope, receive, send)
            return _HANDLED
        try:
            token = extract_bearer(_authorization_values(scope["headers"]),
                                   scope.get("query_string", b""),
                                   max_token_bytes=settings.max_token_bytes)
            if token is not None:
                return await self.verifier.verify(token)
            if settings.required:
                raise MissingToken()
        except GuardError as exc:
            await self._refuse(scope, receive, send, exc)
            return _HANDLED
        return None

    async def _pass_through(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A public path or a preflight: the app runs with no token checked. A `GuardError` it
        raises anyway (e.g. `require_scopes` on a route under a public prefix) is answered per
        the contract while nothing was sent, never as a 500. The scope stays untouched."""
        tracker = _SendTracker(send)
        receiver = _ReceiveTracker(receive) if scope["type"] == "websocket" else None
        try:
            await self.app(scope, receiver or receive, tracker)
        except GuardError as exc:
            if tracker.started:
                raise
            await self._refuse(scope, receive, send, exc, connect_consumed=receiver is not None
                               and receiver.connect_consumed)

    async def _call_websocket(self, scope: Scope, receive: Receive, send: Send,
                              access: AccessToken | None) -> None:
        marker = _set_current(access)
        tracker = _SendTracker(send)
        receiver = _ReceiveTracker(receive)  # the app may read the connect event, then refuse
        try:
            await self.app(scope, receiver, tracker)
        except GuardError as exc:
            if tracker.started:
                raise
            await self._refuse(scope, receive, send, exc,
                               connect_consumed=receiver.connect_consumed)
        finally:
            _reset_current(marker)

    @staticmethod
    def _principal(access: AccessToken) -> tuple[AuthCredentials, ClientUser]:
        """Starlette's `request.auth` and `request.user` for `access`. Both are read-only, so
        the ones of a cached token are shared by its requests (`_auth_memo`, keyed by the
        token object's id and holding that object, so the id cannot be reused meanwhile)."""
        return TokenCredentials(access.scopes), ClientUser(access)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, exc: GuardError, *,
                      connect_consumed: bool = False) -> None:
        rendered = render_refusal(self.verifier, exc, scope.get(_SCOPE_KEY))
        headers = [(name.encode("latin-1"), value.encode("latin-1"))
                   for name, value in rendered.headers]
        headers.append((b"content-length", str(len(rendered.body)).encode("ascii")))
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": rendered.status,
                        "headers": headers})
            await send({"type": "http.response.body", "body": rendered.body})
            return
        # websocket: consume the connect event (unless the app did), then deny before accepting.
        if not connect_consumed:
            message = await receive()
            if message.get("type") != "websocket.connect":
                return
        if "websocket.http.response" in scope.get("extensions", {}):
            await send({"type": "websocket.http.response.start", "status": rendered.status,
                        "headers": headers})
            await send({"type": "websocket.http.response.body", "body": rendered.body})
        else:
            await send({"type": "websocket.close", "code": 1008,
                        "reason": exc.body_error})

    @staticmethod
    async def _send_answer(send: Send, answer: EndpointResponse, *, head: bool) -> None:
        headers = [(name.encode("latin-1"), value.encode("latin-1"))
                   for name, value in answer.headers]
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if head else answer.body})

    _reported_configuration_error = False

    async def _misconfigured(self, scope: Scope, receive: Receive, send: Send,
                             error: ConfigurationError) -> None:
        """Settings from the environment did not validate: fail the startup with the message,
        or, without a lifespan, log it once and answer 503 (see the module doc)."""
        message = f"m2m_guard cannot start: {error}"
        kind = scope["type"]
        if kind == "lifespan":
            while True:
                event = await receive()
                if event["type"] == "lifespan.startup":
                    self._reported_configuration_error = True
                    await send({"type": "lifespan.startup.failed", "message": message})
                elif event["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if not self._reported_configuration_error:
            self._reported_configuration_error = True
            logger.error("%s (every request is answered 503 until the configuration is fixed "
                         "and the server restarted)", message)
        if kind == "http":
            body = (b'{"error":"temporarily_unavailable","error_description":"The server\'s '
                    b'token verification is not configured; the server log says why."}')
            await send({"type": "http.response.start", "status": 503, "headers": [
                (b"content-type", b"application/json"), (b"cache-control", b"no-store"),
                (b"retry-after", b"30"), (b"content-length", str(len(body)).encode("ascii"))]})
            await send({"type": "http.response.body", "body": body})
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1011})
        else:
            await self.app(scope, receive, send)

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
