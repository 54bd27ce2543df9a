"""The Django REST framework adapter through DRF views, Django's test client and a real key-set
server on loopback: authentication with and without the middleware, `HasScopes` per method, and
DRF's 401/403 answers carrying the contract's headers and bodies."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from m2m_guard import AccessToken, GuardSettings, require_scopes
from m2m_guard.local_issuer import KeySetServer

from .django_settings import URLs, setup_django

setup_django()

from django.core.exceptions import ImproperlyConfigured  # noqa: E402
from django.test import Client, override_settings  # noqa: E402
from django.urls import path  # noqa: E402
from rest_framework.decorators import (  # noqa: E402
    api_view,
    authentication_classes,
    permission_classes,
)
from rest_framework.permissions import IsAuthenticated  # noqa: E402
from rest_framework.request import Request  # noqa: E402
from rest_framework.response import Response  # noqa: E402
from rest_framework.views import APIView  # noqa: E402

from examples.django_project import urls as example_urls  # noqa: E402
from m2m_guard.django import close_verifiers, get_verifier  # noqa: E402
from m2m_guard.drf import ClientPrincipal, HasScopes, M2MGuardAuthentication  # noqa: E402

GUARD_MIDDLEWARE = "m2m_guard.django.M2MGuardMiddleware"
PLAIN_MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
MISSING = {"error": "missing_token", "error_description": "A bearer token is required."}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def scope_refusal(scope: str, description: str | None = None) -> tuple[str, dict[str, Any]]:
    description = description or f"The access token lacks the scope: {scope}"
    return (f'Bearer realm="api", error="insufficient_scope", '
            f'error_description="{description}", scope="{scope}"',
            {"error": "insufficient_scope", "error_description": description, "scope": scope})


def assert_refusal(response: Any, status: int, challenge: str | None, body: dict[str, Any], *,
                   exact: bool = True) -> None:
    assert response.status_code == status, response.content
    assert response.headers.get("WWW-Authenticate") == challenge
    assert response.headers["Content-Type"] == "application/json"
    if exact:  # m2m_guard's exception handler: the one renderer's bytes
        assert response.headers["Cache-Control"] == "no-store"
    assert json.loads(response.content) == body


@contextmanager
def drf(settings: GuardSettings, patterns: list[Any], *, middleware: bool = False,
        **extra: Any) -> Iterator[Client]:
    chain = [*PLAIN_MIDDLEWARE, GUARD_MIDDLEWARE] if middleware else PLAIN_MIDDLEWARE
    with override_settings(M2M_GUARD=settings, ROOT_URLCONF=URLs(patterns),
                           MIDDLEWARE=chain, **extra):
        try:
            yield Client()
        finally:
            close_verifiers()


@pytest.fixture
def public_settings(make_settings: Callable[..., GuardSettings]) -> GuardSettings:
    return make_settings(public_paths=("/health",))


# -- the example's DRF views -----------------------------------------------------------------

@pytest.mark.parametrize("middleware", [False, True], ids=["drf-alone", "with-middleware"])
def test_example_api_per_method(public_settings: GuardSettings, issuer: KeySetServer,
                                middleware: bool) -> None:
    with drf(public_settings, example_urls.api_urlpatterns, middleware=middleware) as client:
        reader = issuer.mint(scopes=["read:deployments"])
        assert client.get("/deployments", headers=bearer(reader)).status_code == 200
        challenge, body = scope_refusal("deploy:applications")
        assert_refusal(client.post("/deployments", {"service": "billing"},
                                   content_type="application/json", headers=bearer(reader)),
                       403, challenge, body)
        deployer = issuer.mint()
        posted = client.post("/deployments", {"service": "billing", "version": "2.0"},
                             content_type="application/json", headers=bearer(deployer))
        assert posted.status_code == 202
        assert posted.json()["requested_by"] == "m2morg_68315758685323697"
        challenge, body = scope_refusal("admin:platform")
        assert_refusal(client.get("/admin/audit", headers=bearer(deployer)), 403, challenge, body)
        admin = issuer.mint(scopes=["admin:platform"])
        assert client.get("/admin/audit", headers=bearer(admin)).json() == {
            "audit": [], "client_id": "m2morg_68315758685323697"}
        assert_refusal(client.get("/deployments"), 401, 'Bearer realm="api"', MISSING)
        assert client.get("/health", headers={"Authorization": "Bearer a b"}).status_code == 200


def test_drf_401_carries_the_invalid_token_challenge(public_settings: GuardSettings,
                                                    issuer: KeySetServer) -> None:
    with drf(public_settings, example_urls.api_urlpatterns) as client:
        description = "The token is not meant for this audience."
        assert_refusal(client.get("/deployments", headers=bearer(issuer.mint(aud=["other"]))),
                       401, f'Bearer realm="api", error="invalid_token", '
                            f'error_description="{description}"',
                       {"error": "invalid_token", "error_description": description})
        description = "The Authorization header has the Bearer scheme but no token."
        assert_refusal(client.get("/deployments", headers={"Authorization": "Bearer"}),
                       400, f'Bearer realm="api", error="invalid_request", '
                            f'error_description="{description}"',
                       {"error": "invalid_request", "error_description": description})


# -- views written for this test -------------------------------------------------------------

captured: dict[str, Any] = {}


class WhoAmI(APIView):
    permission_classes = [IsAuthenticated]

    def get(self, request: Request) -> Response:
        captured["user"], captured["auth"] = request.user, request.auth
        return Response({"user": str(request.user)})


class AnyOf(APIView):
    required_any_scopes = ["audit:read", "admin:platform"]

    def get(self, request: Request) -> Response:
        return Response({"ok": True})


class Defaults(APIView):
    required_scopes = {"*": ["read:deployments"], "DELETE": ["admin:platform"],
                       "OPTIONS": []}

    def get(self, request: Request) -> Response:
        return Response({"ok": True})

    def delete(self, request: Request) -> Response:
        return Response(status=204)


class Undeclared(APIView):
    def get(self, request: Request) -> Response:
        return Response({"ok": True})


class DecoratedMethod(APIView):
    permission_classes = [IsAuthenticated]

    @require_scopes("admin:platform")
    def get(self, request: Request) -> Response:
        return Response({"ok": True})


@api_view(["GET"])
@authentication_classes([M2MGuardAuthentication])
@permission_classes([HasScopes])
def function_view(request: Request) -> Response:
    return Response({"ok": True})


function_view.cls.required_scopes = ["read:deployments"]  # type: ignore[attr-defined]

PATTERNS = [
    path("whoami", WhoAmI.as_view()),
    path("any-of", AnyOf.as_view()),
    path("defaults", Defaults.as_view()),
    path("undeclared", Undeclared.as_view()),
    path("decorated", DecoratedMethod.as_view()),
    path("function", function_view),
]


def test_authentication_sets_user_and_auth(public_settings: GuardSettings,
                                           issuer: KeySetServer) -> None:
    captured.clear()
    with drf(public_settings, PATTERNS) as client:
        response = client.get("/whoami", headers=bearer(issuer.mint()))
    assert response.json() == {"user": "m2morg_68315758685323697"}
    user, auth = captured["user"], captured["auth"]
    assert isinstance(user, ClientPrincipal) and isinstance(auth, AccessToken)
    assert user.is_authenticated and not user.is_anonymous
    assert user.client_id == user.pk == "m2morg_68315758685323697"
    assert user.organization_id == "org_59615193906282635"
    assert user.token is auth and user.scopes == auth.scopes


def test_not_authenticated_gets_the_bare_challenge(public_settings: GuardSettings) -> None:
    with drf(public_settings, PATTERNS) as client:
        assert_refusal(client.get("/whoami"), 401, 'Bearer realm="api"', MISSING)


def test_drf_default_exception_handler_keeps_the_headers(public_settings: GuardSettings,
                                                         issuer: KeySetServer) -> None:
    """Without m2m_guard's exception handler, DRF's own one still sends the status, the
    `WWW-Authenticate` challenge and the JSON body (the exception carries them)."""
    rest_framework = {"EXCEPTION_HANDLER": "rest_framework.views.exception_handler",
                      "UNAUTHENTICATED_USER": None}
    with drf(public_settings, example_urls.api_urlpatterns,
             REST_FRAMEWORK=rest_framework) as client:
        challenge, body = scope_refusal("admin:platform")
        assert_refusal(client.get("/admin/audit", headers=bearer(issuer.mint())), 403,
                       challenge, body, exact=False)
        description = "The token has expired."
        expired = issuer.mint(iat=1, nbf=1, exp=2)
        assert_refusal(client.get("/deployments", headers=bearer(expired)), 401,
                       f'Bearer realm="api", error="invalid_token", '
                       f'error_description="{description}"',
                       {"error": "invalid_token", "error_description": description},
                       exact=False)
        # DRF's own "not authenticated" still gets the Bearer challenge from authenticate_header
        response = client.get("/deployments")
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="api"'


def test_any_of_and_method_defaults(public_settings: GuardSettings,
                                    issuer: KeySetServer) -> None:
    with drf(public_settings, PATTERNS) as client:
        challenge, body = scope_refusal(
            "audit:read admin:platform",
            "The access token lacks one of the scopes: audit:read admin:platform")
        assert_refusal(client.get("/any-of", headers=bearer(issuer.mint())), 403,
                       challenge, body)
        assert client.get("/any-of", headers=bearer(
            issuer.mint(scopes=["audit:read"]))).status_code == 200
        reader = issuer.mint(scopes=["read:deployments"])
        assert client.get("/defaults", headers=bearer(reader)).status_code == 200  # "*"
        assert client.options("/defaults", headers=bearer(
            issuer.mint(scopes=[]))).status_code == 200  # [] = a token, no scope
        challenge, body = scope_refusal("admin:platform")
        assert_refusal(client.delete("/defaults", headers=bearer(reader)), 403, challenge, body)
        assert client.get("/function", headers=bearer(reader)).status_code == 200
        assert client.get("/function", headers=bearer(
            issuer.mint(scopes=["audit:read"]))).status_code == 403


def test_view_without_scopes_is_a_configuration_error(public_settings: GuardSettings,
                                                      issuer: KeySetServer) -> None:
    with drf(public_settings, PATTERNS) as client:
        with pytest.raises(ImproperlyConfigured, match="Undeclared uses m2m_guard scope checks"):
            client.get("/undeclared", headers=bearer(issuer.mint()))


def test_guard_error_raised_in_a_drf_view(public_settings: GuardSettings,
                                          issuer: KeySetServer) -> None:
    """`@require_scopes` on an APIView method finds the token on DRF's request (no middleware,
    so no `current_token()`), and m2m_guard's exception handler renders the refusal."""
    with drf(public_settings, PATTERNS) as client:
        challenge, body = scope_refusal("admin:platform")
        assert_refusal(client.get("/decorated", headers=bearer(issuer.mint())), 403,
                       challenge, body)
        assert client.get("/decorated", headers=bearer(
            issuer.mint(scopes=["admin:platform"]))).json() == {"ok": True}


def test_authentication_reuses_the_middleware_token(public_settings: GuardSettings,
                                                    issuer: KeySetServer,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    captured.clear()
    with drf(public_settings, PATTERNS, middleware=True) as client:
        verifier = get_verifier()
        calls: list[str] = []
        real = verifier.verify_sync

        def counting(token: str) -> AccessToken:
            calls.append(token)
            return real(token)

        monkeypatch.setattr(verifier, "verify_sync", counting)
        response = client.get("/whoami", headers=bearer(issuer.mint()))
        assert response.status_code == 200
        assert len(calls) == 1  # the middleware verified; DRF took its token
        assert captured["auth"] is captured["user"].token
    # Without the middleware the authentication class verifies, with the same shared verifier.
    with drf(public_settings, PATTERNS) as client:
        verifier = get_verifier()
        assert client.get("/whoami", headers=bearer(issuer.mint())).status_code == 200
        assert verifier.health()["ready"] is True
        assert get_verifier() is verifier


def test_configured_realm_in_every_challenge(make_settings: Callable[..., GuardSettings],
                                             issuer: KeySetServer) -> None:
    settings = make_settings(realm="deployments")
    rest_framework = {"EXCEPTION_HANDLER": "rest_framework.views.exception_handler",
                      "UNAUTHENTICATED_USER": None}
    with drf(settings, PATTERNS) as client:
        assert client.get("/whoami").headers["WWW-Authenticate"] == 'Bearer realm="deployments"'
        refused = client.get("/any-of", headers=bearer(issuer.mint()))
        assert refused.headers["WWW-Authenticate"].startswith(
            'Bearer realm="deployments", error="insufficient_scope"')
        with override_settings(REST_FRAMEWORK=rest_framework):  # DRF's own handler
            assert client.get("/whoami").headers["WWW-Authenticate"] == (
                'Bearer realm="deployments"')
            assert client.get("/any-of", headers=bearer(issuer.mint())).headers[
                "WWW-Authenticate"].startswith('Bearer realm="deployments", error=')
