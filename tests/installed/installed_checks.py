"""Run by `python -m tests.installed` inside a clean virtual environment, outside the source tree,
where m2m-guard is installed from its wheel: what passes in the editable install must pass here.

Not collected by the project's own suite (the file name does not start with ``test_``). The
`m2m_issuer` and `m2m_token` fixtures come from the installed pytest plugin's entry point: there is
no conftest.py beside this file.
"""

from __future__ import annotations

import json
import sys
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any

import django
import pytest
from django.conf import settings as django_settings

django_settings.configure(
    SECRET_KEY="installed-wheel-check", DEBUG=False, ALLOWED_HOSTS=["testserver"],
    INSTALLED_APPS=["rest_framework"], DATABASES={}, USE_TZ=True, APPEND_SLASH=False,
    ROOT_URLCONF=__name__, LOGGING_CONFIG=None,
    MIDDLEWARE=["m2m_guard.django.M2MGuardMiddleware"],
    REST_FRAMEWORK={"UNAUTHENTICATED_USER": None,
                    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"]})
django.setup()

from django.http import HttpRequest, JsonResponse  # noqa: E402
from django.test import Client, override_settings  # noqa: E402
from django.urls import path  # noqa: E402
from rest_framework.request import Request  # noqa: E402
from rest_framework.response import Response  # noqa: E402
from rest_framework.views import APIView  # noqa: E402

import m2m_guard  # noqa: E402
from m2m_guard import AccessToken, GuardSettings, current_token, require_scopes  # noqa: E402
from m2m_guard.fastapi import RequireScopes  # noqa: E402

SCOPE = "read:deployments"


def test_the_package_is_the_installed_wheel() -> None:
    """Imported from site-packages, with its package data, its one version and its entry points."""
    package = Path(m2m_guard.__file__).resolve().parent
    assert Path(sys.prefix).resolve() in package.parents, package
    assert "site-packages" in package.parts
    assert (package / "py.typed").is_file()
    assert metadata.version("m2m-guard") == m2m_guard.__version__
    scripts = {ep.name: ep.value for ep in metadata.entry_points(group="console_scripts")}
    assert scripts["m2m-guard"] == "m2m_guard.cli:main"
    plugins = {ep.name: ep.value for ep in metadata.entry_points(group="pytest11")}
    assert plugins["m2m_guard"] == "m2m_guard.testing"


def test_the_plugin_is_loaded_through_its_entry_point(request: pytest.FixtureRequest) -> None:
    assert request.config.pluginmanager.has_plugin("m2m_guard")


def _asgi_app(settings: GuardSettings) -> Any:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from m2m_guard.asgi import M2MGuardMiddleware

    @require_scopes(SCOPE)
    async def deployments(request: Any) -> JSONResponse:
        token = current_token()
        assert token is not None
        return JSONResponse({"client_id": token.client_id})

    return Starlette(routes=[Route("/deployments", deployments)],
                     middleware=[Middleware(M2MGuardMiddleware, settings=settings)])


def _fastapi_app(settings: GuardSettings) -> Any:
    # FastAPI resolves the annotations below from this module's globals.
    from fastapi import FastAPI

    from m2m_guard.fastapi import M2MGuard

    app = FastAPI()

    @app.get("/deployments")
    async def deployments(token: Annotated[AccessToken, RequireScopes(SCOPE)]) -> dict[str, str]:
        return {"client_id": token.client_id}

    M2MGuard(app, settings)
    return app


@pytest.mark.parametrize("build", [_asgi_app, _fastapi_app], ids=["starlette-asgi", "fastapi"])
def test_one_request_through_an_asgi_adapter(build: Any, m2m_issuer: Any, m2m_token: Any) -> None:
    from starlette.testclient import TestClient

    with TestClient(build(m2m_issuer.settings())) as client:
        allowed = client.get("/deployments", headers=m2m_token.headers(scopes=[SCOPE]))
        assert allowed.status_code == 200, allowed.text
        assert allowed.json() == {"client_id": m2m_issuer.claims()["client_id"]}
        refused = client.get("/deployments", headers=m2m_token.headers(scopes=["other"]))
        assert refused.status_code == 403
        assert refused.json()["error"] == "insufficient_scope"
        missing = client.get("/deployments")
        assert missing.status_code == 401 and missing.json()["error"] == "missing_token"


def test_one_request_through_the_wsgi_middleware(m2m_issuer: Any, m2m_token: Any) -> None:
    from m2m_guard.wsgi import M2MGuardWSGIMiddleware

    @require_scopes(SCOPE)
    def inner(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        token = current_token()
        assert token is not None
        body = json.dumps({"client_id": token.client_id}).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]

    with M2MGuardWSGIMiddleware(inner, m2m_issuer.settings()) as app:
        answers = []
        for headers in (m2m_token.headers(scopes=[SCOPE]), {}):
            environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/deployments", "SERVER_NAME": "t",
                       "SERVER_PORT": "80", "wsgi.url_scheme": "http",
                       **{"HTTP_" + k.upper(): v for k, v in headers.items()}}
            status: list[str] = []
            body = b"".join(app(environ, lambda s, h, e=None: status.append(s)))
            answers.append((status[0], json.loads(body)))
    assert answers[0] == ("200 OK", {"client_id": m2m_issuer.claims()["client_id"]})
    assert answers[1][0].startswith("401") and answers[1][1]["error"] == "missing_token"


def test_one_request_through_the_flask_extension(m2m_issuer: Any, m2m_token: Any) -> None:
    from flask import Flask, jsonify

    from m2m_guard.flask import M2MGuard
    from m2m_guard.flask import require_scopes as flask_scopes

    app = Flask(__name__)

    @app.get("/deployments")
    @flask_scopes(SCOPE)
    def deployments() -> Any:
        token = current_token()
        assert token is not None
        return jsonify(client_id=token.client_id)

    M2MGuard(app, settings=m2m_issuer.settings())
    client = app.test_client()
    allowed = client.get("/deployments", headers=m2m_token.headers(scopes=[SCOPE]))
    assert allowed.status_code == 200
    assert allowed.get_json() == {"client_id": m2m_issuer.claims()["client_id"]}
    refused = client.get("/deployments", headers=m2m_token.headers(scopes=["other"]))
    assert refused.status_code == 403 and refused.get_json()["error"] == "insufficient_scope"


def _django_view(request: HttpRequest) -> JsonResponse:
    from m2m_guard.django import require_scopes as django_scopes

    @django_scopes(SCOPE)
    def view(request: HttpRequest) -> JsonResponse:
        token = current_token()
        assert token is not None
        return JsonResponse({"client_id": token.client_id})

    return view(request)


class DeploymentsAPI(APIView):
    from m2m_guard.drf import HasScopes, M2MGuardAuthentication

    authentication_classes = [M2MGuardAuthentication]
    permission_classes = [HasScopes]
    required_scopes = [SCOPE]

    def get(self, request: Request) -> Response:
        return Response({"client_id": str(request.user)})


urlpatterns = [path("django/deployments", _django_view),
               path("drf/deployments", DeploymentsAPI.as_view())]


@pytest.mark.parametrize("route", ["/django/deployments", "/drf/deployments"],
                         ids=["django", "drf"])
def test_one_request_through_a_django_adapter(route: str, m2m_issuer: Any,
                                              m2m_token: Any) -> None:
    from m2m_guard.django import close_verifiers

    with override_settings(M2M_GUARD=m2m_issuer.settings()):
        try:
            client = Client()
            allowed = client.get(route, headers=m2m_token.headers(scopes=[SCOPE]))
            assert allowed.status_code == 200, allowed.content
            assert json.loads(allowed.content) == {"client_id": m2m_issuer.claims()["client_id"]}
            refused = client.get(route, headers=m2m_token.headers(scopes=["other"]))
            assert refused.status_code == 403, refused.content
            assert json.loads(refused.content)["error"] == "insufficient_scope"
        finally:
            close_verifiers()


def test_health_and_otel_modules_import() -> None:
    from m2m_guard import events, health, local_issuer, otel, testing

    assert health.SUGGESTED_HEALTH_PATH.startswith("/")
    assert callable(otel.instrument) and events.EventStream and local_issuer and testing


def test_the_mcp_extra_verifies_for_the_sdk(m2m_issuer: Any) -> None:
    """The [mcp] extra brings an SDK whose protocol the installed `McpTokenVerifier` meets."""
    import asyncio

    from mcp.server.auth.provider import AccessToken as SdkToken

    from m2m_guard.mcp import McpTokenVerifier

    url = "https://mcp.example.com/mcp"
    guard = McpTokenVerifier(m2m_issuer.settings(audience=url, resource=url))
    access = asyncio.run(guard.verify_token(m2m_issuer.mint(["read:deployments"], aud=[url])))
    assert isinstance(access, SdkToken) and access.scopes == ["read:deployments"]
    assert str(guard.auth_settings().resource_server_url) == url
    asyncio.run(guard.aclose())
