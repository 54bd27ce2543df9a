"""An MCP server (the official `mcp` SDK, streamable HTTP) guarded by m2m_guard.

Run it against your issuer (Scalekit or any JWKS-publishing authorization server); the resource
is the server's own URL, the audience what your issuer puts in tokens for it:

    M2M_GUARD_ISSUER=https://yourenv.scalekit.dev M2M_GUARD_AUDIENCE=http://127.0.0.1:8000/mcp \
    M2M_GUARD_RESOURCE=http://127.0.0.1:8000/mcp uvicorn examples.mcp_server:app --port 8000

- every request to /mcp needs read:deployments (the server's required scope)
- tool ``list_deployments``: nothing more
- tool ``deploy``: deploy:applications as well (`ToolScopes`)
- GET /.well-known/oauth-protected-resource/mcp: the RFC 9728 document (public)
"""

from __future__ import annotations

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.mcpserver import MCPServer
from starlette.types import ASGIApp

from m2m_guard import GuardSettings
from m2m_guard.mcp import McpTokenVerifier, ToolScopes

DEPLOYMENTS = [{"id": "dep_1", "service": "billing", "version": "1.4.2", "status": "live"}]


def create_app(settings: GuardSettings | None = None) -> ASGIApp:
    """The server's ASGI app; `settings` default to the M2M_GUARD_* environment variables."""
    guard = McpTokenVerifier(settings if settings is not None else GuardSettings.from_env())
    # lifespan: the key sets loaded at startup, background refreshes stopped at shutdown
    server = MCPServer("deployments", token_verifier=guard, lifespan=guard.lifespan,
                       auth=guard.auth_settings(required_scopes=["read:deployments"]))

    @server.tool()
    def list_deployments() -> list[dict[str, str]]:
        """The deployments of the organization."""
        return DEPLOYMENTS

    @server.tool()
    def deploy(service: str, version: str) -> dict[str, str]:
        """Queue a deployment (needs deploy:applications)."""
        token = get_access_token()
        assert token is not None  # the server's auth guarantees it
        return {"id": f"dep_{len(DEPLOYMENTS) + 1}", "service": service, "version": version,
                "status": "queued", "requested_by": token.client_id}

    return ToolScopes(server.streamable_http_app(), guard, {"deploy": ["deploy:applications"]})


def __getattr__(name: str) -> ASGIApp:
    # `uvicorn examples.mcp_server:app` builds the app on first access, so importing this
    # module needs no environment variables.
    if name == "app":
        return create_app()
    raise AttributeError(name)
