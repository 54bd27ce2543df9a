"""`M2MGuardMiddleware`: the guard as a pure ASGI middleware (Starlette, FastAPI, any ASGI app).

For `http` and `websocket` scopes: public paths and (when allowed) CORS preflight requests pass
through untouched; otherwise the bearer token is extracted (RFC 6750), verified, and the
`AccessToken` placed in `scope["m2m_guard.token"]`, in `current_token()`, and as Starlette's
`scope["auth"]` / `scope["user"]` so `request.auth.scopes` and `starlette.authentication.requires`
work. A refusal is answered per DESIGN §4; a refused websocket gets an HTTP denial response where
the server supports it, else a close with code 1008 before accept. A `GuardError` raised by the
app (e.g. by `require_scopes`) is rendered the same way while the response has not started.

For `lifespan`: startup warms the key sets (a failure is logged, not fatal); shutdown stops the
verifier's background work.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.authentication import AuthCredentials, UnauthenticatedUser

from .bearer import extract_bearer
from .context import reset_current_token, set_current_token
from .endpoints import OperationalEndpoints, render_refusal
from .errors import GuardError, MissingToken
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
_SCOPE_KEY = "m2m_guard.token"
_UNAUTHENTICATED = (AuthCredentials(), UnauthenticatedUser())


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
        self.verifier = verifier if verifier is not None else TokenVerifier(settings)
        self.settings = self.verifier.settings
        self._owns_verifier = verifier is None
        self._paths = PathRules(tuple(self.settings.public_paths))
        # Health and RFC 9728 endpoints (None unless configured).
        self._endpoints = OperationalEndpoints.for_verifier(self.verifier)
        self._auth_memo: dict[int, tuple[AccessToken, AuthCredentials]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http" or kind == "websocket":
            await self._guard(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _guard(self, scope: Scope, receive: Receive, send: Send) -> None:
        settings = self.settings
        if self._endpoints is not None and scope["type"] == "http":  # operational endpoints
            answer = self._endpoints.answer(scope["path"], scope["method"])
            if answer is not None:
                await self._send_answer(send, answer, head=scope["method"] == "HEAD")
                return
        if self._paths.is_public(scope["path"]) or (
            settings.allow_cors_preflight and _is_preflight(scope)
        ):
            await self.app(scope, receive, send)
            return
        access: AccessToken | None = None
        try:
            token = extract_bearer(_authorization_values(scope["headers"]),
                                   scope.get("query_string", b""),
                                   max_token_bytes=settings.max_token_bytes)
            if token is not None:
                access = await self.verifier.verify(token)
            elif settings.required:
                raise MissingToken()
        except GuardError as exc:
            await self._refuse(scope, receive, send, exc)
            return
        scope[_SCOPE_KEY] = access
        scope["m2m_guard.settings"] = settings
        scope["m2m_guard.verifier"] = self.verifier  # for exception handlers inside the app
        if access is None:
            scope["auth"], scope["user"] = _UNAUTHENTICATED
        else:
            scope["auth"] = self._credentials(access)
            scope["user"] = ClientUser(access)
        marker = set_current_token(access)
        tracker = _SendTracker(send)
        connect_consumed = False

        async def receive_tracking() -> Message:
            nonlocal connect_consumed
            message = await receive()
            connect_consumed = connect_consumed or message.get("type") == "websocket.connect"
            return message

        try:
            if scope["type"] == "http":
                await self.app(scope, receive, tracker)
            else:  # a websocket endpoint may read the connect event before refusing
                await self.app(scope, receive_tracking, tracker)
        except GuardError as exc:
            if tracker.started:
                raise
            await self._refuse(scope, receive, send, exc, connect_consumed=connect_consumed)
        finally:
            reset_current_token(marker)

    def _credentials(self, access: AccessToken) -> AuthCredentials:
        """Starlette's `request.auth` for `access`, made once per token: a cached token comes
        back as the same object, and its credentials are read-only, so they can be shared."""
        found = self._auth_memo.get(id(access))
        if found is not None and found[0] is access:  # the memo holds `access`: ids stay unique
            return found[1]
        credentials = TokenCredentials(access.scopes)
        if self.settings.token_cache_size == 0:  # no token comes back as the same object
            return credentials
        memo = self._auth_memo
        if len(memo) >= _AUTH_MEMO_SIZE:
            memo.clear()
        memo[id(access)] = (access, credentials)
        return credentials

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

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def receive_warming() -> Message:
            message = await receive()
            if message.get("type") == "lifespan.startup":
                try:
                    await self.verifier.warm_up()
                except GuardError as exc:
                    logger.warning("m2m_guard could not warm up key sets at startup "
                                   "(requests will retry): %s", exc.description)
                except Exception:
                    # Startup must not fail because of the guard; requests will retry.
                    logger.exception("m2m_guard unexpected error warming up key sets")
            return message

        async def send_closing(message: Message) -> None:
            if message.get("type") in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                if self._owns_verifier:
                    await self.verifier.aclose()
            await send(message)

        await self.app(scope, receive_warming, send_closing)
