"""m2m_guard.mcp: the `mcp` SDK's token verifier and the example MCP server
(examples/mcp_server.py) on real uvicorn, driven by the SDK's own client over streamable HTTP,
with tokens from the real local issuer."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.packages import require_package

require_package("mcp")

from examples.mcp_server import create_app  # noqa: E402
from m2m_guard import GuardSettings  # noqa: E402
from m2m_guard.errors import ConfigurationError  # noqa: E402
from m2m_guard.mcp import (  # noqa: E402
    McpTokenVerifier,
    ToolScopes,
    metadata_url,
    protected_resource_metadata,
)
from m2m_guard.testing import M2MIssuer  # noqa: E402
from tests.mcp_client import call_tool  # noqa: E402
from tests.servers import free_port, uvicorn_server  # noqa: E402

READ = "read:deployments"
DEPLOY = "deploy:applications"


# -- the verifier on its own -------------------------------------------------------------------
@pytest.fixture
def server_url() -> str:
    return "https://mcp.example.com/mcp"


@pytest.fixture
def guard(m2m_issuer: M2MIssuer, server_url: str) -> Iterator[McpTokenVerifier]:
    verifier = McpTokenVerifier(m2m_issuer.settings(audience=server_url, resource=server_url))
    yield verifier
    asyncio.run(verifier.aclose())


def test_a_valid_token_becomes_the_sdks_access_token(guard: McpTokenVerifier,
                                                     m2m_issuer: M2MIssuer,
                                                     server_url: str) -> None:
    exp = int(time.time()) + 600
    token = m2m_issuer.mint([DEPLOY, READ], aud=[server_url, "other"], exp=exp)
    access = asyncio.run(guard.verify_token(token))
    assert access is not None
    assert access.scopes == [DEPLOY, READ]
    assert access.client_id == m2m_issuer.claims()["client_id"]
    assert access.expires_at == exp
    assert access.resource == server_url
    assert access.subject == m2m_issuer.claims()["sub"]
    assert access.claims is not None
    assert access.claims["custom_claims"] == {"environment": "test"}
    assert access.claims["aud"] == [server_url, "other"]  # plain JSON, not frozen views
    assert access.token == token


@pytest.mark.parametrize("case", ["expired", "wrong audience", "bad signature", "other issuer",
                                  "not a JWT", "no client"])
def test_every_refusal_is_none(guard: McpTokenVerifier, m2m_issuer: M2MIssuer,
                               case: str) -> None:
    if case == "expired":
        token = m2m_issuer.mint([READ], aud=[guard.resource], exp=int(time.time()) - 120)
    elif case == "wrong audience":
        token = m2m_issuer.mint([READ], aud=["https://another.example.com/mcp"])
    elif case == "bad signature":
        head, payload, signature = m2m_issuer.mint([READ], aud=[guard.resource]).split(".")
        token = ".".join([head, payload, ("A" if signature[0] != "A" else "B") + signature[1:]])
    elif case == "other issuer":
        token = m2m_issuer.mint([READ], aud=[guard.resource], iss="https://evil.example.com")
    elif case == "not a JWT":
        token = "opaque-token"
    else:
        token = m2m_issuer.mint([READ], aud=[guard.resource], client_id=None, sub=None)
    assert asyncio.run(guard.verify_token(token)) is None


def test_auth_settings_name_the_server_and_the_issuer(guard: McpTokenVerifier,
                                                      m2m_issuer: M2MIssuer,
                                                      server_url: str) -> None:
    auth = guard.auth_settings(required_scopes=[READ])
    assert str(auth.resource_server_url) == server_url
    assert str(auth.issuer_url).rstrip("/") == m2m_issuer.url
    assert auth.required_scopes == [READ]
    assert auth.validate_token_resource is False  # m2m_guard checks the audience itself
    with pytest.raises(ValueError, match="scope-token"):
        guard.auth_settings(required_scopes=["read deployments"])


def test_metadata_helpers_are_the_guards_rfc_9728_document(m2m_issuer: M2MIssuer,
                                                           server_url: str) -> None:
    settings = m2m_issuer.settings(audience=server_url, resource=server_url,
                                   resource_scopes=[READ, DEPLOY])
    assert protected_resource_metadata(settings) == {
        "resource": server_url, "authorization_servers": [m2m_issuer.url],
        "bearer_methods_supported": ["header"], "scopes_supported": [READ, DEPLOY]}
    assert metadata_url(settings) == \
        "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"


def test_an_mcp_verifier_needs_the_servers_url_and_audience_checks(
        m2m_issuer: M2MIssuer) -> None:
    for needs_resource in (McpTokenVerifier, protected_resource_metadata, metadata_url):
        with pytest.raises(ConfigurationError, match="M2M_GUARD_RESOURCE is not set"):
            needs_resource(m2m_issuer.settings())
    with pytest.raises(ConfigurationError, match="M2M_GUARD_VERIFY_AUDIENCE is false"):
        McpTokenVerifier(GuardSettings(issuer=m2m_issuer.url, verify_audience=False,
                                       resource="https://mcp.example.com/mcp"))


# -- the example server, end to end ------------------------------------------------------------
@pytest.fixture(scope="module")
def mcp_url(m2m_issuer: M2MIssuer) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    app = create_app(m2m_issuer.settings(audience=url, resource=url))
    with uvicorn_server(app, port=port):
        yield url


def test_no_token_is_401_with_resource_metadata(mcp_url: str) -> None:
    result, recorder = asyncio.run(call_tool(mcp_url, None, "list_deployments"))
    assert isinstance(result, Exception)
    status, challenge, body = recorder.answers[0]
    assert status == 401
    document = mcp_url.replace("/mcp", "/.well-known/oauth-protected-resource/mcp")
    assert challenge is not None and f'resource_metadata="{document}"' in challenge
    assert body["error"] == "invalid_token"
    metadata = httpx.get(document, timeout=30)
    assert metadata.status_code == 200
    assert metadata.json()["resource"] == mcp_url
    assert metadata.json()["authorization_servers"]
    assert metadata.json()["scopes_supported"] == [READ]


def test_the_server_scope_missing_is_403(mcp_url: str, m2m_issuer: M2MIssuer) -> None:
    token = m2m_issuer.mint(["other:scope"], aud=[mcp_url])
    result, recorder = asyncio.run(call_tool(mcp_url, token, "list_deployments"))
    assert isinstance(result, Exception)
    status, challenge, body = recorder.answers[0]
    assert status == 403
    assert challenge is not None and 'error="insufficient_scope"' in challenge
    assert body["error"] == "insufficient_scope"


def test_a_token_for_another_server_is_401(mcp_url: str, m2m_issuer: M2MIssuer) -> None:
    token = m2m_issuer.mint([READ, DEPLOY], aud=["https://another.example.com/mcp"])
    result, recorder = asyncio.run(call_tool(mcp_url, token, "list_deployments"))
    assert isinstance(result, Exception)
    assert recorder.answers[0][0] == 401


def test_the_right_token_gets_the_tools_answer(mcp_url: str, m2m_issuer: M2MIssuer) -> None:
    token = m2m_issuer.mint([READ], aud=[mcp_url])
    result, recorder = asyncio.run(call_tool(mcp_url, token, "list_deployments"))
    assert recorder.answers == []
    assert result == {"result": [{"id": "dep_1", "service": "billing", "version": "1.4.2",
                                  "status": "live"}]}


def test_a_tool_scope_missing_is_403_naming_it(mcp_url: str, m2m_issuer: M2MIssuer) -> None:
    token = m2m_issuer.mint([READ], aud=[mcp_url])
    result, recorder = asyncio.run(call_tool(mcp_url, token, "deploy",
                                         {"service": "billing", "version": "1.5.0"}))
    assert isinstance(result, Exception)
    status, challenge, body = recorder.answers[0]
    assert status == 403
    assert challenge is not None
    assert 'error="insufficient_scope"' in challenge and f'scope="{DEPLOY}"' in challenge
    assert 'resource_metadata="' in challenge
    assert body == {"error": "insufficient_scope", "scope": DEPLOY,
                    "error_description": f"The access token lacks the scope: {DEPLOY}"}


def test_a_tool_scope_held_runs_the_tool(mcp_url: str, m2m_issuer: M2MIssuer) -> None:
    token = m2m_issuer.mint([READ, DEPLOY], aud=[mcp_url])
    result, recorder = asyncio.run(call_tool(mcp_url, token, "deploy",
                                         {"service": "billing", "version": "1.5.0"}))
    assert recorder.answers == []
    assert result == {"id": "dep_2", "service": "billing", "version": "1.5.0",
                      "status": "queued", "requested_by": m2m_issuer.claims()["client_id"]}


def test_a_token_without_client_is_reported_once(guard: McpTokenVerifier, m2m_issuer: M2MIssuer,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    token = m2m_issuer.mint([READ], aud=[guard.resource], client_id=None, sub=None)
    with caplog.at_level(logging.INFO, logger="m2m_guard"):
        assert asyncio.run(guard.verify_token(token)) is None
    lines = [record.getMessage() for record in caplog.records if "refused" in record.getMessage()]
    assert len(lines) == 1 and "missing_client_id" in lines[0] and token not in lines[0]


# -- ToolScopes on its own: what it reads, what it passes on -----------------------------------
class _Echo:
    """An ASGI app answering 200 with the body it received."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})


def _post(app: Any, body: bytes, token: str | None, method: str = "POST") -> httpx.Response:
    async def run() -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://mcp.test") as client:
            return await client.request(method, "/mcp", content=body, headers=headers)
    return asyncio.run(run())


def _tool_call(name: str, identifier: int = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": identifier, "method": "tools/call",
            "params": {"name": name, "arguments": {}}}


def test_tool_scopes_refuse_only_a_verified_token_without_the_tools_scopes(
        guard: McpTokenVerifier, m2m_issuer: M2MIssuer) -> None:
    app = ToolScopes(_Echo(), guard, {"deploy": [DEPLOY, READ]})
    reader = m2m_issuer.mint([READ], aud=[guard.resource])
    deployer = m2m_issuer.mint([READ, DEPLOY], aud=[guard.resource])
    call = json.dumps(_tool_call("deploy")).encode()
    refused = _post(app, call, reader)
    assert refused.status_code == 403
    assert f'scope="{DEPLOY} {READ}"' in refused.headers["www-authenticate"]
    assert f'resource_metadata="{metadata_url(guard.settings)}"' in \
        refused.headers["www-authenticate"]
    batch = json.dumps([_tool_call("list", 1), _tool_call("deploy", 2)]).encode()
    assert _post(app, batch, reader).status_code == 403
    # passed on, body intact: the right token, another tool, no or a bad token (the server's
    # own auth answers those), a body that is not JSON, another method
    for body, token in [(call, deployer), (json.dumps(_tool_call("list")).encode(), reader),
                        (call, None), (call, "not-a-token")]:
        answer = _post(app, body, token)
        assert (answer.status_code, answer.content) == (200, body)
    assert _post(app, call, reader, method="PUT").status_code == 200


@pytest.mark.parametrize("body", [
    b"{not json",
    # a lenient parser takes the last name: the scoped tool hides behind a harmless one
    b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", '
    b'"params": {"name": "list", "name": "deploy"}}',
    b"[" * 10_000 + b"]" * 10_000,
    b'{"method": "tools/call", "params": {"name": "deploy\xff"}}',  # not UTF-8
])
def test_a_body_that_is_not_strict_json_is_400(guard: McpTokenVerifier, m2m_issuer: M2MIssuer,
                                               body: bytes) -> None:
    app = ToolScopes(_Echo(), guard, {"deploy": [DEPLOY]})
    answer = _post(app, body, m2m_issuer.mint([READ], aud=[guard.resource]))
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_request"
    assert 'error="invalid_request"' in answer.headers["www-authenticate"]


def test_tool_scopes_are_validated_at_start(guard: McpTokenVerifier) -> None:
    with pytest.raises(ValueError, match="scope-token"):
        ToolScopes(_Echo(), guard, {"deploy": ["deploy applications"]})


def test_tool_scopes_judge_a_token_as_the_server_does(guard: McpTokenVerifier,
                                                      m2m_issuer: M2MIssuer) -> None:
    """Built on the bare `TokenVerifier`, `ToolScopes` still applies the MCP rules: a token
    naming no client is the server's to refuse (401), not a 403 for its scopes."""
    app = ToolScopes(_Echo(), guard.verifier, {"deploy": [DEPLOY]})
    call = json.dumps(_tool_call("deploy")).encode()
    nameless = m2m_issuer.mint([READ], aud=[guard.resource], client_id=None, sub=None)
    assert _post(app, call, nameless).status_code == 200
    assert _post(app, call, m2m_issuer.mint([READ], aud=[guard.resource])).status_code == 403


def test_an_unreachable_issuer_is_a_refusal_not_an_exception(
        m2m_issuer: M2MIssuer, server_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """The SDK's protocol has no 503: None (the SDK answers 401), the log says why."""
    verifier = McpTokenVerifier(m2m_issuer.settings(audience=server_url, resource=server_url))
    token = m2m_issuer.mint([READ], aud=[server_url])
    with m2m_issuer.outage(), caplog.at_level(logging.INFO, logger="m2m_guard"):
        assert asyncio.run(verifier.verify_token(token)) is None
    assert "reason=issuer_unavailable" in caplog.text
    asyncio.run(verifier.aclose())


def _asgi(app: Any, chunks: list[bytes], token: str) -> tuple[int, bytes]:
    """One POST through `app` with its body in `chunks` (``more_body``), as a server sends it."""
    incoming = [{"type": "http.request", "body": chunk, "more_body": n < len(chunks) - 1}
                for n, chunk in enumerate(chunks)]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/mcp", "raw_path": b"/mcp",
             "query_string": b"", "headers": [(b"authorization", f"Bearer {token}".encode()),
                                               (b"host", b"mcp.test")],
             "scheme": "http", "server": ("mcp.test", 80), "http_version": "1.1"}
    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def test_tool_scopes_read_a_body_in_chunks_and_bound_it(guard: McpTokenVerifier,
                                                        m2m_issuer: M2MIssuer) -> None:
    reader = m2m_issuer.mint([READ], aud=[guard.resource])
    call = json.dumps(_tool_call("deploy")).encode()
    chunks = [call[:10], call[10:30], call[30:]]
    assert _asgi(ToolScopes(_Echo(), guard, {"deploy": [DEPLOY]}), chunks, reader)[0] == 403
    other = json.dumps(_tool_call("list")).encode()
    assert _asgi(ToolScopes(_Echo(), guard, {"deploy": [DEPLOY]}), [other[:5], other[5:]],
                 reader) == (200, other)
    small = ToolScopes(_Echo(), guard, {"deploy": [DEPLOY]}, max_body_bytes=len(other) - 1)
    status, body = _asgi(small, [other[:5], other[5:]], reader)
    assert status == 400 and json.loads(body)["error"] == "invalid_request"
    with pytest.raises(ValueError, match="max_body_bytes"):
        ToolScopes(_Echo(), guard, {"deploy": [DEPLOY]}, max_body_bytes=0)
