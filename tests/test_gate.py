"""The gate every adapter runs: a check plugged in at its one place (`default_checks`) runs for
every adapter, async and sync, after verification, with the framework-neutral request view;
the ASGI cache-hit fast path steps aside while a check is configured."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from starlette.testclient import TestClient

from m2m_guard import GuardSettings, InvalidToken, MissingToken, TokenVerifier
from m2m_guard._core import gate as gate_module
from m2m_guard._core.gate import AUTHENTICATE, PASS, Check, Gate
from m2m_guard._core.request import AsgiRequest, RequestView, WsgiRequest
from m2m_guard.flask import M2MGuard
from m2m_guard.local_issuer import KeySetServer
from m2m_guard.token import AccessToken
from m2m_guard.wsgi import M2MGuardWSGIMiddleware

from .conftest import deployment_app


class ProofCheck(Check):
    """Refuses unless the request carries ``X-Proof: <method> <url>`` (a stand-in for a
    sender-constrained token check), and records what it saw."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str | None]] = []

    def check(self, request: RequestView, token: str, access: AccessToken) -> None:
        self.seen.append((request.method, request.url, access.client_id))
        if request.header("x-proof") != f"{request.method} {request.url}":
            raise InvalidToken("The proof does not match the request.", reason="bad_signature")


@pytest.fixture
def proof(monkeypatch: pytest.MonkeyPatch) -> Iterator[ProofCheck]:
    check = ProofCheck()
    monkeypatch.setattr(gate_module, "default_checks", lambda settings: (check,))
    yield check


def _wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("content-type", "text/plain")])
    return [b"ok"]


def test_a_check_runs_in_the_asgi_middleware_also_for_cached_tokens(
        issuer: KeySetServer, settings: GuardSettings, proof: ProofCheck) -> None:
    token = issuer.mint(scopes=["read:deployments"])
    url = "http://testserver/deployments"
    with TestClient(deployment_app(settings)) as client:
        for _ in range(3):  # the second and third are cache hits: the check still runs
            ok = client.get("/deployments", headers={"Authorization": f"Bearer {token}",
                                                     "X-Proof": f"GET {url}"})
            assert ok.status_code == 200
        refused = client.get("/deployments", headers={"Authorization": f"Bearer {token}"})
    assert refused.status_code == 401
    assert 'error="invalid_token"' in refused.headers["www-authenticate"]
    assert [seen[:2] for seen in proof.seen] == [("GET", url)] * 4


def test_a_check_runs_in_wsgi_and_flask(issuer: KeySetServer, settings: GuardSettings,
                                        proof: ProofCheck) -> None:
    token = issuer.mint(scopes=["read:deployments"])
    guarded = M2MGuardWSGIMiddleware(_wsgi_app, settings)
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/x", "QUERY_STRING": "",
               "HTTP_HOST": "api.example", "wsgi.url_scheme": "https",
               "HTTP_AUTHORIZATION": f"Bearer {token}"}
    statuses: list[str] = []
    guarded(dict(environ, HTTP_X_PROOF="GET https://api.example/x"),
            lambda status, headers, exc_info=None: statuses.append(status))
    guarded(environ, lambda status, headers, exc_info=None: statuses.append(status))
    assert [status.split()[0] for status in statuses] == ["200", "401"]

    app = Flask(__name__)

    @app.get("/items")
    def items() -> str:
        return "items"

    M2MGuard(app, settings)
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/items", headers=headers).status_code == 401
    assert client.get("/items", headers={**headers, "X-Proof": "GET http://localhost/items"}
                      ).status_code == 200
    assert [seen[1] for seen in proof.seen][-2:] == ["http://localhost/items"] * 2


@pytest.mark.anyio
async def test_the_gate_decides_and_authenticates_async_and_sync(
        issuer: KeySetServer, make_settings: Any) -> None:
    settings = make_settings(public_paths=["/public/*"], allow_cors_preflight=True)
    verifier = TokenVerifier(settings)
    check = ProofCheck()
    gate = Gate(verifier, checks=[check])
    assert gate.fast_path is False and Gate(verifier).fast_path is True

    def scope(path: str, method: str = "GET", **headers: str) -> dict[str, Any]:
        return {"type": "http", "method": method, "path": path, "query_string": b"",
                "scheme": "https", "headers": [(b"host", b"api.example")] + [
                    (name.replace("_", "-").encode(), value.encode())
                    for name, value in headers.items()]}

    assert gate.decide(AsgiRequest(scope("/public/docs"))) is PASS
    assert gate.decide(AsgiRequest(scope("/api", "OPTIONS", origin="https://a.example",
                                         access_control_request_method="GET"))) is PASS
    assert gate.decide(AsgiRequest(scope("/api"))) is AUTHENTICATE
    token = issuer.mint()
    good = AsgiRequest(scope("/api", authorization=f"Bearer {token}",
                             x_proof="GET https://api.example/api"))
    access = await gate.authenticate(good)
    assert access is not None and access.client_id == check.seen[-1][2]
    with pytest.raises(InvalidToken):
        await gate.authenticate(AsgiRequest(scope("/api", authorization=f"Bearer {token}")))
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/api", "HTTP_HOST": "api.example",
               "wsgi.url_scheme": "https", "HTTP_AUTHORIZATION": f"Bearer {token}",
               "HTTP_X_PROOF": "GET https://api.example/api"}
    assert gate.authenticate_sync(WsgiRequest(environ)) == access
    assert gate.authenticate_sync(WsgiRequest({"REQUEST_METHOD": "GET"}), required=False) is None
    with pytest.raises(MissingToken):
        gate.authenticate_sync(WsgiRequest({"REQUEST_METHOD": "GET"}))
    await verifier.aclose()


def test_request_views_read_the_same_request_the_same_way() -> None:
    asgi = AsgiRequest({"type": "http", "method": "POST", "path": "/a", "root_path": "/api",
                        "scheme": "https", "query_string": b"x=1",
                        "headers": [(b"host", b"h.example"), (b"dpop", b"one"),
                                    (b"dpop", b"two")],
                        "extensions": {"tls": {"client_cert_chain": ["PEM"]}}})
    wsgi = WsgiRequest({"REQUEST_METHOD": "POST", "PATH_INFO": "/a", "SCRIPT_NAME": "/api",
                        "wsgi.url_scheme": "https", "QUERY_STRING": "x=1",
                        "HTTP_HOST": "h.example", "HTTP_DPOP": "one",
                        "SSL_CLIENT_CERT": "PEM"})
    for view in (asgi, wsgi):
        assert (view.method, view.url, view.client_cert) == (
            "POST", "https://h.example/api/a", "PEM")
    assert asgi.headers("DPoP") == ["one", "two"] and asgi.header("dpop") is None
    assert wsgi.headers("DPoP") == ["one"] and wsgi.header("dpop") == "one"
