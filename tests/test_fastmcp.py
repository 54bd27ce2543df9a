"""m2m_guard.fastmcp: a FastMCP server guarded by `M2MGuardAuth` on real uvicorn, driven by the
`mcp` SDK's own client over streamable HTTP, with tokens from the real local issuer."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from starlette.middleware import Middleware

from tests.packages import require_package

require_package("fastmcp")

from fastmcp import FastMCP  # noqa: E402
from fastmcp.server.auth import AccessToken as FastMCPAccessToken  # noqa: E402
from fastmcp.server.auth import require_scopes  # noqa: E402
from fastmcp.server.dependencies import get_access_token  # noqa: E402

from m2m_guard.errors import ConfigurationError  # noqa: E402
from m2m_guard.fastmcp import M2MGuardAuth, M2MGuardVerifier  # noqa: E402
from m2m_guard.mcp import ToolScopes  # noqa: E402
from m2m_guard.testing import M2MIssuer  # noqa: E402
from tests.mcp_client import call_tool  # noqa: E402
from tests.servers import free_port, uvicorn_server  # noqa: E402

READ = "read:deployments"
DEPLOY = "deploy:applications"
ADMIN = "admin:platform"


def _server(auth: M2MGuardAuth) -> FastMCP:
    server = FastMCP("deployments", auth=auth, lifespan=auth.lifespan)

    @server.tool
    def whoami() -> dict[str, str]:
        token = get_access_token()
        assert token is not None
        return {"client_id": token.client_id, "environment":
                token.claims["custom_claims"]["environment"]}

    @server.tool(auth=require_scopes(DEPLOY))
    def deploy(service: str) -> dict[str, str]:
        return {"service": service, "status": "queued"}

    @server.tool
    def audit() -> list[str]:
        return []

    return server


@pytest.fixture(scope="module")
def fastmcp_url(m2m_issuer: M2MIssuer) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    auth = M2MGuardAuth(m2m_issuer.settings(audience=url, resource=url),
                        required_scopes=[READ])
    app = _server(auth).http_app(
        path="/mcp", middleware=[Middleware(ToolScopes, verifier=auth, tools={"audit": [ADMIN]})])
    with uvicorn_server(app, port=port):
        yield url
    assert auth.verifier.key_store.closed  # the lifespan closed the verifier


def test_the_verifier_gives_fastmcps_access_token(m2m_issuer: M2MIssuer) -> None:
    url = "https://mcp.example.com/mcp"
    verifier = M2MGuardVerifier(m2m_issuer.settings(audience=url, resource=url))
    assert str(verifier.base_url).rstrip("/") == "https://mcp.example.com"
    access = asyncio.run(verifier.verify_token(m2m_issuer.mint([READ], aud=[url])))
    assert isinstance(access, FastMCPAccessToken)
    assert access.scopes == [READ] and access.resource == url
    assert access.claims["custom_claims"] == {"environment": "test"}
    assert asyncio.run(verifier.verify_token(m2m_issuer.mint([READ], aud=["other"]))) is None
    asyncio.run(verifier.aclose())


def test_a_resource_fastmcp_does_not_serve_is_refused_at_start(m2m_issuer: M2MIssuer) -> None:
    url = "http://127.0.0.1:8000/mcp"
    auth = M2MGuardAuth(m2m_issuer.settings(audience=url, resource=url))
    with pytest.raises(ConfigurationError, match="FastMCP serves MCP at"):
        FastMCP("x", auth=auth).http_app(path="/tools")


def test_no_token_is_401_with_resource_metadata(fastmcp_url: str, m2m_issuer: M2MIssuer) -> None:
    result, recorder = asyncio.run(call_tool(fastmcp_url, None, "whoami"))
    assert isinstance(result, Exception), result
    assert recorder.answers, repr(result)
    status, challenge, _ = recorder.answers[0]
    assert status == 401
    document = fastmcp_url.replace("/mcp", "/.well-known/oauth-protected-resource/mcp")
    assert challenge is not None and f'resource_metadata="{document}"' in challenge
    metadata = httpx.get(document, timeout=30).json()
    assert metadata["resource"] == fastmcp_url
    assert [server.rstrip("/") for server in metadata["authorization_servers"]] == \
        [m2m_issuer.url]
    assert metadata["scopes_supported"] == [READ]


def test_the_server_scope_missing_is_403(fastmcp_url: str, m2m_issuer: M2MIssuer) -> None:
    token = m2m_issuer.mint(["other:scope"], aud=[fastmcp_url])
    result, recorder = asyncio.run(call_tool(fastmcp_url, token, "whoami"))
    assert isinstance(result, Exception)
    status, challenge, _ = recorder.answers[0]
    assert status == 403 and challenge is not None and "insufficient_scope" in challenge


def test_the_right_token_gets_the_tools_answer(fastmcp_url: str, m2m_issuer: M2MIssuer) -> None:
    token = m2m_issuer.mint([READ], aud=[fastmcp_url])
    result, recorder = asyncio.run(call_tool(fastmcp_url, token, "whoami"))
    assert recorder.answers == []
    assert result == {"client_id": m2m_issuer.claims()["client_id"], "environment": "test"}


def test_fastmcps_own_tool_scope_hides_the_tool(fastmcp_url: str,
                                                m2m_issuer: M2MIssuer) -> None:
    """FastMCP's ``auth=require_scopes(...)`` answers a tool error, not an HTTP 403: the
    difference docs/mcp.md describes next to `ToolScopes`."""
    token = m2m_issuer.mint([READ], aud=[fastmcp_url])
    refused, recorder = asyncio.run(call_tool(fastmcp_url, token, "deploy",
                                              {"service": "billing"}))
    assert recorder.answers == []
    assert refused.is_error and "Unknown tool: 'deploy'" in refused.content[0].text
    token = m2m_issuer.mint([READ, DEPLOY], aud=[fastmcp_url])
    result, recorder = asyncio.run(call_tool(fastmcp_url, token, "deploy", {"service": "billing"}))
    assert recorder.answers == []
    assert result == {"service": "billing", "status": "queued"}


def test_tool_scopes_answer_403_in_fastmcp_too(fastmcp_url: str, m2m_issuer: M2MIssuer) -> None:
    token = m2m_issuer.mint([READ], aud=[fastmcp_url])
    result, recorder = asyncio.run(call_tool(fastmcp_url, token, "audit"))
    assert isinstance(result, Exception)
    status, challenge, body = recorder.answers[0]
    assert status == 403 and challenge is not None and f'scope="{ADMIN}"' in challenge
    assert body["scope"] == ADMIN
    token = m2m_issuer.mint([READ, ADMIN], aud=[fastmcp_url])
    result, recorder = asyncio.run(call_tool(fastmcp_url, token, "audit"))
    assert recorder.answers == [] and result == {"result": []}
