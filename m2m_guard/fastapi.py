"""FastAPI: the guard as a dependency that documents itself in the OpenAPI document.

Connect an app once with ``M2MGuard(app, settings)``, then demand scopes per path operation in
either (or both) of two ways:

- dependencies: ``token: Annotated[AccessToken, RequireScopes("deploy:applications")]``, the same
  as ``Security(m2m_token, scopes=["deploy:applications"])``, or
  ``dependencies=[RequireScopes("admin:platform")]``;
- `M2MGuardMiddleware` guarding every path (``app.add_middleware(M2MGuardMiddleware, ...)``) with
  `require_scopes` under the route decorator (sync and async path operations; the signature is
  kept, so FastAPI's path, query and body parameters still work).

`require_scopes`, `require_any_scope`, the other rules (`require_claims`, `require_clients`,
`require`, `all_of`, `any_of`) and `current_token` are re-exported here (the same objects as
`m2m_guard.require_scopes` and friends), so a FastAPI app imports everything from one module.
Any rule is also a dependency: ``dependencies=[RequireRule(require_claims(...))]`` or
``token: Annotated[AccessToken, RequireRule(rule)]``.

`M2MGuard(app)` installs what both need: an exception handler so every refusal is answered per
the contract by `errors.render_error` (never FastAPI's ``{"detail": ...}``), one `TokenVerifier`
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
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Security
from fastapi.security import SecurityScopes
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.websockets import WebSocket

from ._adapters.fastapi_openapi import (
    SCHEME_NAME,
    ClientCredentials,
    announced_token_url,
    client_credentials,
    complete_schema,
    declared_middleware,
    declared_settings,
)
from ._core.asgi_io import EndpointsMiddleware
from ._core.context import (
    Rule,
    all_of,
    any_of,
    current_token,
    require,
    require_any_scope,
    require_claims,
    require_clients,
    require_scopes,
    set_current_token,
)
from ._core.endpoints import OperationalEndpoints
from ._core.gate import Gate
from ._core.request import AsgiRequest
from ._core.requirements import Requirement
from ._core.rules import PathRules
from ._core.scopes import ScopeRequirement, validate_scopes
from ._core.storage import SETTINGS_KEY, TOKEN_KEY, VERIFIER_KEY
from .asgi import M2MGuardMiddleware
from .errors import GuardError, MissingToken
from .settings import GuardSettings
from .starlette import principal, rendered_response
from .token import AccessToken
from .verifier import TokenVerifier

__all__ = ["SCHEME_NAME", "ClientCredentials", "M2MGuard", "M2MToken", "RequireRule",
           "RequireScopes", "RuleDependency", "all_of", "any_of", "current_token", "m2m_token",
           "require", "require_any_scope", "require_claims", "require_clients",
           "require_scopes"]

_STATE_KEY = "m2m_guard"  # app.state.m2m_guard: the app's guard, and the middleware's link


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
    `IssuerUnavailable` or `InsufficientScope`, answered per the contract by the handler `M2MGuard`
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


class RuleDependency:
    """The dependency `RequireRule` makes: the verified token (`m2m_token`), then the rule.

    `requirement` is the rule's; the OpenAPI document reads it (`x-m2m-guard-rules`)."""

    def __init__(self, requirement: Requirement) -> None:
        self.requirement = requirement

    async def __call__(self, token: Annotated[AccessToken, Security(m2m_token)]) -> AccessToken:
        self.requirement.check(token)
        return token

    def __repr__(self) -> str:
        return f"RequireRule({self.requirement.name})"


def RequireRule(rule: Rule | Requirement) -> Any:  # noqa: N802 - reads as a marker, like Depends
    """Any rule (`require_claims`, `require_clients`, `require`, `all_of`, `any_of`, the scope
    rules) as a dependency: ``dependencies=[RequireRule(rule)]`` or
    ``token: Annotated[AccessToken, RequireRule(rule)]``. The answers are the decorator's;
    the operation's OpenAPI entry lists the rule (`x-m2m-guard-rules`)."""
    requirement = rule.requirement if isinstance(rule, Rule) else rule
    if not isinstance(requirement, Requirement):
        raise ValueError(f"RequireRule() takes a rule (require_claims, require_clients, require, "
                         f"all_of, any_of, require_scopes), got {rule!r}")
    return Depends(RuleDependency(requirement))


async def _authenticate(request: HTTPConnection) -> AccessToken:
    scope = request.scope
    if TOKEN_KEY in scope:  # the middleware (or an earlier dependency) has verified it
        token = scope[TOKEN_KEY]
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

    The link to the middleware is explicit: the guard is ``app.state.m2m_guard``, and the
    middleware, on its first call (the lifespan startup, or the first request), hands itself
    to `attach_middleware`.
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
        self._middleware: M2MGuardMiddleware | None = None
        self._warned: set[str] = set()  # the unknown token endpoint is logged once
        self._gate: Gate | None = None  # of the guard's verifier (dependencies, endpoints)
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
        app.add_middleware(EndpointsMiddleware, endpoints=self.operational_endpoints)
        app.router.lifespan_context = self._lifespan(app.router.lifespan_context)
        base_openapi = app.openapi

        def openapi() -> dict[str, Any]:
            # FastAPI caches its schema; complete a copy, since the token URL can change
            # (known once discovery has run).
            return self.openapi(copy.deepcopy(base_openapi()))

        app.openapi = openapi  # type: ignore[method-assign]

    def attach_middleware(self, middleware: M2MGuardMiddleware) -> None:
        """Called by the app's `M2MGuardMiddleware` on its first call: its verifier is the
        app's when the settings agree."""
        self._middleware = middleware

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
            shared = self._middleware.verifier if self._middleware is not None else None
            if shared is not None and (self._settings is None or shared.settings == self._settings):
                self._verifier = shared
            else:
                self._verifier = TokenVerifier(self.settings)
                self._owns_verifier = True
        return self._verifier

    @property
    def gate(self) -> Gate:
        """The gate of `verifier` (a new one after a restart made a new verifier)."""
        verifier = self.verifier
        if self._gate is None or self._gate.verifier is not verifier:
            self._gate = Gate(verifier)
        return self._gate

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
        return declared_middleware(self.app, M2MGuardMiddleware)

    def _middleware_settings(self) -> GuardSettings | None:
        if self._middleware is not None:
            return self._middleware.settings
        return declared_settings(self._middleware_entry())

    def operational_endpoints(self) -> OperationalEndpoints | None:
        """The endpoints to answer for a dependency-only app: None when none is configured or
        when the app has `M2MGuardMiddleware` (which answers them itself)."""
        if self._middleware_serves is None:  # the middleware list is fixed once the app runs
            settings = self._middleware_settings() or self.settings
            self._middleware_serves = self._middleware_entry() is not None or (
                settings.health_path is None and settings.resource is None)
        return None if self._middleware_serves else self.gate.endpoints

    def _verifier_of(self, scope: Any) -> TokenVerifier:
        """The verifier that decided this request: the middleware's, else the app's."""
        verifier = scope.get(VERIFIER_KEY)
        return verifier if isinstance(verifier, TokenVerifier) else self.verifier

    async def _handle_error(self, connection: HTTPConnection, exc: Exception) -> Response | None:
        if not isinstance(exc, GuardError):  # registered for GuardError only
            raise exc
        scope = connection.scope
        verifier = self._verifier_of(scope)
        access = scope.get(TOKEN_KEY)
        access = access if isinstance(access, AccessToken) else None
        if isinstance(connection, WebSocket):
            # Starlette sends nothing for a websocket handler: deny before accepting, as the
            # middleware does where the server has no denial-response extension.
            verifier.report_refusal(exc, access)
            await connection.close(code=1008, reason=exc.body_error)
            return None
        gate = self.gate if verifier is self.verifier else Gate(verifier)
        return rendered_response(gate.refuse(exc, access))

    # -- per request -----------------------------------------------------------------------
    async def authenticate(self, request: HTTPConnection) -> AccessToken:
        """Extract and verify the request's bearer token with the app's verifier.

        The token is then where the middleware would have put it: ``scope["m2m_guard.token"]``,
        `current_token()`, ``request.user`` (a `ClientUser`) and ``request.auth.scopes``.
        """
        gate = self.gate
        scope = request.scope
        scope[SETTINGS_KEY] = gate.settings
        scope[VERIFIER_KEY] = gate.verifier  # the exception handler reports and renders with it
        token = await gate.authenticate(AsgiRequest(scope), required=True)
        assert token is not None  # required: MissingToken otherwise
        scope[TOKEN_KEY] = token
        scope["auth"], scope["user"] = principal(token)
        # The request's own task (and the threads FastAPI runs sync code in, which copy its
        # context) sees the token; the task ends with the request, so nothing leaks to another.
        set_current_token(token)
        return token

    # -- OpenAPI ---------------------------------------------------------------------------
    @property
    def token_url(self) -> str:
        """The token endpoint the OpenAPI document announces (see the class doc)."""
        verifier = self._verifier or (
            self._middleware.verifier if self._middleware is not None else None)
        return announced_token_url(self._token_url or self.settings.token_url, self.settings,
                                   verifier, self._warned)

    def openapi(self, schema: dict[str, Any]) -> dict[str, Any]:
        """Complete FastAPI's `schema` in place: security requirements of the routes guarded by
        the middleware or `require_scopes`, and the scheme's token URL and scopes."""
        public = None
        if self._middleware_entry() is not None:
            public = PathRules(tuple((self._middleware_settings() or self.settings).public_paths))
        return complete_schema(schema, self.app.routes if self.app is not None else (), public,
                               lambda: self.token_url, self.scope_descriptions)
