"""FastAPI: the guard as a dependency that documents itself in the OpenAPI document.

Connect an app once with ``M2MGuard(app, settings)``, then demand scopes per path operation in
either (or both) of two ways:

- dependencies: ``token: Annotated[AccessToken, RequireScopes("deploy:applications")]``, the same
  as ``Security(m2m_token, scopes=["deploy:applications"])``, or
  ``dependencies=[RequireScopes("admin:platform")]``;
- `M2MGuardMiddleware` guarding every path (``app.add_middleware(M2MGuardMiddleware, ...)``) with
  `require_scopes` under the route decorator (sync and async path operations; the signature is
  kept, so FastAPI's path, query and body parameters still work).

`M2MGuard(app)` installs what both need: an exception handler so every refusal is answered per
DESIGN §4 by `errors.render_error` (never FastAPI's ``{"detail": ...}``), one `TokenVerifier`
per app for the dependencies (the middleware's own when the app has one, else created at startup
or on first use, warmed up at startup and closed at shutdown by the app's lifespan), and the
OpenAPI security scheme: an OAuth 2.0 client-credentials flow named `SCHEME_NAME`, whose token
URL comes from `token_url` (``M2M_GUARD_TOKEN_URL``) or the issuer's discovery document and
whose scopes are every scope a route demands, with each operation's security requirement.

When the middleware has verified the request, the dependency reuses its token
(``scope["m2m_guard.token"]``) instead of verifying it again.

Operability is the same with or without the middleware: every refusal is reported once (log
line, event) and its challenge carries ``resource_metadata`` when configured; the health
endpoint (`health_path`) and the RFC 9728 document (`resource`) are answered before any route,
without a token, by the middleware when the app has one, else by a small ASGI middleware
`M2MGuard` adds for dependency-only apps.
"""

from __future__ import annotations

import copy
import functools
import itertools
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated, Any

import fastapi.routing
from fastapi import Depends, FastAPI, Security
from fastapi.encoders import jsonable_encoder
from fastapi.openapi.models import OAuthFlowClientCredentials, OAuthFlows
from fastapi.routing import APIRoute
from fastapi.security import OAuth2, SecurityScopes
from starlette.authentication import AuthCredentials
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.websockets import WebSocket

from .asgi import M2MGuardMiddleware, PathRules, Receive, Scope, Send
from .bearer import extract_bearer
from .context import scope_requirements, set_current_token
from .endpoints import OperationalEndpoints, render_refusal
from .errors import (
    GuardError,
    InsufficientScope,
    InvalidRequest,
    InvalidToken,
    IssuerUnavailable,
    MissingToken,
)
from .logs import report_refusal
from .scopes import ScopeRequirement, validate_scopes
from .settings import GuardSettings
from .starlette import ClientUser, rendered_response
from .token import AccessToken
from .verifier import TokenVerifier

__all__ = ["SCHEME_NAME", "ClientCredentials", "M2MGuard", "M2MToken", "RequireScopes",
           "m2m_token"]

logger = logging.getLogger("m2m_guard")

SCHEME_NAME = "OAuth2ClientCredentials"
"""The name of the security scheme in ``components.securitySchemes`` (and in `/docs`)."""

_SCOPE_KEY = "m2m_guard.token"
_SETTINGS_KEY = "m2m_guard.settings"
_VERIFIER_KEY = "m2m_guard.verifier"
_STATE_KEY = "m2m_guard"
# What the scheme model says before an app's guard fills in the real URL (see M2MGuard.openapi).
_UNSET_TOKEN_URL = "/oauth/token"  # noqa: S105 - a path, not a secret


class ClientCredentials(OAuth2):
    """The OAuth 2.0 client-credentials security scheme, as FastAPI declares schemes.

    It only declares: `m2m_token` does the extraction and verification (RFC 6750 framing, one
    `Authorization` header, no token in the query), so ``__call__`` returns nothing and never
    raises FastAPI's own 401.
    """

    def __init__(self) -> None:
        super().__init__(
            flows=OAuthFlows(clientCredentials=OAuthFlowClientCredentials(
                tokenUrl=_UNSET_TOKEN_URL, scopes={})),
            scheme_name=SCHEME_NAME,
            description=("OAuth 2.0 client credentials: send the access token as "
                         "`Authorization: Bearer <token>`."),
            auto_error=False,
        )

    async def __call__(self, request: HTTPConnection) -> None:
        return None


client_credentials = ClientCredentials()


@functools.lru_cache(maxsize=512)
def _requirement(scopes: tuple[str, ...]) -> ScopeRequirement:
    # Security(..., scopes=[...]) lists are known only per request: validate each list once.
    return ScopeRequirement(all_of=validate_scopes(scopes))


async def m2m_token(
    request: HTTPConnection,
    security_scopes: SecurityScopes,
    _declared: Annotated[None, Depends(client_credentials)],
) -> AccessToken:
    """The dependency: the verified `AccessToken` holding every scope of `security_scopes`.

    Use it as ``Security(m2m_token, scopes=[...])`` (or through `RequireScopes`), on HTTP and
    websocket routes. Raises `MissingToken`, `InvalidRequest`, `InvalidToken`,
    `IssuerUnavailable` or `InsufficientScope`, answered per DESIGN §4 by the handler `M2MGuard`
    installs (or by the middleware). A `RuntimeError` says the app is not connected: no
    `M2MGuard(app)` and no middleware that verified this request.
    """
    token = await _authenticate(request)
    if security_scopes.scopes:
        _requirement(tuple(security_scopes.scopes)).check(token)
    return token


M2MToken = Annotated[AccessToken, Security(m2m_token)]
"""A path-operation parameter type: any verified token, ``token: M2MToken``."""


def RequireScopes(*scopes: str) -> Any:  # noqa: N802 - reads as a marker, like Depends
    """``Security(m2m_token, scopes=[...])`` for tokens holding all `scopes`, checked now.

    Use as ``token: Annotated[AccessToken, RequireScopes("a")]`` or
    ``dependencies=[RequireScopes("a")]``. Like `require_scopes`, ``"a b"`` is a `ValueError`
    here rather than a silent two-scope requirement.
    """
    return Security(m2m_token, scopes=list(validate_scopes(scopes)))


async def _authenticate(request: HTTPConnection) -> AccessToken:
    scope = request.scope
    if _SCOPE_KEY in scope:  # the middleware (or an earlier dependency) has verified it
        token = scope[_SCOPE_KEY]
        if isinstance(token, AccessToken):
            return token
        raise MissingToken()  # the middleware let a request without a token through
    guard = getattr(request.app.state, _STATE_KEY, None)
    if not isinstance(guard, M2MGuard):
        raise RuntimeError(
            "m2m_guard: this path operation needs a verified token but the app is not connected: "
            "call M2MGuard(app, settings) once (dependencies work without the middleware), or "
            "let M2MGuardMiddleware guard this path (it is public in its settings)."
        )
    return await guard.authenticate(request)


class M2MGuard:
    """Connects one FastAPI app: exception handler, per-app verifier (lifespan), OpenAPI.

    ``M2MGuard(app, settings)``, or ``guard = M2MGuard(settings=...)`` then
    ``guard.init_app(app)`` in an app factory. `settings` default to those of the app's
    `M2MGuardMiddleware` when it has one, else to `GuardSettings.from_env()`. The verifier is
    the middleware's when its settings are the same, else the guard's own, made at startup (and
    warmed up) or on first use, closed at shutdown. `verifier` shares an existing
    `TokenVerifier` instead (its owner warms it up and closes it). `token_url` overrides
    ``settings.token_url`` for the OpenAPI document; `scopes` maps scope names to the
    descriptions `/docs` shows.
    """

    def __init__(self, app: FastAPI | None = None, settings: GuardSettings | None = None, *,
                 verifier: TokenVerifier | None = None, token_url: str | None = None,
                 scopes: Mapping[str, str] | None = None) -> None:
        if verifier is not None and settings is not None and verifier.settings is not settings:
            raise ValueError("give either settings or a verifier built from them, not both")
        self._settings = verifier.settings if verifier is not None else settings
        self._verifier = verifier
        self._owns_verifier = False
        self._token_url = token_url
        self.scope_descriptions = dict(scopes or {})
        self.app: FastAPI | None = None
        self._warned_token_url = False
        # (verifier, its endpoints) for dependency-only apps; see `_operational_endpoints`.
        self._endpoints: tuple[TokenVerifier, OperationalEndpoints | None] | None = None
        self._middleware_serves: bool | None = None
        if app is not None:
            self.init_app(app)

    # -- wiring ----------------------------------------------------------------------------
    def init_app(self, app: FastAPI) -> None:
        """Install the exception handler, the lifespan hooks and the OpenAPI hook on `app`."""
        if self.app is not None and self.app is not app:
            raise RuntimeError("an M2MGuard connects one app; create one per app")
        if getattr(app.state, _STATE_KEY, None) is not None:
            raise RuntimeError("this app already has an M2MGuard")
        self.app = app
        setattr(app.state, _STATE_KEY, self)
        app.add_exception_handler(GuardError, self._handle_error)  # type: ignore[arg-type]
        app.add_middleware(_OperationalEndpointsMiddleware, guard=self)
        inner = app.router.lifespan_context
        app.router.lifespan_context = self._lifespan(inner)
        base_openapi = app.openapi

        def openapi() -> dict[str, Any]:
            # FastAPI caches its schema; complete a copy, since the token URL can change
            # (known once discovery has run).
            return self.openapi(copy.deepcopy(base_openapi()))

        app.openapi = openapi  # type: ignore[method-assign]

    @property
    def settings(self) -> GuardSettings:
        """The settings in force: given, else the middleware's, else the environment's."""
        if self._settings is None:
            self._settings = self._middleware_settings() or GuardSettings.from_env()
        return self._settings

    @property
    def verifier(self) -> TokenVerifier:
        """The app's one verifier: the middleware's when it has one, else this guard's own."""
        if self._verifier is None:
            shared = self._middleware_verifier()
            if shared is not None and (self._settings is None or shared.settings == self._settings):
                self._verifier = shared
            else:
                self._verifier = TokenVerifier(self.settings)
                self._owns_verifier = True
        return self._verifier

    def _lifespan(
        self, inner: Callable[[Any], AbstractAsyncContextManager[Any]]
    ) -> Callable[[Any], AbstractAsyncContextManager[Any]]:
        @asynccontextmanager
        async def lifespan(app: Any) -> AsyncIterator[Any]:
            verifier = self.verifier
            if self._owns_verifier:  # the middleware warms its own verifier up
                await verifier.warm_up_at_startup()
            try:
                async with inner(app) as state:
                    yield state
            finally:
                if self._owns_verifier and self._verifier is not None:
                    closing, self._verifier = self._verifier, None
                    self._owns_verifier = False
                    await closing.aclose()

        return lifespan

    def _middleware_entry(self) -> Any:
        app = self.app
        for entry in (app.user_middleware if app is not None else ()):
            if getattr(entry, "cls", None) is M2MGuardMiddleware:
                return entry
        return None

    def _middleware_settings(self) -> GuardSettings | None:
        entry = self._middleware_entry()
        if entry is None:
            return None
        kwargs = getattr(entry, "kwargs", None) or getattr(entry, "options", None) or {}
        # (Starlette before 0.35 kept a middleware's keyword arguments in `options`)
        settings = kwargs.get("settings")
        if settings is None and kwargs.get("verifier") is not None:
            settings = kwargs["verifier"].settings
        return settings if isinstance(settings, GuardSettings) else None

    def _middleware_verifier(self) -> TokenVerifier | None:
        # The middleware instance exists once Starlette has built the stack (first call, which
        # is the lifespan's startup under a server): follow the chain of `.app` attributes.
        node: Any = getattr(self.app, "middleware_stack", None)
        for _ in range(64):
            if node is None:
                return None
            if isinstance(node, M2MGuardMiddleware):
                return node.verifier
            node = getattr(node, "app", None)
        return None

    def _operational_endpoints(self) -> OperationalEndpoints | None:
        """The endpoints to answer for a dependency-only app: None when none is configured or
        when the app has `M2MGuardMiddleware` (which answers them itself)."""
        if self._middleware_serves is None:  # the middleware list is fixed once the app runs
            settings = self._middleware_settings() or self.settings
            self._middleware_serves = self._middleware_entry() is not None or (
                settings.health_path is None and settings.resource is None)
        if self._middleware_serves:
            return None
        verifier = self.verifier
        cached = self._endpoints
        if cached is None or cached[0] is not verifier:  # a new verifier after a restart
            cached = self._endpoints = (verifier, OperationalEndpoints.for_verifier(verifier))
        return cached[1]

    def _verifier_of(self, scope: Any) -> TokenVerifier:
        """The verifier that decided this request: the middleware's, else the app's."""
        verifier = scope.get(_VERIFIER_KEY)
        return verifier if isinstance(verifier, TokenVerifier) else self.verifier

    async def _handle_error(self, connection: HTTPConnection, exc: Exception) -> Response | None:
        if not isinstance(exc, GuardError):  # registered for GuardError only
            raise exc
        scope = connection.scope
        verifier = self._verifier_of(scope)
        access = scope.get(_SCOPE_KEY)
        access = access if isinstance(access, AccessToken) else None
        if isinstance(connection, WebSocket):
            # Starlette sends nothing for a websocket handler: deny before accepting, as the
            # middleware does where the server has no denial-response extension.
            report_refusal(verifier, exc, access)
            await connection.close(code=1008, reason=exc.body_error)
            return None
        return rendered_response(render_refusal(verifier, exc, access))

    # -- per request -----------------------------------------------------------------------
    async def authenticate(self, request: HTTPConnection) -> AccessToken:
        """Extract and verify the request's bearer token with the app's verifier.

        The token is then where the middleware would have put it: ``scope["m2m_guard.token"]``,
        `current_token()`, ``request.user`` (a `ClientUser`) and ``request.auth.scopes``.
        """
        settings = self.settings
        scope = request.scope
        scope[_SETTINGS_KEY] = settings
        scope[_VERIFIER_KEY] = self.verifier  # the exception handler reports and renders with it
        raw = extract_bearer(request.headers.getlist("authorization"),
                             scope.get("query_string", b""),
                             max_token_bytes=settings.max_token_bytes)
        if raw is None:
            raise MissingToken()
        token = await self.verifier.verify(raw)
        scope[_SCOPE_KEY] = token
        scope["auth"] = AuthCredentials(sorted(token.scopes))
        scope["user"] = ClientUser(token)
        # The request's own task (and the threads FastAPI runs sync code in, which copy its
        # context) sees the token; the task ends with the request, so nothing leaks to another.
        set_current_token(token)
        return token

    # -- OpenAPI ---------------------------------------------------------------------------
    @property
    def token_url(self) -> str:
        """The token endpoint the OpenAPI document announces (see the class doc)."""
        url = self._token_url or self.settings.token_url
        if url is None:
            verifier = self._verifier or self._middleware_verifier()
            url = verifier.token_endpoint() if verifier is not None else None
        if url is None:
            url = self.settings.issuers[0].issuer.rstrip("/") + _UNSET_TOKEN_URL
            if not self._warned_token_url:
                self._warned_token_url = True
                logger.warning(
                    "m2m_guard does not know the token endpoint yet (discovery has not run or "
                    "named none); the OpenAPI document shows %s. Set M2M_GUARD_TOKEN_URL "
                    "(token_url) to the issuer's token endpoint.", url)
        return url

    def openapi(self, schema: dict[str, Any]) -> dict[str, Any]:
        """Complete FastAPI's `schema` in place: security requirements of the routes guarded by
        the middleware or `require_scopes`, and the scheme's token URL and scopes."""
        paths = schema.get("paths", {})
        guarding = self._middleware_settings() if self._middleware_entry() is not None else None
        public = PathRules(tuple((guarding or self.settings).public_paths)) \
            if self._middleware_entry() is not None else None
        for route in _api_routes(self.app.routes if self.app is not None else ()):
            if not route.include_in_schema or route.path_format is None:
                continue
            decorated = _alternatives(scope_requirements(route.endpoint))
            guarded = public is not None and not public.is_public(route.path_format)
            for method in route.methods or ():
                operation = paths.get(route.path_format, {}).get(method.lower())
                if operation is not None:
                    _add_security(operation, decorated, guarded)
        for item in paths.values():
            for operation in item.values():
                if isinstance(operation, dict) and any(
                        SCHEME_NAME in r for r in operation.get("security", ())):
                    _add_refusals(operation)
                    schema.setdefault("components", {}).setdefault("schemas", {}).setdefault(
                        ERROR_SCHEMA_NAME, copy.deepcopy(_ERROR_SCHEMA))
        used = sorted({scope for item in paths.values() for operation in item.values()
                       if isinstance(operation, dict)
                       for requirement in operation.get("security", ())
                       for scope in requirement.get(SCHEME_NAME, ())})
        if any(SCHEME_NAME in requirement for item in paths.values()
               for operation in item.values() if isinstance(operation, dict)
               for requirement in operation.get("security", ())):
            schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
            scheme = schemes.setdefault(SCHEME_NAME, jsonable_encoder(
                client_credentials.model, by_alias=True, exclude_none=True))
            flow = scheme.setdefault("flows", {}).setdefault("clientCredentials", {})
            flow["tokenUrl"] = self.token_url
            flow["scopes"] = {name: self.scope_descriptions.get(name, "") for name in used}
        return schema


class _OperationalEndpointsMiddleware:
    """Added by `M2MGuard`: answers the health endpoint and the RFC 9728 document before any
    route, as `M2MGuardMiddleware` does, in apps that use the dependencies only."""

    def __init__(self, app: Any, guard: M2MGuard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            endpoints = self.guard._operational_endpoints()
            if endpoints is not None:
                answer = endpoints.answer(scope["path"], scope["method"])
                if answer is not None:
                    await M2MGuardMiddleware._send_answer(send, answer,
                                                          head=scope["method"] == "HEAD")
                    return
        await self.app(scope, receive, send)


def _api_routes(routes: Iterable[Any]) -> Iterator[Any]:
    """The app's path operations with their full paths. FastAPI 0.12x lists them flat in
    `app.routes`; newer versions keep included routers as such and provide
    `iter_route_contexts` to walk them (each context proxies its `APIRoute`)."""
    walk = getattr(fastapi.routing, "iter_route_contexts", None)
    for route in walk(list(routes)) if walk is not None else routes:
        if isinstance(getattr(route, "original_route", route), APIRoute):
            yield route


ERROR_SCHEMA_NAME = "M2MGuardError"
_ERROR_SCHEMA: dict[str, Any] = {
    "title": ERROR_SCHEMA_NAME,
    "type": "object",
    "description": "A refusal by the token guard (RFC 6750 error codes, and missing_token).",
    "required": ["error", "error_description"],
    "properties": {
        "error": {"type": "string", "enum": [
            kind.body_error for kind in (MissingToken, InvalidRequest, InvalidToken,
                                         InsufficientScope, IssuerUnavailable)]},
        "error_description": {"type": "string"},
        "scope": {"type": "string", "description": "The scopes the operation needs "
                                                   "(insufficient_scope only)."},
    },
}
_REFUSALS = {
    "401": ("No valid access token: missing (error missing_token), or malformed, expired or "
            "not for this API (error invalid_token)."),
    "403": "The access token lacks a scope the operation needs (error insufficient_scope).",
}


def _add_refusals(operation: dict[str, Any]) -> None:
    """Document the guard's 401 and 403 on a guarded `operation` (kept if already there)."""
    responses = operation.setdefault("responses", {})
    for status, description in _REFUSALS.items():
        responses.setdefault(status, {
            "description": description,
            "headers": {"WWW-Authenticate": {
                "description": "The RFC 6750 challenge: Bearer realm, error, error_description "
                               "(and scope for insufficient_scope).",
                "schema": {"type": "string"}}},
            "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{ERROR_SCHEMA_NAME}"}}},
        })


def _alternatives(requirements: Iterable[ScopeRequirement]) -> list[list[str]] | None:
    """Stacked decorator requirements as OpenAPI alternatives (each a list of scopes, all
    needed); None when there are none."""
    requirements = tuple(requirements)
    if not requirements:
        return None
    all_of = [scope for r in requirements for scope in r.all_of]
    choices = [r.any_of for r in requirements if r.any_of]
    return [list(dict.fromkeys([*all_of, *picked])) for picked in itertools.product(*choices)]


def _add_security(operation: dict[str, Any], decorated: list[list[str]] | None,
                  guarded: bool) -> None:
    security: list[dict[str, list[str]]] = operation.get("security", [])
    ours = [r for r in security if SCHEME_NAME in r]
    if decorated is None:
        if guarded and not ours:
            operation["security"] = [*security, {SCHEME_NAME: []}]
        return
    if not ours:  # only the decorator: its alternatives
        merged = [{SCHEME_NAME: scopes} for scopes in decorated]
    else:  # a dependency too: each of its requirements with each decorator alternative
        merged = [{**r, SCHEME_NAME: list(dict.fromkeys([*r[SCHEME_NAME], *scopes]))}
                  for r in ours for scopes in decorated]
    rest = [r for r in security if SCHEME_NAME not in r]
    combined = [*rest, *merged]
    operation["security"] = [r for i, r in enumerate(combined) if r not in combined[:i]]
