"""`M2MGuardMiddleware` as a pure ASGI middleware: where the token lands, the decorators, errors
raised by endpoints, websockets, lifespan, FastAPI, and a real uvicorn server over loopback."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import httpx
import pytest
import websockets.exceptions as exceptions
import websockets.sync.client as ws_sync
from starlette.applications import Starlette
from starlette.authentication import UnauthenticatedUser, requires
from starlette.endpoints import HTTPEndpoint
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocket

from m2m_guard import (
    AccessToken,
    GuardSettings,
    InsufficientScope,
    InvalidToken,
    MissingToken,
    TokenVerifier,
    current_token,
    require_any_scope,
    require_scopes,
)
from m2m_guard.asgi import M2MGuardMiddleware
from m2m_guard.local_issuer import KeySetServer
from m2m_guard.starlette import ClientUser, exception_handlers

from .conftest import deployment_app
from .packages import require_package
from .servers import uvicorn_server

CLIENT_ID = "m2morg_68315758685323697"
MISSING_BODY = {"error": "missing_token", "error_description": "A bearer token is required."}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- an app that shows what the endpoint sees ------------------------------------------------

def _identity(user: Any) -> str | None:
    try:
        return getattr(user, "identity", None)
    except NotImplementedError:  # older Starlette: UnauthenticatedUser has no identity
        return None


def _describe(request: Request) -> dict[str, Any]:
    token = current_token()
    in_scope = request.scope.get("m2m_guard.token")
    return {
        "token_is_current": token is in_scope,
        "has_token": isinstance(in_scope, AccessToken),
        "client_id": token.client_id if token else None,
        "auth_scopes": sorted(request.auth.scopes),
        "user_type": type(request.user).__name__,
        "authenticated": request.user.is_authenticated,
        "display_name": request.user.display_name,
        "identity": _identity(request.user),
        "user_token_is_token": getattr(request.user, "token", None) is token,
    }


async def whoami_async(request: Request) -> JSONResponse:
    return JSONResponse(_describe(request))


def whoami_sync(request: Request) -> JSONResponse:
    return JSONResponse(_describe(request))


@requires("read:deployments")
async def starlette_requires(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


@requires("admin:platform")
async def starlette_requires_admin(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


@require_scopes("read:deployments")
async def decorated(request: Request) -> JSONResponse:
    return JSONResponse({"decorated": True, "client_id": current_token().client_id})  # type: ignore[union-attr]


async def raises_insufficient(request: Request) -> JSONResponse:
    raise InsufficientScope(("x",))


async def raises_invalid(request: Request) -> JSONResponse:
    raise InvalidToken("Revoked by the application.", reason="revoked")


def raises_missing_sync(request: Request) -> JSONResponse:
    raise MissingToken()


async def raises_after_start(request: Request) -> StreamingResponse:
    async def body() -> Any:
        yield b"partial"
        raise InvalidToken("too late")

    return StreamingResponse(body())


class DeploymentsEndpoint(HTTPEndpoint):
    @require_scopes("read:deployments")
    async def get(self, request: Request) -> JSONResponse:
        return JSONResponse({"method": "get", "client_id": current_token().client_id})  # type: ignore[union-attr]

    @require_scopes("admin:platform")
    def post(self, request: Request) -> JSONResponse:
        return JSONResponse({"method": "post"})

    @require_any_scope("audit:read", "deploy:applications")
    def put(self, request: Request) -> JSONResponse:
        return JSONResponse({"method": "put", "client_id": current_token().client_id})  # type: ignore[union-attr]


async def ws_echo(websocket: WebSocket) -> None:
    token = current_token()
    await websocket.accept()
    assert token is websocket.scope["m2m_guard.token"]
    await websocket.send_json({"client_id": token.client_id if token else None,
                               "user": websocket.user.display_name})
    while True:
        text = await websocket.receive_text()
        if text == "bye":
            await websocket.close()
            return
        await websocket.send_text(text)


@require_scopes("admin:platform")
async def ws_admin(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text("admin")
    await websocket.close()


async def ws_refuses_after_reading_connect(websocket: WebSocket) -> None:
    """Reads the connect event itself, then refuses: the guard must not wait for another."""
    message = await websocket.receive()
    assert message["type"] == "websocket.connect"
    raise InsufficientScope(("admin:platform",))


ROUTES = [
    Route("/whoami", whoami_async),
    Route("/whoami-sync", whoami_sync),
    Route("/requires", starlette_requires),
    Route("/requires-admin", starlette_requires_admin),
    Route("/decorated", decorated),
    Route("/raise/insufficient", raises_insufficient),
    Route("/raise/invalid", raises_invalid),
    Route("/raise/missing", raises_missing_sync),
    Route("/raise/late", raises_after_start),
    Route("/endpoint", DeploymentsEndpoint),
    WebSocketRoute("/ws", ws_echo),
    WebSocketRoute("/ws-admin", ws_admin),
    WebSocketRoute("/ws-late", ws_refuses_after_reading_connect),
]


def probe_app(settings: GuardSettings, **options: Any) -> Starlette:
    return Starlette(routes=ROUTES, middleware=[
        Middleware(M2MGuardMiddleware, settings=settings, **options)])


@pytest.fixture
def client(settings: GuardSettings) -> Iterator[TestClient]:
    with TestClient(probe_app(settings)) as c:
        yield c


# -- where the token lands -------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/whoami", "/whoami-sync"])
def test_token_in_scope_contextvar_auth_and_user(client: TestClient, issuer: KeySetServer,
                                                 path: str) -> None:
    response = client.get(path, headers=bearer(issuer.mint()))
    assert response.status_code == 200
    assert response.json() == {
        "token_is_current": True, "has_token": True, "client_id": CLIENT_ID,
        "auth_scopes": ["deploy:applications", "read:deployments"],
        "user_type": "ClientUser", "authenticated": True, "display_name": CLIENT_ID,
        "identity": CLIENT_ID, "user_token_is_token": True,
    }


async def public_probe(request: Request) -> JSONResponse:
    return JSONResponse({"token": current_token(), "keys": sorted(
        key for key in request.scope if key in ("auth", "user") or key.startswith("m2m_guard"))})


def test_public_path_is_passed_untouched(settings: GuardSettings, issuer: KeySetServer) -> None:
    """The contract: public paths pass through untouched: nothing is added to the scope, even when
    a valid token is sent (the guard does not look at it)."""
    app = Starlette(routes=[Route("/public", public_probe)], middleware=[
        Middleware(M2MGuardMiddleware, settings=settings.replace(public_paths=("/public",)))])
    with TestClient(app) as client:
        for headers in ({}, bearer(issuer.mint())):
            response = client.get("/public", headers=headers)
            assert response.status_code == 200
            assert response.json() == {"token": None, "keys": []}


def test_current_token_is_none_outside_requests(client: TestClient, issuer: KeySetServer) -> None:
    assert client.get("/whoami", headers=bearer(issuer.mint())).status_code == 200
    assert current_token() is None


def test_starlette_requires_works_with_token_scopes(client: TestClient,
                                                    issuer: KeySetServer) -> None:
    token = issuer.mint()
    assert client.get("/requires", headers=bearer(token)).json() == {"ok": True}
    denied = client.get("/requires-admin", headers=bearer(token))
    assert denied.status_code == 403  # Starlette's own HTTPException(403)
    allowed = client.get("/requires-admin", headers=bearer(issuer.mint(scopes=["admin:platform"])))
    assert allowed.json() == {"ok": True}


def test_client_user_repr_and_fallbacks(issuer: KeySetServer, settings: GuardSettings) -> None:
    verifier = TokenVerifier(settings)
    try:
        token = verifier.verify_sync(issuer.mint(client_id=None, sub="svc_fallback"))
        user = ClientUser(token)
        assert user.is_authenticated is True
        assert user.display_name == user.identity == "svc_fallback"
        assert repr(user) == "ClientUser('svc_fallback')"
    finally:
        verifier.close()


# -- required=False ---------------------------------------------------------------------------

def test_optional_guard_lets_tokenless_requests_through(settings: GuardSettings,
                                                        issuer: KeySetServer) -> None:
    with TestClient(probe_app(settings.replace(required=False))) as client:
        response = client.get("/whoami")
        assert response.status_code == 200
        assert response.json() == {
            "token_is_current": True, "has_token": False, "client_id": None, "auth_scopes": [],
            "user_type": "UnauthenticatedUser", "authenticated": False, "display_name": "",
            "identity": _identity(UnauthenticatedUser()),  # Starlette's, whatever it says
            "user_token_is_token": True,  # None is None: no token anywhere
        }
        # a token that is sent is still verified
        bad = client.get("/whoami", headers=bearer(issuer.mint(aud=["other"])))
        assert bad.status_code == 401
        assert bad.headers["www-authenticate"] == (
            'Bearer realm="api", error="invalid_token", '
            'error_description="The token is not meant for this audience."')
        malformed = client.get("/whoami", headers={"Authorization": "Bearer"})
        assert malformed.status_code == 401
        assert malformed.json()["error"] == "invalid_token"
        good = client.get("/whoami", headers=bearer(issuer.mint()))
        assert good.json()["client_id"] == CLIENT_ID
        # a decorated endpoint still demands a token: 401 missing_token from the decorator
        missing = client.get("/decorated")
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == 'Bearer realm="api"'
        assert missing.json() == MISSING_BODY
        # Starlette's requires() answers 403 for the unauthenticated user
        assert client.get("/requires").status_code == 403


# -- GuardError raised by the app --------------------------------------------------------------

def assert_lacks_scope_x(response: Any, realm: str) -> None:
    """The exact 403 for an endpoint that raised InsufficientScope(("x",))."""
    assert response.status_code == 403
    assert response.headers["www-authenticate"] == (
        f'Bearer realm="{realm}", error="insufficient_scope", '
        'error_description="The access token lacks the scope: x", scope="x"')
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": "insufficient_scope",
                               "error_description": "The access token lacks the scope: x",
                               "scope": "x"}


def test_guard_error_raised_in_endpoint_is_rendered(client: TestClient,
                                                    issuer: KeySetServer) -> None:
    token = issuer.mint()
    assert_lacks_scope_x(client.get("/raise/insufficient", headers=bearer(token)), "api")
    response = client.get("/raise/invalid", headers=bearer(token))
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == (
        'Bearer realm="api", error="invalid_token", '
        'error_description="Revoked by the application."')
    response = client.get("/raise/missing", headers=bearer(token))  # sync endpoint
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="api"'
    assert response.json() == MISSING_BODY


def test_guard_error_after_response_started_is_not_rendered(settings: GuardSettings,
                                                            issuer: KeySetServer) -> None:
    """Once headers are out, a second response would break the protocol: the error propagates
    (alone, or as the one error of an exception group: older Starlette streams a body in a task
    group and does not unwrap it)."""
    with TestClient(probe_app(settings)) as client, pytest.raises(Exception) as raised:
        client.get("/raise/late", headers=bearer(issuer.mint()))
    error: BaseException = raised.value
    while type(error).__name__ == "ExceptionGroup" and len(error.exceptions) == 1:
        error = error.exceptions[0]
    assert isinstance(error, InvalidToken) and str(error) == "too late"


def test_outer_middleware_with_starlette_exception_handlers(
        issuer: KeySetServer, make_settings: Callable[..., GuardSettings]) -> None:
    settings = make_settings(realm="deployments")
    inner = Starlette(routes=ROUTES, exception_handlers=exception_handlers)
    app = M2MGuardMiddleware(inner, settings=settings)
    with TestClient(app) as client:
        token = issuer.mint()
        assert_lacks_scope_x(client.get("/raise/insufficient", headers=bearer(token)),
                             "deployments")
        response = client.post("/endpoint", headers=bearer(token))
        assert response.status_code == 403
        assert response.json()["scope"] == "admin:platform"
        response = client.get("/raise/missing", headers=bearer(token))
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == 'Bearer realm="deployments"'
        # the outer guard itself still answers requests without a token
        response = client.get("/whoami")
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == 'Bearer realm="deployments"'
        assert client.get("/whoami", headers=bearer(token)).json()["client_id"] == CLIENT_ID


# -- the decorators ---------------------------------------------------------------------------

def test_decorators_keep_signature_and_kind() -> None:
    async def async_endpoint(request: Request, name: str, *, limit: int = 10) -> dict[str, Any]:
        """Docs."""
        return {}

    def sync_endpoint(request: Request, name: str, *, limit: int = 10) -> dict[str, Any]:
        return {}

    for decorator in (require_scopes("a"), require_scopes("a", "b"), require_any_scope("a", "b")):
        wrapped_async = decorator(async_endpoint)
        wrapped_sync = decorator(sync_endpoint)
        assert inspect.signature(wrapped_async) == inspect.signature(async_endpoint)
        assert inspect.signature(wrapped_sync) == inspect.signature(sync_endpoint)
        assert inspect.iscoroutinefunction(wrapped_async)
        assert not inspect.iscoroutinefunction(wrapped_sync)
        assert wrapped_async.__name__ == "async_endpoint"
        assert wrapped_async.__doc__ == "Docs."
        assert wrapped_async.__wrapped__ is async_endpoint  # type: ignore[attr-defined]


@pytest.mark.parametrize("decorator", [require_scopes, require_any_scope])
@pytest.mark.parametrize("scopes", [("a b",), ("",), (), (123,), ("a\tb",), ('a"b',),
                                    ("a\\b",), ("ok", "a b"), (None,), (b"read",)],
                         ids=["space", "empty", "none-given", "int", "tab", "quote", "backslash",
                              "second-bad", "None", "bytes"])
def test_decorators_refuse_bad_scopes_at_decoration_time(decorator: Any, scopes: tuple) -> None:
    with pytest.raises(ValueError):
        decorator(*scopes)


def test_decorator_without_guard_raises_missing_token() -> None:
    @require_scopes("a")
    def sync_endpoint() -> str:
        return "ran"

    with pytest.raises(MissingToken):
        sync_endpoint()


@pytest.mark.anyio
async def test_decorator_reads_the_context_token(issuer: KeySetServer,
                                                 settings: GuardSettings) -> None:
    from m2m_guard._core.context import reset_current_token, set_current_token

    verifier = TokenVerifier(settings)
    try:
        token = await verifier.verify(issuer.mint(scopes=["a"]))
    finally:
        await verifier.aclose()

    @require_scopes("a")
    async def needs_a() -> str:
        return "ran"

    @require_scopes("a", "b")
    async def needs_ab() -> str:
        return "ran"

    @require_any_scope("b", "a")
    def needs_b_or_a() -> str:
        return "ran"

    marker = set_current_token(token)
    try:
        assert await needs_a() == "ran"
        assert needs_b_or_a() == "ran"
        with pytest.raises(InsufficientScope) as info:
            await needs_ab()
        assert info.value.required == ("a", "b")
        assert info.value.status_code == 403
    finally:
        reset_current_token(marker)
    with pytest.raises(MissingToken):
        await needs_a()


def test_http_endpoint_methods_decorated(client: TestClient, issuer: KeySetServer) -> None:
    token = issuer.mint()
    assert client.get("/endpoint", headers=bearer(token)).json() == {"method": "get",
                                                                     "client_id": CLIENT_ID}
    post = client.post("/endpoint", headers=bearer(token))
    assert post.status_code == 403
    assert post.headers["www-authenticate"] == (
        'Bearer realm="api", error="insufficient_scope", '
        'error_description="The access token lacks the scope: admin:platform", '
        'scope="admin:platform"')
    assert client.put("/endpoint", headers=bearer(token)).json() == {"method": "put",
                                                                     "client_id": CLIENT_ID}
    denied = client.get("/endpoint", headers=bearer(issuer.mint(scopes=["audit:read"])))
    assert denied.status_code == 403
    assert denied.json()["scope"] == "read:deployments"


# -- websockets -------------------------------------------------------------------------------

def test_websocket_with_valid_token_connects_and_echoes(client: TestClient,
                                                        issuer: KeySetServer) -> None:
    with client.websocket_connect("/ws", headers=bearer(issuer.mint())) as ws:
        assert ws.receive_json() == {"client_id": CLIENT_ID, "user": CLIENT_ID}
        ws.send_text("ping")
        assert ws.receive_text() == "ping"
        ws.send_text("bye")


@pytest.mark.parametrize(("headers", "status", "challenge", "error"), [
    ({}, 401, 'Bearer realm="api"', "missing_token"),
    ({"Authorization": "Bearer"}, 401,
     'Bearer realm="api", error="invalid_token", error_description="The access token is '
     'malformed: the Authorization header has the Bearer scheme but no token."',
     "invalid_token"),
    ({"Authorization": "Bearer a.b.c"}, 401,
     'Bearer realm="api", error="invalid_token", '
     'error_description="The token header is not canonical base64url."', "invalid_token"),
])
def test_refused_websocket_gets_http_denial_response(client: TestClient, headers: dict[str, str],
                                                     status: int, challenge: str,
                                                     error: str) -> None:
    with pytest.raises(WebSocketDenialResponse) as info, \
            client.websocket_connect("/ws", headers=headers):
        pass  # pragma: no cover - never connected
    denial = info.value
    assert denial.status_code == status
    assert denial.headers["www-authenticate"] == challenge
    assert denial.headers["cache-control"] == "no-store"
    assert denial.json()["error"] == error


def test_websocket_scope_error_in_endpoint_is_denied(client: TestClient,
                                                     issuer: KeySetServer) -> None:
    with pytest.raises(WebSocketDenialResponse) as info, \
            client.websocket_connect("/ws-admin", headers=bearer(issuer.mint())):
        pass  # pragma: no cover
    assert info.value.status_code == 403
    assert info.value.json()["scope"] == "admin:platform"
    with client.websocket_connect(
            "/ws-admin", headers=bearer(issuer.mint(scopes=["admin:platform"]))) as ws:
        assert ws.receive_text() == "admin"


def test_websocket_refused_after_the_endpoint_read_connect(client: TestClient,
                                                           issuer: KeySetServer) -> None:
    with pytest.raises(WebSocketDenialResponse) as info, \
            client.websocket_connect("/ws-late", headers=bearer(issuer.mint())):
        pass  # pragma: no cover
    assert info.value.status_code == 403
    assert info.value.json()["scope"] == "admin:platform"


def _ws_scope(headers: list[tuple[bytes, bytes]], extensions: dict[str, Any]) -> dict[str, Any]:
    return {"type": "websocket", "asgi": {"version": "3.0"}, "scheme": "ws", "path": "/ws",
            "raw_path": b"/ws", "query_string": b"", "root_path": "", "headers": headers,
            "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 80), "subprotocols": [],
            "extensions": extensions}


async def _run_raw(settings: GuardSettings, scope: dict[str, Any]) -> tuple[list[dict[str, Any]],
                                                                           list[str]]:
    sent: list[dict[str, Any]] = []
    inner_calls: list[str] = []
    incoming = [{"type": "websocket.connect"}]

    async def receive() -> dict[str, Any]:
        if incoming:
            return incoming.pop(0)
        await asyncio.sleep(5)  # never reached: the guard must not wait for more
        raise AssertionError("guard waited for a second message")

    async def send(message: dict[str, Any]) -> None:
        sent.append(dict(message))

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        inner_calls.append(scope["type"])

    guard = M2MGuardMiddleware(inner, settings=settings)
    try:
        with anyio.fail_after(3):
            await guard(scope, receive, send)
    finally:
        await guard.verifier.aclose()
    return sent, inner_calls


@pytest.mark.anyio
async def test_raw_websocket_without_denial_extension_is_closed_1008(
        settings: GuardSettings) -> None:
    sent, inner_calls = await _run_raw(settings, _ws_scope([], {}))
    assert inner_calls == []
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": "missing_token"}]


@pytest.mark.anyio
async def test_raw_websocket_invalid_token_without_extension_is_closed_1008(
        settings: GuardSettings) -> None:
    sent, inner_calls = await _run_raw(
        settings, _ws_scope([(b"authorization", b"Bearer x.y.z")], {}))
    assert inner_calls == []
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": "invalid_token"}]


@pytest.mark.anyio
async def test_raw_websocket_with_denial_extension_gets_http_response(
        settings: GuardSettings) -> None:
    sent, inner_calls = await _run_raw(
        settings, _ws_scope([], {"websocket.http.response": {}}))
    assert inner_calls == []
    assert [m["type"] for m in sent] == ["websocket.http.response.start",
                                         "websocket.http.response.body"]
    assert sent[0]["status"] == 401
    headers = dict(sent[0]["headers"])
    assert headers[b"www-authenticate"] == b'Bearer realm="api"'
    assert headers[b"content-type"] == b"application/json"
    assert json.loads(sent[1]["body"]) == MISSING_BODY
    assert int(headers[b"content-length"]) == len(sent[1]["body"])


@pytest.mark.anyio
async def test_raw_http_refusal_messages(settings: GuardSettings) -> None:
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
             "scheme": "http", "path": "/x", "raw_path": b"/x", "query_string": b"",
             "root_path": "", "headers": [], "client": ("127.0.0.1", 5000),
             "server": ("127.0.0.1", 80)}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(dict(message))

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("the app must not run")

    guard = M2MGuardMiddleware(inner, settings=settings)
    await guard(scope, receive, send)
    await guard.verifier.aclose()
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 401
    assert (b"www-authenticate", b'Bearer realm="api"') in sent[0]["headers"]
    assert sent[1] == {"type": "http.response.body",
                       "body": json.dumps(MISSING_BODY, separators=(",", ":")).encode()}


@pytest.mark.anyio
async def test_other_scope_types_pass_through(settings: GuardSettings) -> None:
    seen: list[str] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    guard = M2MGuardMiddleware(inner, settings=settings)
    await guard({"type": "custom"}, None, None)  # type: ignore[arg-type]
    await guard.verifier.aclose()
    assert seen == ["custom"]


# -- lifespan ---------------------------------------------------------------------------------

def test_startup_warms_key_sets(issuer: KeySetServer, settings: GuardSettings) -> None:
    with TestClient(deployment_app(settings)) as client:
        assert issuer.requests["/.well-known/openid-configuration"] == 1
        assert issuer.requests["/keys"] == 1  # before the first request
        assert client.get("/deployments", headers=bearer(issuer.mint())).status_code == 200
        assert issuer.requests["/keys"] == 1  # the request used the warmed set


def test_without_lifespan_first_request_fetches(issuer: KeySetServer,
                                                settings: GuardSettings) -> None:
    client = TestClient(deployment_app(settings))  # no `with`: no lifespan events
    assert issuer.requests["/keys"] == 0
    assert client.get("/deployments", headers=bearer(issuer.mint())).status_code == 200
    assert issuer.requests["/keys"] == 1


def test_warm_up_failure_is_logged_not_fatal(issuer: KeySetServer, settings: GuardSettings,
                                             caplog: pytest.LogCaptureFixture) -> None:
    token = issuer.mint()
    issuer.stop()
    startup_ran: list[bool] = []
    with caplog.at_level(logging.WARNING, logger="m2m_guard"):
        app = deployment_app(settings)
        with TestClient(app) as client:
            startup_ran.append(True)
            response = client.get("/deployments", headers=bearer(token))
            assert response.status_code == 503
    assert startup_ran == [True]
    warnings = [r for r in caplog.records if "could not warm up" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert token not in caplog.text


def test_shutdown_closes_owned_verifier_only(issuer: KeySetServer,
                                             settings: GuardSettings) -> None:
    inner = Starlette(routes=ROUTES)
    guard = M2MGuardMiddleware(inner, settings=settings)
    with TestClient(guard) as client:
        assert client.get("/whoami", headers=bearer(issuer.mint())).status_code == 200
        assert guard.verifier.key_store.closed is False
    assert guard.verifier.key_store.closed is True

    shared = TokenVerifier(settings)
    guard = M2MGuardMiddleware(inner, verifier=shared)
    assert guard.settings is settings
    with TestClient(guard) as client:
        assert client.get("/whoami", headers=bearer(issuer.mint())).status_code == 200
    assert shared.key_store.closed is False  # not ours to close
    shared.close()


def test_settings_and_verifier_must_agree(settings: GuardSettings) -> None:
    verifier = TokenVerifier(settings)
    with pytest.raises(ValueError):
        M2MGuardMiddleware(Starlette(), settings=settings.replace(realm="x"), verifier=verifier)
    verifier.close()


def test_middleware_falls_back_to_environment(issuer: KeySetServer,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("M2M_GUARD_ISSUER", issuer.url)
    monkeypatch.setenv("M2M_GUARD_AUDIENCE", "deployment-api")
    monkeypatch.setenv("M2M_GUARD_REALM", "from-env")
    guard = M2MGuardMiddleware(Starlette(routes=ROUTES))
    assert guard.settings.realm == "from-env"
    with TestClient(guard) as client:
        assert client.get("/whoami").headers["www-authenticate"] == 'Bearer realm="from-env"'
        assert client.get("/whoami", headers=bearer(issuer.mint())).status_code == 200


# -- FastAPI ----------------------------------------------------------------------------------

def fastapi_app(settings: GuardSettings) -> Any:
    fastapi = require_package("fastapi")
    app = fastapi.FastAPI()
    app.add_middleware(M2MGuardMiddleware,
                       settings=settings.replace(public_paths=("/openapi.json", "/docs")))

    @app.get("/deployments/{name}")
    @require_scopes("read:deployments")
    async def get_deployment(name: str, limit: int = 10) -> dict[str, Any]:
        token = current_token()
        assert token is not None
        return {"name": name, "limit": limit, "client_id": token.client_id}

    @app.post("/deployments/{name}/deploy")
    @require_scopes("deploy:applications")
    def deploy(name: str, dry_run: bool = False) -> dict[str, Any]:
        token = current_token()
        assert token is not None
        return {"name": name, "dry_run": dry_run, "org": token.organization_id}

    @app.get("/admin/{item_id}")
    @require_any_scope("admin:platform", "audit:read")
    async def admin(item_id: int) -> dict[str, Any]:
        return {"item_id": item_id}

    @app.get("/me")
    async def me(request: Request) -> dict[str, Any]:
        return {"scopes": sorted(request.auth.scopes), "user": request.user.display_name}

    return app


def test_fastapi_path_operations(issuer: KeySetServer, settings: GuardSettings) -> None:
    app = fastapi_app(settings)
    with TestClient(app) as client:
        token = issuer.mint()
        response = client.get("/deployments/api-v1?limit=3", headers=bearer(token))
        assert response.status_code == 200
        assert response.json() == {"name": "api-v1", "limit": 3, "client_id": CLIENT_ID}
        response = client.post("/deployments/api-v1/deploy?dry_run=true", headers=bearer(token))
        assert response.json() == {"name": "api-v1", "dry_run": True,
                                   "org": "org_59615193906282635"}
        # FastAPI's own validation still runs on the kept signature
        invalid = client.get("/deployments/api-v1?limit=many", headers=bearer(token))
        assert invalid.status_code == 422
        assert invalid.json()["detail"][0]["loc"] == ["query", "limit"]
        # the guard and the decorators answer per the contract
        assert client.get("/deployments/api-v1").status_code == 401
        denied = client.get("/admin/7", headers=bearer(token))
        assert denied.status_code == 403
        assert denied.headers["www-authenticate"] == (
            'Bearer realm="api", error="insufficient_scope", error_description="The access '
            'token lacks one of the scopes: admin:platform audit:read", '
            'scope="admin:platform audit:read"')
        assert client.get("/admin/7", headers=bearer(issuer.mint(scopes=["audit:read"]))).json() \
            == {"item_id": 7}
        sync_denied = client.post("/deployments/x/deploy",
                                  headers=bearer(issuer.mint(scopes=["read:deployments"])))
        assert sync_denied.status_code == 403
        assert sync_denied.json()["scope"] == "deploy:applications"
        assert client.get("/me", headers=bearer(token)).json() == {
            "scopes": ["deploy:applications", "read:deployments"], "user": CLIENT_ID}


def test_fastapi_openapi_keeps_parameters(issuer: KeySetServer, settings: GuardSettings) -> None:
    app = fastapi_app(settings)
    with TestClient(app) as client:
        response = client.get("/openapi.json")  # a public path
        assert response.status_code == 200
        schema = response.json()
    get_params = {(p["name"], p["in"]) for p in
                  schema["paths"]["/deployments/{name}"]["get"]["parameters"]}
    assert get_params == {("name", "path"), ("limit", "query")}
    post_params = {(p["name"], p["in"]) for p in
                   schema["paths"]["/deployments/{name}/deploy"]["post"]["parameters"]}
    assert post_params == {("name", "path"), ("dry_run", "query")}
    admin = schema["paths"]["/admin/{item_id}"]["get"]["parameters"]
    assert admin[0]["name"] == "item_id" and admin[0]["schema"]["type"] == "integer"


# -- a real uvicorn server over loopback -----------------------------------------------------

def test_uvicorn_end_to_end(issuer: KeySetServer, settings: GuardSettings) -> None:
    with uvicorn_server(deployment_app(settings), ws="none") as port:
        base = f"http://127.0.0.1:{port}"
        assert issuer.requests["/keys"] == 1  # the lifespan warmed the key set
        with httpx.Client(base_url=base, timeout=5) as http:
            ok = http.get("/deployments", headers=bearer(issuer.mint()))
            assert ok.status_code == 200
            assert ok.json()["client_id"] == CLIENT_ID
            missing = http.get("/deployments")
            assert missing.status_code == 401
            assert missing.headers["www-authenticate"] == 'Bearer realm="api"'
            assert missing.json() == MISSING_BODY
            denied = http.get("/admin", headers=bearer(issuer.mint()))
            assert denied.status_code == 403
            assert denied.headers["www-authenticate"].endswith('scope="admin:platform"')
            posted = http.post("/deployments", headers=bearer(issuer.mint()))
            assert posted.json() == {"deployed": True, "organization_id": "org_59615193906282635"}
            two = http.get("/deployments", headers=[("Authorization", "Bearer a"),
                                                    ("Authorization", "Bearer b")])
            assert two.status_code == 400
            assert two.json()["error"] == "invalid_request"


def test_uvicorn_websocket_denial_and_echo(issuer: KeySetServer, settings: GuardSettings) -> None:
    with uvicorn_server(probe_app(settings), ws="websockets-sansio") as port:
        url = f"ws://127.0.0.1:{port}/ws"
        with pytest.raises(exceptions.InvalidStatus) as info:
            ws_sync.connect(url, open_timeout=5)
        assert info.value.response.status_code == 401
        assert info.value.response.headers["WWW-Authenticate"] == 'Bearer realm="api"'
        with ws_sync.connect(url, additional_headers=bearer(issuer.mint()),
                             open_timeout=5) as ws:
            assert json.loads(ws.recv(timeout=5)) == {"client_id": CLIENT_ID, "user": CLIENT_ID}
            ws.send("hello")
            assert ws.recv(timeout=5) == "hello"
            ws.send("bye")


def test_plain_text_app_unaffected_for_valid_token(issuer: KeySetServer,
                                                   settings: GuardSettings) -> None:
    """Responses of the app pass through byte for byte (no buffering, no header changes)."""
    async def text(request: Request) -> PlainTextResponse:
        return PlainTextResponse("x" * 100_000, headers={"X-App": "1"})

    app = Starlette(routes=[Route("/t", text)],
                    middleware=[Middleware(M2MGuardMiddleware, settings=settings)])
    with TestClient(app) as client:
        response = client.get("/t", headers=bearer(issuer.mint()))
    assert response.status_code == 200
    assert response.text == "x" * 100_000
    assert response.headers["x-app"] == "1"
    assert "www-authenticate" not in response.headers


def test_guard_error_raised_on_a_public_path_is_answered_not_a_500(
        make_settings: Callable[..., GuardSettings]) -> None:
    """A route under a public prefix that still demands scopes (a configuration slip) gets the
    contract's 401 from the guard, over http and websocket, instead of the server's 500."""

    @require_scopes("admin:platform")
    async def admin(request: Request) -> JSONResponse:
        return JSONResponse({"admin": True})

    async def closed_room(websocket: WebSocket) -> None:
        raise MissingToken()

    app = Starlette(
        routes=[Route("/open/admin", admin), WebSocketRoute("/open/room", closed_room)],
        middleware=[Middleware(M2MGuardMiddleware,
                               settings=make_settings(public_paths=("/open/*",)))],
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        answer = client.get("/open/admin")
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"] == 'Bearer realm="api"'
        assert answer.json() == MISSING_BODY
        with pytest.raises(WebSocketDenialResponse) as denied:
            with client.websocket_connect("/open/room"):
                pass
        assert denied.value.status_code == 401
