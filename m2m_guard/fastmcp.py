"""FastMCP servers: m2m_guard as a FastMCP auth provider (``pip install m2m-guard[fastmcp]``,
FastMCP 4, the release line built on the `mcp` SDK 2).

The standalone `fastmcp` framework takes an `AuthProvider` (``FastMCP(auth=...)``):

- `M2MGuardAuth` is the one to pass: a `RemoteAuthProvider` that verifies tokens with
  m2m_guard and publishes the RFC 9728 document naming every configured issuer, so FastMCP's
  own answers (401 with ``resource_metadata``, 403 ``insufficient_scope`` for its
  `required_scopes`) point agents at the right authorization server.
- `M2MGuardVerifier` is FastMCP's `TokenVerifier` on m2m_guard's `TokenVerifier` (the same
  key-set cache, verified-token cache and claim rules as every adapter); the token becomes
  FastMCP's `AccessToken` as `m2m_guard.mcp.to_mcp_access_token` maps it.

The server's URL is `GuardSettings.resource` (``M2M_GUARD_RESOURCE``), e.g.
``http://127.0.0.1:8000/mcp``; FastMCP derives the same URL from `base_url` and the path it
serves MCP on, and `M2MGuardAuth` refuses to start when the two differ. Per-tool scopes:
FastMCP's ``@server.tool(auth=require_scopes(...))``, or `m2m_guard.mcp.ToolScopes` for an
HTTP 403 with the scopes in the challenge. See docs/mcp.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractAsyncContextManager
from typing import Any
from urllib.parse import urlsplit

from fastmcp.server.auth import AccessToken as FastMCPAccessToken
from fastmcp.server.auth import RemoteAuthProvider
from fastmcp.server.auth import TokenVerifier as FastMCPTokenVerifier
from pydantic import AnyHttpUrl

from ._core.scopes import validate_scopes
from .errors import ConfigurationError
from .mcp import McpTokenVerifier, to_mcp_access_token, verifier_lifespan
from .settings import GuardSettings
from .token import AccessToken
from .verifier import TokenVerifier

__all__ = ["M2MGuardAuth", "M2MGuardVerifier"]


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _scopes(scopes: Iterable[str] | None) -> list[str] | None:
    return list(validate_scopes(scopes)) if scopes is not None else None


class M2MGuardVerifier(FastMCPTokenVerifier):
    """FastMCP's `TokenVerifier` on m2m_guard's `TokenVerifier`.

    `settings` (or a shared `verifier`) as for `m2m_guard.mcp.McpTokenVerifier`: `resource` the
    server's URL, audience checking on. `required_scopes` are the scopes every request needs.
    `verify_token` is None for every refusal (FastMCP answers 401; the verifier logs it once),
    the issuer's keys being unavailable included (FastMCP lets a raised error become a 500).
    """

    def __init__(self, settings: GuardSettings | None = None, *,
                 verifier: TokenVerifier | None = None,
                 required_scopes: Iterable[str] | None = None,
                 base_url: str | None = None) -> None:
        self._mcp = McpTokenVerifier(settings, verifier=verifier)
        self.verifier = self._mcp.verifier
        self.settings = self._mcp.settings
        super().__init__(base_url=base_url if base_url is not None else _origin(self._mcp.resource),
                         required_scopes=_scopes(required_scopes))

    async def verify_token(self, token: str) -> FastMCPAccessToken | None:
        """FastMCP's `AccessToken` for a valid `token`, None for any refusal."""
        access = await self.verify_access(token)
        if access is None:
            return None
        return to_mcp_access_token(token, access, self.settings, FastMCPAccessToken)

    async def verify_access(self, token: str) -> AccessToken | None:
        """m2m_guard's `AccessToken` for a token the server accepts, None for any refusal."""
        return await self._mcp.verify_access(token)

    async def aclose(self) -> None:
        """Stop the verifier's background refreshes (`TokenVerifier.aclose`)."""
        await self.verifier.aclose()


class M2MGuardAuth(RemoteAuthProvider):
    """The FastMCP auth provider: ``FastMCP("name", auth=M2MGuardAuth(settings))``.

    Verifies with `M2MGuardVerifier`; publishes the RFC 9728 document with `resource` the
    server's URL, every configured issuer as an authorization server, and ``scopes_supported``
    from `GuardSettings.resource_scopes` (else `required_scopes`). `base_url` defaults to the
    origin of `GuardSettings.resource`. `options` are other `RemoteAuthProvider` arguments
    (``resource_name``, ``resource_documentation``).
    """

    def __init__(self, settings: GuardSettings | None = None, *,
                 verifier: TokenVerifier | None = None,
                 required_scopes: Iterable[str] | None = None,
                 base_url: str | None = None, **options: Any) -> None:
        token_verifier = M2MGuardVerifier(settings, verifier=verifier,
                                          required_scopes=required_scopes, base_url=base_url)
        guard_settings = token_verifier.settings
        self.guard = token_verifier
        self.verifier = token_verifier.verifier
        self.settings = guard_settings
        scopes = list(guard_settings.resource_scopes) or token_verifier.required_scopes or None
        super().__init__(
            token_verifier,
            authorization_servers=[AnyHttpUrl(entry.issuer) for entry in guard_settings.issuers],
            base_url=str(token_verifier.base_url),
            scopes_supported=scopes, **options)

    def set_mcp_path(self, mcp_path: str | None) -> None:
        """FastMCP tells the provider where it serves MCP; the URL must be `resource`."""
        super().set_mcp_path(mcp_path)
        base = str(self.resource_base_url or self.base_url).rstrip("/")
        served = f"{base}/{mcp_path.lstrip('/')}" if mcp_path else base
        resource = (self.settings.resource or "").rstrip("/")
        if served.rstrip("/") != resource:
            raise ConfigurationError(
                f"M2M_GUARD_RESOURCE is {self.settings.resource!r} but FastMCP serves MCP at "
                f"{served!r}: set the resource to the URL agents call (base_url + the MCP path), "
                f"or give M2MGuardAuth the base_url that makes them equal.")

    async def verify_access(self, token: str) -> AccessToken | None:
        """m2m_guard's `AccessToken` for a token the server accepts (`M2MGuardVerifier`)."""
        return await self.guard.verify_access(token)

    def lifespan(self, server: object = None) -> AbstractAsyncContextManager[None]:
        """The server's lifespan, ``FastMCP(..., lifespan=auth.lifespan)``: the key sets loaded at
        startup (a failure logged, never fatal), background refreshes stopped at shutdown."""
        return verifier_lifespan(self.verifier)

    async def aclose(self) -> None:
        """Stop the verifier's background refreshes (`TokenVerifier.aclose`)."""
        await self.verifier.aclose()
