"""FastAPI: both forms (middleware + `require_scopes`, dependencies with and without the
middleware), FastAPI's own parameters, one verifier per app, errors identical to the ASGI
middleware, and the example under a real uvicorn against a real key-set server."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from fastapi import FastAPI, Request, WebSocket
from fastapi.testclient import TestClient
from pydantic import BaseModel
from starlette.websockets import WebSocketDisconnect

from examples.fastapi_app import create_app
from m2m_guard import (
    AccessToken,
    GuardSettings,
    InsufficientScope,
    TokenVerifier,
    current_token,
    require_any_scope,
    require_scopes,
)
from m2m_guard.asgi import M2MGuardMiddleware
from m2m_guard.fastapi import M2MGuard, M2MToken, RequireScopes, m2m_token
from m2m_guard.local_issuer import KeySetServer

from .conftest import deployment_app
from .servers import uvicorn_server

CLIENT_ID = "m2morg_68315758685323697"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Deployment(BaseModel):
    service: str
    version: str


def decorated_app(settings: GuardSettings, *, guard: bool = False) -> FastAPI:
    """Middleware + `require_scopes` on sync and async path operations with path, query and
    body parameters."""
    app = FastAPI()
    app.add_middleware(M2MGuardMiddleware, settings=settings)

    @app.get("/items/{item_id}")
    @require_scopes("read:deployments")
    async def read_item(item_id: int, q: str | None = None) -> dict[str, Any]:
        token = current_token()
        assert token is not None
        return {"item_id": item_id, "q": q, "client_id": token.client_id}

    @app.post("/items/{item_id}", status_code=202)
    @require_scopes("deploy:applications")
    def write_item(item_id: int, deployment: Deployment, request: Request,
                   dry_run: bool = False) -> dict[str, Any]:  # sync: runs in a thread
        token = current_token()
        assert token is not None
        return {"item_id": item_id, "service": deployment.service, "dry_run": dry_run,
                "user": request.user.display_name, "organization_id": token.organization_id}

    @app.get("/admin")
    @require_scopes("admin:platform")
    def admin() -> dict[str, bool]:
        return {"admin": True}

    @app.get("/audit")
    @require_any_scope("audit:read", "read:deployments")
    async def audit() -> dict[str, bool]:
        return {"audit": True}

    if guard:
        M2MGuard(app)
    return app


def dependency_app(settings: GuardSettings | None, *, middleware: bool = False,
                   **guard_options: Any) -> FastAPI:
    """The dependency form on sync and async path operations with FastAPI's parameters."""
    app = FastAPI()
    if middleware:
        app.add_middleware(M2MGuardMiddleware, settings=settings)

    @app.get("/items/{item_id}")
    async def read_item(item_id: int,
                        token: Annotated[AccessToken, RequireScopes("read:deployments")],
                        q: str | None = None) -> dict[str, Any]:
        return {"item_id": item_id, "q": q, "client_id": token.client_id,
                "current": current_token() is token}

    @app.post("/items/{item_id}", status_code=202)
    def write_item(item_id: int, deployment: Deployment, request: Request,
                   token: Annotated[AccessToken, RequireScopes("deploy:applications")],
                   dry_run: bool = False) -> dict[str, Any]:  # sync: runs in a thread
        return {"item_id": item_id, "service": deployment.service, "dry_run": dry_run,
                "user": request.user.display_name, "auth": sorted(request.auth.scopes),
                "current": current_token() is token}

    @app.get("/admin", dependencies=[RequireScopes("admin:platform")])
    def admin() -> dict[str, bool]:
        return {"admin": True}

    @app.get("/any")
    async def any_token(token: M2MToken) -> dict[str, Any]:
        return {"scopes": sorted(token.scopes)}

    @app.get("/security")
    async def with_security(token: Annotated[AccessToken, RequireScopes(
            "read:deployments", "deploy:applications")]) -> dict[str, str | None]:
        return {"client_id": token.client_id}

    @app.get("/raises")
    async def raises(token: M2MToken) -> None:
        raise InsufficientScope(["billing:write"])

    @app.get("/health")
    async def health() -> dict[str, bool]:
        return {"ok": True}

    M2MGuard(app, settings if not middleware else None, **guard_options)
    return app


@pytest.fixture
def count_verifiers(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count `TokenVerifier` constructions, `verify` calls and `aclose` calls (the real
    methods still run)."""
    counts = {"created": 0, "verify": 0, "aclose": 0}
    init, verify, aclose = TokenVerifier.__init__, TokenVerifier.verify, TokenVerifier.aclose

    def counting_init(self: TokenVerifier, *args: Any, **kwargs: Any) -> None:
        counts["created"] += 1
        init(self, *args, **kwargs)

    async def counting_verify(self: TokenVerifier, token: str) -> AccessToken:
        counts["verify"] += 1
        return await verify(self, token)

    async def counting_aclose(self: TokenVerifier) -> None:
        counts["aclose"] += 1
        await aclose(self)

    monkeypatch.setattr(TokenVerifier, "__init__", counting_init)
    monkeypatch.setattr(TokenVerifier, "verify", counting_verify)
    monkeypatch.setattr(TokenVerifier, "aclose", counting_aclose)
    return counts


# -- middleware + require_scopes -----------------------------------------------------------

@pytest.mark.parametrize("guard", [False, True], ids=["middleware-only", "with-M2MGuard"])
def test_decorator_keeps_fastapi_parameters(issuer: KeySetServer, settings: GuardSettings,
                                            guard: bool) -> None:
    with TestClient(decorated_app(settings, guard=guard)) as client:
        token = issuer.mint()
        read = client.get("/items/7?q=hello", headers=bearer(token))
        write = client.post("/items/8?dry_run=true", headers=bearer(token),
                            json={"service": "billing", "version": "1.5.0"})
        invalid_body = client.post("/items/8", headers=bearer(token), json={"service": 1})
        bad_path = client.get("/items/seven", headers=bearer(token))
    assert read.status_code == 200, read.text
    assert read.json() == {"item_id": 7, "q": "hello", "client_id": CLIENT_ID}
    assert write.status_code == 202, write.text
    assert write.json() == {"item_id": 8, "service": "billing", "dry_run": True,
                            "user": CLIENT_ID, "organization_id": "org_59615193906282635"}
    assert invalid_body.status_code == 422  # FastAPI still validates the body
    assert bad_path.status_code == 422  # and the path parameter


@pytest.mark.parametrize("guard", [False, True], ids=["middleware-only", "with-M2MGuard"])
def test_decorator_refusals(issuer: KeySetServer, settings: GuardSettings, guard: bool) -> None:
    with TestClient(decorated_app(settings, guard=guard)) as client:
        missing = client.get("/items/7")
        sync_403 = client.get("/admin", headers=bearer(issuer.mint()))
        async_403 = client.get("/items/7", headers=bearer(issuer.mint(scopes=["other"])))
        any_of = client.get("/audit", headers=bearer(issuer.mint(scopes=["audit:read"])))
    assert missing.status_code == 401
    assert missing.json() == {"error": "missing_token",
                              "error_description": "A bearer token is required."}
    assert sync_403.status_code == 403
    assert sync_403.headers["www-authenticate"].endswith('scope="admin:platform"')
    assert sync_403.json()["error"] == "insufficient_scope"
    assert async_403.status_code == 403
    assert async_403.json()["scope"] == "read:deployments"
    assert any_of.status_code == 200


# -- dependencies ----------------------------------------------------------------------------

@pytest.mark.parametrize("middleware", [False, True], ids=["dependency-only", "with-middleware"])
def test_dependency_keeps_fastapi_parameters(issuer: KeySetServer, settings: GuardSettings,
                                             middleware: bool) -> None:
    with TestClient(dependency_app(settings, middleware=middleware)) as client:
        token = issuer.mint()
        read = client.get("/items/7?q=hello", headers=bearer(token))
        write = client.post("/items/8?dry_run=true", headers=bearer(token),
                            json={"service": "billing", "version": "1.5.0"})
        invalid_body = client.post("/items/8", headers=bearer(token), json={"service": 1})
        any_token = client.get("/any", headers=bearer(issuer.mint(scopes=["x:y"])))
        both = client.get("/security", headers=bearer(token))
    assert read.status_code == 200, read.text
    assert read.json() == {"item_id": 7, "q": "hello", "client_id": CLIENT_ID, "current": True}
    assert write.status_code == 202, write.text
    assert write.json() == {"item_id": 8, "service": "billing", "dry_run": True,
                            "user": CLIENT_ID,
                            "auth": ["deploy:applications", "read:deployments"],
                            "current": True}
    assert invalid_body.status_code == 422
    assert any_token.json() == {"scopes": ["x:y"]}
    assert both.status_code == 200


@pytest.mark.parametrize("middleware", [False, True], ids=["dependency-only", "with-middleware"])
def test_dependency_refusals_come_before_body_validation(
        issuer: KeySetServer, settings: GuardSettings, middleware: bool) -> None:
    with TestClient(dependency_app(settings, middleware=middleware)) as client:
        missing = client.post("/items/8", json={"service": 1})
        lacking = client.post("/items/8", json={"service": 1},
                              headers=bearer(issuer.mint(scopes=["read:deployments"])))
        sync_403 = client.get("/admin", headers=bearer(issuer.mint()))
        two = client.get("/security", headers=bearer(issuer.mint(scopes=["read:deployments"])))
        raised = client.get("/raises", headers=bearer(issuer.mint()))
        public = client.get("/health", headers={"Authorization": "Bearer a b"})
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == 'Bearer realm="api"'
    assert lacking.status_code == 403
    assert lacking.json()["scope"] == "deploy:applications"
    assert sync_403.status_code == 403
    assert sync_403.json()["scope"] == "admin:platform"
    assert two.status_code == 403
    assert two.json()["scope"] == "read:deployments deploy:applications"
    # a GuardError raised in a path operation: rendered per the contract, not {"detail": ...}
    assert raised.status_code == 403
    assert raised.json() == {"error": "insufficient_scope", "scope": "billing:write",
                             "error_description": "The access token lacks the scope: "
                                                  "billing:write"}
    # without middleware a route with no token dependency is public, whatever the header
    assert public.status_code == (200 if not middleware else 400)


def test_required_false_middleware_then_dependency_demands_a_token(
        issuer: KeySetServer, settings: GuardSettings) -> None:
    app = FastAPI()
    app.add_middleware(M2MGuardMiddleware, settings=settings.replace(required=False))

    @app.get("/optional")
    async def optional() -> dict[str, bool]:
        return {"token": current_token() is not None}

    @app.get("/needs")
    async def needs(token: M2MToken) -> dict[str, bool]:
        return {"token": True}

    M2MGuard(app)
    with TestClient(app) as client:
        assert client.get("/optional").json() == {"token": False}
        refused = client.get("/needs")
        assert client.get("/needs", headers=bearer(issuer.mint())).status_code == 200
    assert refused.status_code == 401
    assert refused.json()["error"] == "missing_token"


def test_require_scopes_marker_refuses_whitespace_at_definition() -> None:
    with pytest.raises(ValueError, match="separate arguments"):
        RequireScopes("read:deployments deploy:applications")
    with pytest.raises(ValueError, match="at least one"):
        RequireScopes()


def test_dependency_without_guard_or_middleware_says_what_to_do(
        issuer: KeySetServer) -> None:
    app = FastAPI()

    @app.get("/needs")
    async def needs(token: M2MToken) -> dict[str, bool]:
        return {"token": True}

    with TestClient(app) as client, pytest.raises(RuntimeError, match=r"M2MGuard\(app"):
        client.get("/needs", headers=bearer(issuer.mint()))


def test_guard_connects_one_app(settings: GuardSettings) -> None:
    app = FastAPI()
    guard = M2MGuard(app, settings)
    with pytest.raises(RuntimeError, match="one app"):
        guard.init_app(FastAPI())
    with pytest.raises(RuntimeError, match="already has"):
        M2MGuard(app, settings)
    with pytest.raises(ValueError, match="not both"):
        M2MGuard(settings=settings, verifier=TokenVerifier(settings.replace(realm="x")))


def test_settings_come_from_the_environment(issuer: KeySetServer,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("M2M_GUARD_ISSUER", issuer.url)
    monkeypatch.setenv("M2M_GUARD_AUDIENCE", "deployment-api")
    monkeypatch.setenv("M2M_GUARD_REALM", "deployments")
    with TestClient(create_app()) as client:
        ok = client.get("/deployments", headers=bearer(issuer.mint()))
        refused = client.get("/deployments")
    assert ok.status_code == 200
    assert refused.headers["www-authenticate"] == 'Bearer realm="deployments"'


# -- one verifier per app, closed by the lifespan ---------------------------------------------

def test_dependency_only_app_has_one_verifier_closed_at_shutdown(
        issuer: KeySetServer, settings: GuardSettings, count_verifiers: dict[str, int]) -> None:
    app = dependency_app(settings)
    with TestClient(app) as client:
        assert count_verifiers["created"] == 1  # made and warmed up at startup
        assert issuer.requests["/keys"] == 1
        for number in range(20):
            response = client.get(f"/items/{number}", headers=bearer(issuer.mint()))
            assert response.status_code == 200
        assert count_verifiers == {"created": 1, "verify": 20, "aclose": 0}
    assert count_verifiers["aclose"] == 1
    assert issuer.requests["/keys"] == 1
    # a second run of the same app (a restart) gets a fresh verifier, closed again
    with TestClient(app) as client:
        assert client.get("/items/1", headers=bearer(issuer.mint())).status_code == 200
    assert count_verifiers["created"] == 2
    assert count_verifiers["aclose"] == 2


def test_without_lifespan_the_verifier_is_made_once_on_first_use(
        issuer: KeySetServer, settings: GuardSettings, count_verifiers: dict[str, int]) -> None:
    client = TestClient(dependency_app(settings))  # not entered: no lifespan events
    assert count_verifiers["created"] == 0
    for number in range(5):
        assert client.get(f"/items/{number}", headers=bearer(issuer.mint())).status_code == 200
    assert count_verifiers["created"] == 1
    assert issuer.requests["/keys"] == 1


def test_with_middleware_the_dependency_reuses_its_token_and_verifier(
        issuer: KeySetServer, settings: GuardSettings, count_verifiers: dict[str, int]) -> None:
    app = dependency_app(settings, middleware=True)
    guard = app.state.m2m_guard
    with TestClient(app) as client:
        for number in range(10):
            response = client.post(f"/items/{number}", headers=bearer(issuer.mint()),
                                   json={"service": "billing", "version": "1"})
            assert response.status_code == 202
        assert guard.settings is settings  # taken from the middleware
        assert guard.verifier.settings is settings
    # one verifier (the middleware's), one verification per request, closed once (by its owner)
    assert count_verifiers == {"created": 1, "verify": 10, "aclose": 1}
    assert issuer.requests["/keys"] == 1


def test_a_shared_verifier_is_not_closed(issuer: KeySetServer, settings: GuardSettings,
                                         count_verifiers: dict[str, int]) -> None:
    verifier = TokenVerifier(settings)
    app = FastAPI()

    @app.get("/needs")
    async def needs(token: M2MToken) -> dict[str, bool]:
        return {"token": True}

    M2MGuard(app, verifier=verifier)
    with TestClient(app) as client:
        assert client.get("/needs", headers=bearer(issuer.mint())).status_code == 200
    assert count_verifiers["aclose"] == 0
    assert count_verifiers["created"] == 1


def test_startup_survives_an_issuer_that_is_down(issuer: KeySetServer,
                                                 make_settings: Callable[..., GuardSettings],
                                                 caplog: pytest.LogCaptureFixture) -> None:
    settings = make_settings(http_timeout=0.5)
    token = issuer.mint()
    issuer.stop()
    try:
        with TestClient(dependency_app(settings)) as client:
            down = client.get("/items/1", headers=bearer(token))
    finally:
        issuer.start()
    assert "could not warm up key sets" in caplog.text
    assert down.status_code == 503
    assert down.json()["error"] == "temporarily_unavailable"


# -- errors identical to the ASGI middleware --------------------------------------------------

def _refusal_view(response: httpx.Response) -> tuple[Any, ...]:
    headers = {name: value for name, value in response.headers.items()
               if name not in ("date", "server")}
    return response.status_code, headers, response.content


@pytest.fixture
def refusal_requests(issuer: KeySetServer) -> list[tuple[str, dict[str, str]]]:
    import time
    now = int(time.time())
    return [
        ("/deployments", {}),
        ("/deployments", {"Authorization": "Basic dXNlcjpwYXNz"}),
        ("/deployments", {"Authorization": "Bearer a b"}),
        ("/deployments", {"Authorization": "Bearer"}),
        ("/deployments?access_token=abc", {}),
        ("/deployments", bearer("abc.def")),
        ("/deployments", bearer(issuer.mint(aud=["billing-api"]))),
        ("/deployments", bearer(issuer.mint(iat=now - 7200, nbf=now - 7200, exp=now - 3600))),
        ("/deployments", bearer(issuer.mint(scopes=["deploy:applications"]))),
        ("/deployments", bearer("a" * 20000)),
    ]


@pytest.mark.parametrize("realm", ["api", "deployments"])
def test_refusals_are_byte_identical_to_the_asgi_middleware(
        settings: GuardSettings, refusal_requests: list[tuple[str, dict[str, str]]],
        realm: str) -> None:
    settings = settings.replace(realm=realm)
    app = create_app(settings)
    with TestClient(deployment_app(settings)) as starlette, TestClient(app) as fastapi:
        for path, headers in refusal_requests:
            expected = starlette.get(path, headers=headers)
            got = fastapi.get(path, headers=headers)
            assert expected.status_code >= 400
            assert _refusal_view(got) == _refusal_view(expected), (path, headers)


def test_issuer_unavailable_is_identical_too(issuer: KeySetServer,
                                             make_settings: Callable[..., GuardSettings]) -> None:
    settings = make_settings(http_timeout=0.5)
    token = issuer.mint()
    issuer.stop()
    try:
        with TestClient(deployment_app(settings)) as starlette, \
                TestClient(create_app(settings)) as fastapi:
            expected = starlette.get("/deployments", headers=bearer(token))
            got = fastapi.get("/deployments", headers=bearer(token))
    finally:
        issuer.start()
    assert expected.status_code == 503
    assert "retry-after" in got.headers
    assert _refusal_view(got) == _refusal_view(expected)


def test_two_authorization_headers_are_refused(issuer: KeySetServer,
                                               settings: GuardSettings) -> None:
    with TestClient(create_app(settings)) as client:
        response = client.get("/deployments", headers=[
            ("Authorization", f"Bearer {issuer.mint()}"),
            ("Authorization", f"Bearer {issuer.mint()}")])
    assert response.status_code == 400
    assert response.json()["error_description"] == (
        "The request has more than one Authorization header.")


# -- the example under a real server ------------------------------------------------------------

def test_example_end_to_end_under_uvicorn(issuer: KeySetServer, settings: GuardSettings) -> None:
    issuer.discovery_extra["token_endpoint"] = issuer.url + "/oauth2/v1/token"
    with uvicorn_server(create_app(settings.replace(public_paths=("/health",)))) as port, \
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
        token = issuer.mint()
        listed = client.get("/deployments", headers=bearer(token))
        deployed = client.post("/deployments", headers=bearer(token),
                               json={"service": "billing", "version": "1.5.0"})
        audit = client.get("/admin/audit", headers=bearer(token))
        missing = client.get("/deployments")
        health = client.get("/health")
        schema = client.get("/openapi.json").json()
        docs = client.get("/docs")
    assert listed.status_code == 200
    assert listed.json()["client_id"] == CLIENT_ID
    assert deployed.status_code == 202
    assert deployed.json()["requested_by"] == CLIENT_ID
    assert audit.status_code == 403
    assert audit.headers["www-authenticate"].endswith('scope="admin:platform"')
    assert missing.status_code == 401
    assert missing.json()["error"] == "missing_token"
    assert health.json() == {"status": "ok"}
    flow = schema["components"]["securitySchemes"]["OAuth2ClientCredentials"]["flows"]
    assert flow["clientCredentials"]["tokenUrl"] == issuer.url + "/oauth2/v1/token"
    assert docs.status_code == 200
    assert "/openapi.json" in docs.text
    assert issuer.requests["/keys"] == 1  # warmed up once at startup, then cached


def test_m2m_token_is_the_dependency_behind_the_markers() -> None:
    marker = RequireScopes("read:deployments")
    assert marker.dependency is m2m_token
    assert list(marker.scopes) == ["read:deployments"]


def test_websocket_route_with_the_dependency(issuer: KeySetServer,
                                             settings: GuardSettings) -> None:
    app = FastAPI()

    @app.websocket("/events")
    async def events(websocket: WebSocket,
                     token: Annotated[AccessToken, RequireScopes("read:deployments")]) -> None:
        await websocket.accept()
        await websocket.send_json({"client_id": token.client_id})
        await websocket.close()

    M2MGuard(app, settings)
    with TestClient(app) as client:
        with client.websocket_connect("/events", headers=bearer(issuer.mint())) as socket:
            assert socket.receive_json() == {"client_id": CLIENT_ID}
        for headers, reason in (({}, "missing_token"),
                                (bearer(issuer.mint(scopes=["x:y"])), "insufficient_scope")):
            with pytest.raises(WebSocketDisconnect) as denied, \
                    client.websocket_connect("/events", headers=headers):
                pass
            assert (denied.value.code, denied.value.reason) == (1008, reason)


DOCS = (Path(__file__).resolve().parents[1] / "docs" / "fastapi.md").read_text(encoding="utf-8")
DOC_SNIPPETS = re.findall(r"```python\n(.*?)```", DOCS, flags=re.DOTALL)


def test_docs_snippets_run(issuer: KeySetServer, monkeypatch: pytest.MonkeyPatch) -> None:
    assert len(DOC_SNIPPETS) == 2
    monkeypatch.setenv("M2M_GUARD_ISSUER", issuer.url)
    monkeypatch.setenv("M2M_GUARD_AUDIENCE", "deployment-api")
    complete: dict[str, Any] = {"__name__": "docs_fastapi"}
    exec(compile(DOC_SNIPPETS[0], "docs/fastapi.md", "exec"), complete)
    token = bearer(issuer.mint())
    with TestClient(complete["app"]) as client:
        assert client.get("/deployments", headers=token).status_code == 200
        assert client.post("/deployments", headers=token,
                           json={"service": "billing", "version": "1"}).status_code == 202
        assert client.get("/admin/audit", headers=token).status_code == 403
        assert client.get("/health").status_code == 200
        flow = client.get("/openapi.json").json()["components"]["securitySchemes"][
            "OAuth2ClientCredentials"]["flows"]["clientCredentials"]
    assert flow["scopes"]["deploy:applications"] == "Start a deployment"
    with_middleware: dict[str, Any] = {"__name__": "docs_fastapi_middleware"}
    exec(compile(DOC_SNIPPETS[1], "docs/fastapi.md", "exec"), with_middleware)
    schema = with_middleware["app"].openapi()
    assert schema["paths"]["/audit"]["get"]["security"] == [
        {"OAuth2ClientCredentials": ["audit:read"]},
        {"OAuth2ClientCredentials": ["admin:platform"]}]


def test_public_path_under_middleware_uses_the_middleware_verifier(
        issuer: KeySetServer, settings: GuardSettings, count_verifiers: dict[str, int]) -> None:
    """A token dependency on a path the middleware leaves public: the guard verifies it, with
    the middleware's verifier; `require_scopes` then sees that token too."""
    app = FastAPI()
    app.add_middleware(M2MGuardMiddleware,
                       settings=settings.replace(public_paths=("/public/*",)))

    @app.get("/public/report")
    @require_scopes("deploy:applications")
    def report(token: Annotated[AccessToken, RequireScopes("read:deployments")]) -> dict[str, Any]:
        return {"client_id": token.client_id, "current": current_token() is token}

    M2MGuard(app)
    with TestClient(app) as client:
        ok = client.get("/public/report", headers=bearer(issuer.mint()))
        missing = client.get("/public/report")
        lacking = client.get("/public/report",
                             headers=bearer(issuer.mint(scopes=["read:deployments"])))
    assert ok.json() == {"client_id": CLIENT_ID, "current": True}
    assert missing.status_code == 401
    assert lacking.status_code == 403
    assert lacking.json()["scope"] == "deploy:applications"
    assert count_verifiers["created"] == 1
    assert issuer.requests["/keys"] == 1


@pytest.mark.parametrize("same", [True, False], ids=["same-settings", "other-settings"])
def test_guard_shares_the_middleware_verifier_only_for_the_same_settings(
        issuer: KeySetServer, settings: GuardSettings, count_verifiers: dict[str, int],
        same: bool) -> None:
    app = FastAPI()
    app.add_middleware(M2MGuardMiddleware, settings=settings.replace(public_paths=("/p",)))

    @app.get("/p")
    async def public(token: M2MToken) -> dict[str, bool]:
        return {"ok": True}

    guard_settings = settings.replace(public_paths=("/p",) if same else ("/other",))
    M2MGuard(app, guard_settings)
    with TestClient(app) as client:
        assert client.get("/p", headers=bearer(issuer.mint())).status_code == 200
        assert client.app.state.m2m_guard.verifier.settings == guard_settings  # type: ignore
    assert count_verifiers["created"] == (1 if same else 2)
    assert count_verifiers["aclose"] == (1 if same else 2)
