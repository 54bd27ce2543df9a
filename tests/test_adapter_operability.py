"""Operability in each adapter, beyond what the contract suite compares across frameworks: the
Django `health_view` and `operational_urls()` for projects without the middleware, FastAPI with
both the middleware and `M2MGuard`, Starlette's `exception_handlers` behind an outer middleware,
a refusal raised while a WSGI body is iterated, and the shared `endpoints.render_refusal`.
Each refusal must produce exactly one log line and one event."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import pytest
from django.test import Client, override_settings
from django.urls import path
from fastapi import FastAPI
from fastapi.testclient import TestClient as FastAPIClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient
from werkzeug.test import Client as WerkzeugClient

from m2m_guard import (
    AccessToken,
    GuardSettings,
    InsufficientScope,
    MissingToken,
    TokenVerifier,
    require_scopes,
)
from m2m_guard._core.endpoints import health_answer, render_refusal
from m2m_guard.asgi import M2MGuardMiddleware
from m2m_guard.events import Event
from m2m_guard.fastapi import M2MGuard, RequireScopes
from m2m_guard.local_issuer import KeySetServer
from m2m_guard.starlette import exception_handlers
from m2m_guard.wsgi import M2MGuardWSGIMiddleware
from tests.django_settings import URLs, setup_django

setup_django()

from m2m_guard.django import (  # noqa: E402  (needs Django configured)
    close_verifiers,
    get_verifier,
    health_view,
    operational_urls,
)

RESOURCE = "https://api.example.com"
DOC_URL = RESOURCE + "/.well-known/oauth-protected-resource"
HEALTH = "/.well-known/m2m-guard/health"
WITHOUT_GUARD_MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]


def _refusal_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "kind", None) == "refused"]


@pytest.fixture
def refusals(caplog: pytest.LogCaptureFixture) -> Callable[[], list[logging.LogRecord]]:
    caplog.set_level(logging.INFO, logger="m2m_guard")
    return lambda: _refusal_lines(caplog)


def test_render_refusal_reports_once_and_announces_the_metadata(
        make_settings: Callable[..., GuardSettings],
        refusals: Callable[[], list[logging.LogRecord]]) -> None:
    events: list[Event] = []
    verifier = TokenVerifier(make_settings(resource=RESOURCE), on_event=events.append)
    error = InsufficientScope(("admin:platform",))
    first = render_refusal(verifier, error)
    second = render_refusal(verifier, error)  # the same refusal rendered again: not re-reported
    assert first == second
    assert dict(first.headers)["www-authenticate"] == (
        'Bearer realm="api", error="insufficient_scope", error_description="The access token '
        f'lacks the scope: admin:platform", scope="admin:platform", resource_metadata="{DOC_URL}"')
    assert [r.reason for r in refusals()] == ["insufficient_scope"]
    assert [(e.kind, e.reason) for e in events] == [("refused", "insufficient_scope")]
    plain = render_refusal(TokenVerifier(make_settings()), MissingToken())
    assert dict(plain.headers)["www-authenticate"] == 'Bearer realm="api"'


def test_health_answer_for_a_route_of_your_own(issuer: KeySetServer,
                                               settings: GuardSettings) -> None:
    verifier = TokenVerifier(settings)  # no health_path: served anyway, where you route it
    try:
        assert health_answer(verifier, "GET").status == 503  # cold
        verifier.warm_up_sync()
        assert health_answer(verifier, "HEAD").status == 200
        refused = health_answer(verifier, "DELETE")
        assert refused.status == 405 and ("allow", "GET, HEAD") in refused.headers
    finally:
        verifier.close()


# -- Django without the middleware (DRF-only projects) --------------------------------------

@contextmanager
def django_guard(settings: GuardSettings, patterns: list[Any]) -> Iterator[Client]:
    """Django configured with `settings` and `patterns`, without the guard's middleware."""
    with override_settings(M2M_GUARD=settings, ROOT_URLCONF=URLs(patterns),
                           MIDDLEWARE=WITHOUT_GUARD_MIDDLEWARE):
        try:
            yield Client(raise_request_exception=False)
        finally:
            close_verifiers()


def test_django_health_view_served_where_routed(
        issuer: KeySetServer, make_settings: Callable[..., GuardSettings]) -> None:
    settings = make_settings()  # no health_path needed for a route of your own
    with django_guard(settings, [path("ready", health_view)]) as client:
        cold = client.get("/ready")
        assert cold.status_code == 503 and cold.json()["status"] == "not_ready"
        assert cold["Cache-Control"] == "no-store"
        get_verifier().warm_up_sync()  # the process's verifier, the one the view answers for
        ready = client.get("/ready")
        assert ready.status_code == 200 and ready.json()["ready"] is True
        assert client.head("/ready").status_code == 200
        refused = client.post("/ready")
        assert refused.status_code == 405 and refused["Allow"] == "GET, HEAD"


def test_django_operational_urls(issuer: KeySetServer,
                                 make_settings: Callable[..., GuardSettings]) -> None:
    plain = make_settings()
    with django_guard(plain, []):
        assert operational_urls() == []  # nothing configured: nothing served
    settings = make_settings(health_path=HEALTH, resource=RESOURCE)
    with django_guard(settings, []) as client:
        patterns = operational_urls()
        assert len(patterns) == 2
        with override_settings(ROOT_URLCONF=URLs(patterns)):
            document = client.get("/.well-known/oauth-protected-resource")
            assert document.status_code == 200
            assert document.json()["authorization_servers"] == [issuer.url]
            assert document["Cache-Control"] == "public, max-age=3600"
            assert client.get(HEALTH).status_code == 503  # cold, and nobody needed a token
            assert client.get(HEALTH + "x").status_code == 404  # exact paths only
    # Explicit settings: the same answers from the verifier of those settings.
    with django_guard(plain, []) as client:
        with override_settings(ROOT_URLCONF=URLs(operational_urls(settings))):
            assert client.get("/.well-known/oauth-protected-resource").status_code == 200


# -- FastAPI with the middleware and the guard -----------------------------------------------

def test_fastapi_with_middleware_and_guard(issuer: KeySetServer,
                                           make_settings: Callable[..., GuardSettings],
                                           refusals: Callable[[], list[logging.LogRecord]]
                                           ) -> None:
    settings = make_settings(health_path=HEALTH, resource=RESOURCE)
    app = FastAPI()

    @app.get("/admin")
    async def admin(token: Annotated[AccessToken, RequireScopes("admin:platform")]) -> dict[str,
                                                                                          str]:
        return {"client": token.client_id or ""}

    app.add_middleware(M2MGuardMiddleware, settings=settings)
    guard = M2MGuard(app)
    with FastAPIClient(app) as client:
        assert client.get(HEALTH).status_code == 200  # the middleware warmed up and answers
        assert guard.operational_endpoints() is None  # ... so the guard's own stays out
        forbidden = client.get("/admin", headers={"Authorization": f"Bearer {issuer.mint()}"})
        assert forbidden.status_code == 403
        assert forbidden.headers["www-authenticate"].endswith(f'resource_metadata="{DOC_URL}"')
    [line] = refusals()
    assert (line.reason, line.client_id) == ("insufficient_scope", "m2morg_68315758685323697")


def test_fastapi_dependency_only_websocket_refusal_is_reported(
        issuer: KeySetServer, make_settings: Callable[..., GuardSettings],
        refusals: Callable[[], list[logging.LogRecord]]) -> None:
    from fastapi import WebSocket
    from starlette.websockets import WebSocketDisconnect

    app = FastAPI()

    @app.websocket("/feed")
    async def feed(websocket: WebSocket,
                   token: Annotated[AccessToken, RequireScopes("read:deployments")]) -> None:
        await websocket.accept()
        await websocket.close()

    M2MGuard(app, make_settings())
    with FastAPIClient(app) as client:
        with pytest.raises(WebSocketDisconnect) as closed, client.websocket_connect("/feed"):
            pass
        assert closed.value.code == 1008
    assert [r.reason for r in refusals()] == ["missing_token"]


# -- Starlette: exception handlers inside an app the middleware wraps from outside ----------

def test_starlette_exception_handlers_report_through_the_middleware_verifier(
        issuer: KeySetServer, make_settings: Callable[..., GuardSettings],
        refusals: Callable[[], list[logging.LogRecord]]) -> None:
    @require_scopes("admin:platform")
    async def admin(request: Request) -> JSONResponse:
        return JSONResponse({"admin": True})

    events: list[Event] = []
    verifier = TokenVerifier(make_settings(resource=RESOURCE), on_event=events.append)
    inner = Starlette(routes=[Route("/admin", admin)], exception_handlers=exception_handlers)
    with TestClient(M2MGuardMiddleware(inner, verifier=verifier)) as client:
        forbidden = client.get("/admin", headers={"Authorization": f"Bearer {issuer.mint()}"})
    assert forbidden.status_code == 403
    assert forbidden.headers["www-authenticate"].endswith(f'resource_metadata="{DOC_URL}"')
    assert [r.reason for r in refusals()] == ["insufficient_scope"]
    assert [e.reason for e in events if e.kind == "refused"] == ["insufficient_scope"]
    verifier.close()


# -- WSGI: a refusal raised while the body is produced ----------------------------------------

def test_wsgi_refusal_from_the_body_is_reported_once_with_the_token(
        issuer: KeySetServer, make_settings: Callable[..., GuardSettings],
        refusals: Callable[[], list[logging.LogRecord]]) -> None:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
        # A generator: its code, and so the refusal, runs while the server iterates the body.
        raise InsufficientScope(("admin:platform",))
        yield b"never"

    with M2MGuardWSGIMiddleware(app, make_settings(resource=RESOURCE)) as guarded:
        response = WerkzeugClient(guarded).get(
            "/", headers={"Authorization": f"Bearer {issuer.mint()}"})
        assert response.status_code == 403
        assert response.headers["www-authenticate"].endswith(f'resource_metadata="{DOC_URL}"')
        response.close()
    [line] = refusals()
    assert (line.reason, line.client_id) == ("insufficient_scope", "m2morg_68315758685323697")
