"""MCP servers: m2m_guard as the token verifier of the official `mcp` SDK (``pip install
m2m-guard[mcp]``).

The Model Context Protocol's authorization profile makes a remote MCP server an OAuth 2.0
resource server: agents call it with bearer tokens (client credentials for machine agents), the
server's URL is its resource identifier, RFC 9728 metadata tells a client where to get a token,
and every 401 carries ``resource_metadata`` in its ``WWW-Authenticate`` challenge.

- `McpTokenVerifier` implements the SDK's `TokenVerifier` protocol
  (``async verify_token(token) -> AccessToken | None``) on m2m_guard's `TokenVerifier`: the same
  key-set cache, verified-token cache and claim rules as every adapter. A verified token becomes
  the SDK's `AccessToken` (`scopes`, `client_id`, `expires_at`, `resource`, `subject`, `claims`);
  any refusal is None (the SDK answers 401), reported once by the verifier like any refusal.
- `McpTokenVerifier.auth_settings(...)` gives the SDK's `AuthSettings` for these settings
  (`resource_server_url` = `GuardSettings.resource`, the server's URL; `issuer_url` = the
  issuer), so ``MCPServer(token_verifier=..., auth=...)`` serves the RFC 9728 document and sends
  the challenges the MCP specification requires.
- `ToolScopes` adds scopes per tool: a ``tools/call`` for a tool whose scopes the verified token
  lacks is answered 403 ``insufficient_scope`` with the scopes in the challenge (MCP's
  step-up signal), rendered by the guard's one renderer (`endpoints.render_refusal`).
- `protected_resource_metadata` and `metadata_url` are the guard's RFC 9728 document and its URL
  (`m2m_guard.resource_metadata`), for servers that publish it themselves.

See docs/mcp.md for a runnable server and what each refusal means.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import MappingProxyType
from typing import Any, Protocol, TypeVar

from mcp.server.auth.provider import AccessToken as McpAccessToken
from mcp.server.auth.settings import AuthSettings

from ._core.asgi_io import ASGIApp, Message, Receive, Scope, Send, send_refusal
from ._core.bearer import extract_bearer
from ._core.encoding import loads_json
from ._core.resource_metadata import challenge_url, resource_metadata
from ._core.scopes import validate_scopes
from .endpoints import render_refusal
from .errors import ConfigurationError, GuardError, InsufficientScope, InvalidRequest, InvalidToken
from .settings import GuardSettings
from .token import AccessToken
from .verifier import TokenVerifier

__all__ = [
    "McpTokenVerifier",
    "ToolScopes",
    "metadata_url",
    "protected_resource_metadata",
    "to_mcp_access_token",
    "verifier_lifespan",
]

# The largest JSON-RPC body `ToolScopes` reads by default to find the tools a request calls: the
# SDK's own default request-body limit.
MAX_BODY_BYTES = 4 * 1024 * 1024


def _require_resource(settings: GuardSettings) -> str:
    """The MCP server's URL (`GuardSettings.resource`), or a `ConfigurationError` saying why it
    is needed; audience checking must be on (MCP: a server accepts only tokens issued for it)."""
    if settings.resource is None:
        raise ConfigurationError(
            "M2M_GUARD_RESOURCE is not set: an MCP server is an OAuth resource whose identifier "
            "is its URL (e.g. https://mcp.example.com/mcp); set GuardSettings(resource=...) or "
            "M2M_GUARD_RESOURCE so the RFC 9728 document and the challenges can name it.")
    if not settings.verify_audience:
        raise ConfigurationError(
            "M2M_GUARD_VERIFY_AUDIENCE is false: the MCP authorization specification requires a "
            "server to refuse tokens issued for another resource; set M2M_GUARD_AUDIENCE to the "
            "audience your issuer puts in tokens for this server and turn audience checking on.")
    return settings.resource


def _thaw(value: Any) -> Any:
    """A verified claim as plain JSON data (the SDK's `claims` is a dict of JSON values).

    `AccessToken.claims` holds exactly read-only mappings and tuples for JSON's objects and
    arrays; exact type tests, as this runs per request."""
    kind = type(value)
    if kind is MappingProxyType:
        return {name: _thaw(item) for name, item in value.items()}
    if kind is tuple:
        return [_thaw(item) for item in value]
    return value


_Token = TypeVar("_Token", bound=McpAccessToken)


def to_mcp_access_token(token: str, access: AccessToken, settings: GuardSettings,
                        cls: type[_Token] = McpAccessToken) -> _Token:  # type: ignore[assignment]
    """The SDK's `AccessToken` (or its subclass `cls`, e.g. FastMCP's) for a token m2m_guard
    verified.

    `scopes` sorted; `client_id` as `AccessToken.client_id` reads it; `expires_at` the `exp`
    claim; `resource` the server's URL (`settings.resource`) when the token's audience names it,
    else the configured audience the token carries (the SDK compares it with
    `resource_server_url` only under ``validate_token_resource``); `subject` the `sub` claim;
    `claims` every verified claim. `token` is the raw string, as the SDK requires: never log it.
    """
    audience = access.audience
    resource: str | None = None
    if settings.resource is not None and settings.resource in audience:
        resource = settings.resource
    else:
        resource = next((aud for aud in audience if aud in settings.audiences), None)
    claims = _thaw(access.claims)
    # Built without validation: every value already has its field's type (this runs per request).
    return cls.model_construct(
        token=token,
        client_id=access.client_id or "",
        scopes=sorted(access.scopes),
        expires_at=int(claims["exp"]),  # a verified NumericDate
        resource=resource,
        subject=access.subject,
        claims=claims,
    )


class McpTokenVerifier:
    """The `mcp` SDK's `TokenVerifier` protocol on m2m_guard's `TokenVerifier`.

    ``McpTokenVerifier(settings)`` builds its own `TokenVerifier`; ``McpTokenVerifier(verifier=
    ...)`` shares one (the same caches as the app's other adapters). `settings` must name the
    server's URL in `resource` (``M2M_GUARD_RESOURCE``) and check audiences (the default).

    `verify_token` never raises for a bad token: every refusal (missing, malformed, expired,
    wrong audience or issuer, bad signature, a token without any client identifier, and the
    issuer's keys being unavailable, which the SDK's protocol cannot tell apart) is None, and
    the SDK answers 401 ``invalid_token``. The refusal is logged and sent as an event once, by
    the verifier, as for every adapter. Checks bound to the HTTP request (DPoP, mTLS) cannot run
    here: the SDK hands the verifier only the token.
    """

    def __init__(self, settings: GuardSettings | None = None, *,
                 verifier: TokenVerifier | None = None) -> None:
        if verifier is not None and settings is not None and verifier.settings is not settings:
            raise ValueError("give either settings or a verifier built from them, not both")
        self.verifier = verifier if verifier is not None else TokenVerifier(settings)
        self.settings = self.verifier.settings
        self.resource = _require_resource(self.settings)

    async def verify_token(self, token: str) -> McpAccessToken | None:
        """The SDK's `AccessToken` for a valid `token`, None for any refusal."""
        access = await self.verify_access(token)
        return to_mcp_access_token(token, access, self.settings) if access is not None else None

    async def verify_access(self, token: str) -> AccessToken | None:
        """m2m_guard's `AccessToken` for a token an MCP server accepts, None for any refusal."""
        try:
            access = await self.verifier.verify(token)
        except GuardError:
            return None  # reported (logged, event) by the verifier
        if access.client_id is None:  # the SDK's AccessToken and its sessions need one
            self.verifier.report_refusal(InvalidToken(
                "The access token names no client (client_id, azp, cid, appid or sub).",
                reason="missing_client_id"), access)
            return None
        return access

    def auth_settings(self, *, required_scopes: Iterable[str] | None = None,
                      issuer_url: str | None = None, **options: Any) -> AuthSettings:
        """The SDK's `AuthSettings` for this verifier: `resource_server_url` the server's URL,
        `issuer_url` the (first) configured issuer unless given, `required_scopes` the scopes
        every request needs (also published as ``scopes_supported``). `validate_token_resource`
        is False: m2m_guard checks the audience itself. `options` are other `AuthSettings`
        fields (e.g. ``service_documentation_url``)."""
        scopes = list(validate_scopes(required_scopes)) if required_scopes is not None else None
        issuer = issuer_url if issuer_url is not None else self.settings.issuers[0].issuer
        values: dict[str, Any] = {"issuer_url": issuer, "resource_server_url": self.resource,
                                  "required_scopes": scopes, "validate_token_resource": False}
        values.update(options)
        return AuthSettings(**values)

    def lifespan(self, server: object = None) -> AbstractAsyncContextManager[None]:
        """The server's lifespan, ``MCPServer(..., lifespan=guard.lifespan)``: see
        `verifier_lifespan`."""
        return verifier_lifespan(self.verifier)

    async def aclose(self) -> None:
        """Stop the verifier's background refreshes (`TokenVerifier.aclose`)."""
        await self.verifier.aclose()


@asynccontextmanager
async def verifier_lifespan(verifier: TokenVerifier) -> AsyncIterator[None]:
    """Load the key sets at startup (a failure is logged, never fatal: the server starts while
    its issuer is down, and requests retry), stop the background refreshes at shutdown."""
    await verifier.warm_up_at_startup()
    try:
        yield
    finally:
        await verifier.aclose()


def protected_resource_metadata(settings: GuardSettings) -> dict[str, Any]:
    """The RFC 9728 document of the MCP server `settings` describe (`resource` its URL, every
    configured issuer, ``bearer_methods_supported``, `resource_scopes`)."""
    _require_resource(settings)
    return resource_metadata(settings)


def metadata_url(settings: GuardSettings) -> str:
    """The URL a challenge names in ``resource_metadata`` (RFC 9728 §5.1)."""
    _require_resource(settings)
    url = challenge_url(settings)
    assert url is not None  # resource is set
    return url


def _called_tools(body: bytes) -> list[str]:
    """The names of the tools a JSON-RPC message (or batch) calls. `InvalidRequest` for a body
    that is not strict JSON: a lenient parser downstream might read another tool name in it
    (duplicate names), so it cannot be judged."""
    try:
        message = loads_json(body)
    except ValueError as exc:
        raise InvalidRequest(f"The request body is not strict JSON ({exc}), so the tools it "
                             f"calls cannot be checked.", reason="ambiguous_request_body") from None
    messages = message if isinstance(message, list) else [message]
    names = []
    for item in messages:
        if isinstance(item, dict) and item.get("method") == "tools/call":
            params = item.get("params")
            name = params.get("name") if isinstance(params, dict) else None
            if isinstance(name, str):
                names.append(name)
    return names


class _Verifies(Protocol):
    """An MCP verifier of this package: `McpTokenVerifier`, FastMCP's `M2MGuardVerifier` and
    `M2MGuardAuth`."""

    @property
    def verifier(self) -> TokenVerifier: ...

    async def verify_access(self, token: str) -> AccessToken | None: ...


class ToolScopes:
    """ASGI middleware around an MCP server's app: scopes per tool.

    ``ToolScopes(app, verifier, {"deploy": ["deploy:write"]})``. A ``POST`` whose JSON-RPC body
    calls a listed tool (``tools/call``) with a token that verifies but lacks one of the tool's
    scopes is answered 403 ``insufficient_scope`` with ``scope="<the tool's scopes>"`` and
    ``resource_metadata`` in the challenge, before the server runs the tool: MCP's signal for a
    client to ask for a token with more scopes. A body that is not strict JSON (duplicate names,
    deeper than the guard's nesting limit, not UTF-8) or larger than `max_body_bytes` (default
    the SDK's own limit, 4 MiB; raise it with the server's) is answered 400 ``invalid_request``:
    what it calls cannot be judged. Everything else reaches `app` unchanged (the body replayed),
    including requests without a valid token, which the SDK's own auth answers 401.
    `verifier` is the one the server uses (`McpTokenVerifier`, FastMCP's `M2MGuardVerifier`, or
    their `TokenVerifier`): one verification per token, the server's own check is a cache hit.
    Scopes are validated here, at start: a typo is an error now, not a 500 later.
    """

    def __init__(self, app: ASGIApp, verifier: TokenVerifier | _Verifies,
                 tools: Mapping[str, Iterable[str]], *,
                 max_body_bytes: int = MAX_BODY_BYTES) -> None:
        if max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be at least 1, got {max_body_bytes!r}")
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.guard: _Verifies = (McpTokenVerifier(verifier=verifier)
                                 if isinstance(verifier, TokenVerifier) else verifier)
        self.verifier = self.guard.verifier
        self.tools = {name: validate_scopes(scopes) for name, scopes in tools.items()}
        self._max_token_bytes = self.verifier.settings.max_token_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or not self.tools:
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        size = 0
        more = True
        while more:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":  # the client is gone: nothing to judge
                await self.app(scope, _Replay(messages, receive), send)
                return
            size += len(message.get("body", b""))
            more = bool(message.get("more_body", False))
            if size > self.max_body_bytes:
                await self._refuse(scope, send, InvalidRequest(
                    f"The request body is larger than {self.max_body_bytes} bytes, so the tools "
                    f"it calls cannot be checked.", reason="request_body_too_large"), None)
                return
        refusal: tuple[GuardError, AccessToken | None] | None
        try:
            required = self._required(b"".join(m.get("body", b"") for m in messages))
        except InvalidRequest as error:
            refusal = error, None
        else:
            refusal = await self._refusal(scope, required) if required else None
        if refusal is not None:
            await self._refuse(scope, send, *refusal)
            return
        await self.app(scope, _Replay(messages, receive), send)

    async def _refuse(self, scope: Scope, send: Send, error: GuardError,
                      access: AccessToken | None) -> None:
        rendered = render_refusal(self.verifier, error, access)
        await send_refusal(scope, _no_message, send, rendered, error.body_error)

    def _required(self, body: bytes) -> tuple[str, ...]:
        """The scopes the tools `body` calls need (in the order configured)."""
        scopes: dict[str, None] = {}
        for name in _called_tools(body):
            scopes.update(dict.fromkeys(self.tools.get(name, ())))
        return tuple(scopes)

    async def _refusal(self, scope: Scope, required: tuple[str, ...]
                       ) -> tuple[GuardError, AccessToken] | None:
        """The refusal for a verified token without `required`; None to let the app answer."""
        authorization = [value.decode("latin-1") for name, value in scope.get("headers", ())
                         if name.lower() == b"authorization"]
        try:
            token = extract_bearer(authorization, scope.get("query_string", b""),
                                   max_token_bytes=self._max_token_bytes)
            if token is None:
                return None
        except GuardError:
            return None  # the server's own auth answers it
        access = await self.guard.verify_access(token)  # the server's own rules
        if access is None or access.scopes.issuperset(required):
            return None  # refused tokens: the server's own auth answers them
        return InsufficientScope(required), access


async def _no_message() -> Message:
    """`receive` for a refusal of an HTTP request, which never reads (`send_refusal`)."""
    return {"type": "http.disconnect"}


class _Replay:
    """An ASGI `receive` that hands out the messages already read, then the original's."""

    def __init__(self, messages: list[Message], receive: Receive) -> None:
        self._messages = messages
        self._receive = receive

    async def __call__(self) -> Message:
        if self._messages:
            return self._messages.pop(0)
        return await self._receive()
