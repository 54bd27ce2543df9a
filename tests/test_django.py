"""The Django adapter through Django's own test clients (WSGI and ASGI handlers), a real key-set
server on loopback, and the example project's views."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from m2m_guard import GuardSettings, InvalidToken, IssuerUnavailable
from m2m_guard.local_issuer import KeySetServer

from .django_settings import URLs, setup_django

setup_django()

from asgiref.sync import iscoroutinefunction  # noqa: E402
from django.core.exceptions import ImproperlyConfigured  # noqa: E402
from django.core.handlers.asgi import ASGIHandler  # noqa: E402
from django.core.handlers.wsgi import WSGIHandler  # noqa: E402
from django.http import HttpRequest, HttpResponse, JsonResponse  # noqa: E402
from django.test import AsyncClient, Client, override_settings  # noqa: E402
from django.urls import path  # noqa: E402
from django.views import View  # noqa: E402

from examples.django_project import urls as example_urls  # noqa: E402
from m2m_guard.django import (  # noqa: E402
    M2MGuardMiddleware,
    ScopesRequiredMixin,
    close_verifiers,
    current_token,
    get_verifier,
    guard_settings,
    request_token,
    require_any_scope,
    require_scopes,
)

MISSING = {"error": "missing_token", "error_description": "A bearer token is required."}
ADMIN_DESCRIPTION = "The access token lacks the scope: admin:platform"
ADMIN_CHALLENGE = (f'Bearer realm="api", error="insufficient_scope", '
                   f'error_description="{ADMIN_DESCRIPTION}", scope="admin:platform"')


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_refusal(response: Any, status: int, challenge: str | None,
                   body: dict[str, Any]) -> None:
    assert response.status_code == status, response.content
    assert response.headers.get("WWW-Authenticate") == challenge
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    assert json.loads(response.content) == body


@contextmanager
def guarded(settings: GuardSettings | dict[str, Any], patterns: list[Any],
            **extra: Any) -> Iterator[None]:
    """Django configured with this guard and these URLs; the verifiers closed afterwards."""
    with override_settings(M2M_GUARD=settings, ROOT_URLCONF=URLs(patterns), **extra):
        try:
            yield
        finally:
            close_verifiers()


@pytest.fixture
def public_settings(make_settings: Callable[..., GuardSettings]) -> GuardSettings:
    return make_settings(public_paths=("/health", "/docs/*"))


# -- the example's plain (sync) views through the WSGI handler --------------------------------

@pytest.fixture
def sync_client(public_settings: GuardSettings) -> Iterator[Client]:
    with guarded(public_settings, example_urls.sync_urlpatterns):
        yield Client()


def test_sync_views_serve_a_valid_token(sync_client: Client, issuer: KeySetServer) -> None:
    token = issuer.mint(scopes=["read:deployments", "deploy:applications", "admin:platform"])
    listed = sync_client.get("/deployments", headers=bearer(token))
    assert listed.status_code == 200
    assert listed.json()["deployments"][0]["id"] == "dep_1"
    posted = sync_client.post("/deployments", {"service": "billing", "version": "1.5.0"},
                              content_type="application/json", headers=bearer(token))
    assert posted.status_code == 202
    assert posted.json()["requested_by"] == "m2morg_68315758685323697"
    assert posted.json()["organization"] == "org_59615193906282635"
    audit = sync_client.get("/admin/audit", headers=bearer(token))  # a function view
    assert audit.json() == {"audit": [], "client_id": "m2morg_68315758685323697"}


def test_sync_refusals_follow_the_contract(sync_client: Client, issuer: KeySetServer) -> None:
    assert_refusal(sync_client.get("/deployments"), 401, 'Bearer realm="api"', MISSING)
    assert_refusal(sync_client.get("/admin/audit", headers=bearer(issuer.mint())), 403,
                   ADMIN_CHALLENGE, {"error": "insufficient_scope",
                                     "error_description": ADMIN_DESCRIPTION,
                                     "scope": "admin:platform"})
    expired = issuer.mint(iat=1, nbf=1, exp=2)
    assert_refusal(sync_client.get("/deployments", headers=bearer(expired)), 401,
                   'Bearer realm="api", error="invalid_token", '
                   'error_description="The token has expired."',
                   {"error": "invalid_token", "error_description": "The token has expired."})
    description = "The request has more than one Authorization header."
    # Django's WSGI environ joins repeated headers with a comma: still two credentials.
    two = sync_client.get("/deployments", headers={
        "Authorization": f"Bearer {issuer.mint()}, Bearer {issuer.mint()}"})
    assert_refusal(two, 400, f'Bearer realm="api", error="invalid_request", '
                             f'error_description="{description}"',
                   {"error": "invalid_request", "error_description": description})


def test_cbv_mixin_checks_scopes_per_method(sync_client: Client, issuer: KeySetServer) -> None:
    reader = issuer.mint(scopes=["read:deployments"])
    assert sync_client.get("/deployments", headers=bearer(reader)).status_code == 200
    assert sync_client.head("/deployments", headers=bearer(reader)).status_code == 200  # as GET
    description = "The access token lacks the scope: deploy:applications"
    assert_refusal(sync_client.post("/deployments", headers=bearer(reader)), 403,
                   f'Bearer realm="api", error="insufficient_scope", '
                   f'error_description="{description}", scope="deploy:applications"',
                   {"error": "insufficient_scope", "error_description": description,
                    "scope": "deploy:applications"})
    # A method the mapping does not name is refused, whatever the token holds.
    everything = issuer.mint(scopes=["read:deployments", "deploy:applications"])
    refused = sync_client.delete("/deployments", headers=bearer(everything))
    assert refused.status_code == 403
    assert refused.json()["error"] == "insufficient_scope"


def test_public_paths_pass_untouched(sync_client: Client) -> None:
    # Even malformed credentials are not looked at on a public path.
    response = sync_client.get("/health", headers={"Authorization": "Bearer a b"})
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


# -- views written for this test: token placement, GuardError from a view ------------------

seen: dict[str, Any] = {}


def whoami(request: HttpRequest) -> JsonResponse:
    seen["request"] = request_token(request)
    seen["context"] = current_token()
    return JsonResponse({"token": None if seen["request"] is None else
                         seen["request"].client_id})


async def whoami_async(request: HttpRequest) -> JsonResponse:
    seen["request"] = request_token(request)
    seen["context"] = current_token()
    return JsonResponse({"ok": True})


def raises_invalid_token(request: HttpRequest) -> HttpResponse:
    raise InvalidToken("This client is blocked.", reason="blocked")


async def raises_unavailable(request: HttpRequest) -> HttpResponse:
    raise IssuerUnavailable(retry_after=7)


@require_any_scope("audit:read", "admin:platform")
async def audit_any(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True})


@require_scopes("read:deployments")
def sync_scoped(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True})


class AsyncMixinView(ScopesRequiredMixin, View):
    required_any_scopes = ("audit:read", "admin:platform")

    async def get(self, request: HttpRequest) -> JsonResponse:
        return JsonResponse({"client": request_token(request).client_id})  # type: ignore[union-attr]


PATTERNS = [
    path("whoami", whoami),
    path("whoami-async", whoami_async),
    path("health", whoami),
    path("blocked", raises_invalid_token),
    path("unavailable", raises_unavailable),
    path("audit-any", audit_any),
    path("sync-scoped", sync_scoped),
    path("mixin-async", AsyncMixinView.as_view()),
]


@pytest.fixture
def own_views(public_settings: GuardSettings) -> Iterator[None]:
    seen.clear()
    with guarded(public_settings, PATTERNS):
        yield


def test_token_on_request_and_in_context(own_views: None, issuer: KeySetServer) -> None:
    response = Client().get("/whoami", headers=bearer(issuer.mint()))
    assert response.json() == {"token": "m2morg_68315758685323697"}
    assert seen["request"] is seen["context"]
    assert seen["request"].scopes == {"read:deployments", "deploy:applications"}
    assert current_token() is None  # reset after the request
    Client().get("/health")
    assert seen["request"] is None and seen["context"] is None


PREFLIGHT = {"Origin": "https://console.example.com", "Access-Control-Request-Method": "POST"}


def test_cors_preflight_passes_untouched(own_views: None) -> None:
    # (A CORS middleware such as django-cors-headers usually answers it before any view.)
    response = Client().options("/whoami", headers=PREFLIGHT)
    assert response.status_code == 200
    assert response.json() == {"token": None}
    # A plain OPTIONS (not a preflight) is guarded.
    assert_refusal(Client().options("/whoami"), 401, 'Bearer realm="api"', MISSING)


def test_cors_preflight_guarded_when_not_allowed(
        make_settings: Callable[..., GuardSettings]) -> None:
    with guarded(make_settings(allow_cors_preflight=False), PATTERNS):
        preflight = Client().options("/whoami", headers=PREFLIGHT)
    assert_refusal(preflight, 401, 'Bearer realm="api"', MISSING)


def test_public_prefix(own_views: None, public_settings: GuardSettings) -> None:
    with override_settings(ROOT_URLCONF=URLs([path("docs/index", whoami)])):
        assert Client().get("/docs/index").status_code == 200
        assert Client().get("/docs/index").json() == {"token": None}


def test_guard_error_raised_in_a_view_is_rendered(own_views: None,
                                                  issuer: KeySetServer) -> None:
    client = Client()
    assert_refusal(client.get("/blocked", headers=bearer(issuer.mint())), 401,
                   'Bearer realm="api", error="invalid_token", '
                   'error_description="This client is blocked."',
                   {"error": "invalid_token", "error_description": "This client is blocked."})
    unavailable = client.get("/unavailable", headers=bearer(issuer.mint()))
    assert unavailable.status_code == 503
    assert unavailable.headers["Retry-After"] == "7"
    assert "WWW-Authenticate" not in unavailable.headers


@pytest.mark.anyio
async def test_async_chain_verifies_on_the_event_loop(own_views: None,
                                                      issuer: KeySetServer) -> None:
    client = AsyncClient()
    response = await client.get("/whoami-async", headers=bearer(issuer.mint()))
    assert response.status_code == 200
    assert seen["request"] is not None and seen["request"] is seen["context"]
    # The same token from a sync view under the ASGI handler (run in a thread, context copied).
    response = await client.get("/whoami", headers=bearer(issuer.mint()))
    assert response.json() == {"token": "m2morg_68315758685323697"}
    assert seen["context"] is seen["request"]


@pytest.mark.anyio
async def test_async_views_refusals(own_views: None, issuer: KeySetServer) -> None:
    client = AsyncClient()
    description = "The access token lacks one of the scopes: audit:read admin:platform"
    body = {"error": "insufficient_scope", "error_description": description,
            "scope": "audit:read admin:platform"}
    challenge = (f'Bearer realm="api", error="insufficient_scope", '
                 f'error_description="{description}", scope="audit:read admin:platform"')
    assert_refusal(await client.get("/audit-any", headers=bearer(issuer.mint())), 403,
                   challenge, body)
    assert_refusal(await client.get("/mixin-async", headers=bearer(issuer.mint())), 403,
                   challenge, body)
    auditor = issuer.mint(scopes=["audit:read"])
    assert (await client.get("/audit-any", headers=bearer(auditor))).status_code == 200
    mixin = await client.get("/mixin-async", headers=bearer(auditor))
    assert mixin.json() == {"client": "m2morg_68315758685323697"}
    unavailable = await client.get("/unavailable", headers=bearer(issuer.mint()))
    assert unavailable.status_code == 503
    assert unavailable.headers["Retry-After"] == "7"
    assert_refusal(await client.get("/sync-scoped"), 401, 'Bearer realm="api"', MISSING)
    # Two Authorization headers in the ASGI scope are two, as under WSGI.
    description = "The request has more than one Authorization header."
    two = await client.get("/whoami-async", headers={
        "Authorization": f"Bearer {issuer.mint()}, Bearer {issuer.mint()}"})
    assert two.status_code == 400
    assert two.json() == {"error": "invalid_request", "error_description": description}


@pytest.mark.anyio
async def test_async_examples_through_asgi_handler(public_settings: GuardSettings,
                                                   issuer: KeySetServer) -> None:
    with guarded(public_settings, example_urls.async_urlpatterns):
        client = AsyncClient()
        token = issuer.mint()
        assert (await client.get("/deployments", headers=bearer(token))).status_code == 200
        posted = await client.post("/deployments", {"service": "billing"},
                                   content_type="application/json", headers=bearer(token))
        assert posted.status_code == 202
        assert posted.json()["service"] == "billing"
        assert_refusal(await client.get("/admin/audit", headers=bearer(token)), 403,
                       ADMIN_CHALLENGE, {"error": "insufficient_scope",
                                         "error_description": ADMIN_DESCRIPTION,
                                         "scope": "admin:platform"})
        assert (await client.get("/health")).json() == {"status": "ok"}


def test_middleware_adapts_to_the_chain(public_settings: GuardSettings) -> None:
    async def async_next(request: HttpRequest) -> HttpResponse:
        return HttpResponse()

    def sync_next(request: HttpRequest) -> HttpResponse:
        return HttpResponse()

    with guarded(public_settings, PATTERNS):
        assert iscoroutinefunction(M2MGuardMiddleware(async_next))
        assert not iscoroutinefunction(M2MGuardMiddleware(sync_next))
        assert M2MGuardMiddleware.sync_capable and M2MGuardMiddleware.async_capable


def test_required_false_lets_anonymous_requests_through(
        make_settings: Callable[..., GuardSettings], issuer: KeySetServer) -> None:
    seen.clear()
    with guarded(make_settings(required=False), PATTERNS):
        client = Client()
        assert client.get("/whoami").json() == {"token": None}
        assert_refusal(client.get("/sync-scoped"), 401, 'Bearer realm="api"', MISSING)
        # ...but a token that is sent is still verified
        assert client.get("/whoami", headers=bearer("abc.def")).status_code == 401


# -- configuration -----------------------------------------------------------------------

def test_settings_dict_over_environment(issuer: KeySetServer,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("M2M_GUARD_AUDIENCE", "deployment-api")
    monkeypatch.setenv("M2M_GUARD_REALM", "from-env")
    monkeypatch.setenv("M2M_GUARD_LEEWAY", "5s")
    with guarded({"issuer": issuer.url, "realm": "deployments"}, PATTERNS):
        settings = guard_settings()
    assert settings.realm == "deployments"  # settings.M2M_GUARD wins
    assert settings.leeway == 5.0 and settings.audiences == ("deployment-api",)
    assert settings.issuers[0].issuer == issuer.url


def _startup_error(value: Any, monkeypatch: pytest.MonkeyPatch,
                   env: dict[str, str] | None = None) -> str:
    for name in ("M2M_GUARD_ISSUER", "M2M_GUARD_AUDIENCE"):
        monkeypatch.delenv(name, raising=False)
    for name, raw in (env or {}).items():
        monkeypatch.setenv(name, raw)
    with guarded(value, PATTERNS), pytest.raises(ImproperlyConfigured) as caught:
        WSGIHandler()  # what a WSGI server does at startup: builds the middleware chain
    return str(caught.value)


def test_bad_settings_fail_at_startup_naming_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    message = _startup_error({"issuer": "http://auth.example.com", "audience": "api"},
                             monkeypatch)
    assert message.startswith("m2m_guard: settings.M2M_GUARD['issuer'] is "
                              "'http://auth.example.com': plain http")
    assert "Use https" in message

    message = _startup_error({"issuer": "https://auth.example.com", "audiense": "api"},
                             monkeypatch)
    assert "settings.M2M_GUARD: audiense (did you mean audience?)" in message

    message = _startup_error(["https://auth.example.com"], monkeypatch)
    assert "settings.M2M_GUARD must be a dict" in message and "got list" in message


def test_missing_configuration_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    message = _startup_error({}, monkeypatch)
    assert "M2M_GUARD_ISSUER is not set" in message
    assert "settings.M2M_GUARD = {" in message


def test_bad_environment_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    message = _startup_error({"issuer": "https://auth.example.com", "audience": "api"},
                             monkeypatch, {"M2M_GUARD_LEEWAY": "soon"})
    assert "M2M_GUARD_LEEWAY='soon' is invalid" in message
    message = _startup_error({"issuer": "https://auth.example.com", "audience": "api",
                              "leeway": "soon"}, monkeypatch)
    assert "settings.M2M_GUARD['leeway'] must be" in message and "'soon'" in message


def test_mixin_checks_scopes_at_class_creation() -> None:
    with pytest.raises(ImproperlyConfigured, match=r"BadView.required_scopes: invalid scope"):
        class BadView(ScopesRequiredMixin, View):
            required_scopes = {"GET": ["read deployments"]}


def test_mixin_without_scopes_is_a_configuration_error(public_settings: GuardSettings,
                                                       issuer: KeySetServer) -> None:
    class Forgotten(ScopesRequiredMixin, View):
        def get(self, request: HttpRequest) -> HttpResponse:
            return HttpResponse()

    with guarded(public_settings, [path("forgotten", Forgotten.as_view())]):
        with pytest.raises(ImproperlyConfigured, match="sets neither required_scopes"):
            Client().get("/forgotten", headers=bearer(issuer.mint()))


# -- one verifier per process ----------------------------------------------------------------

def test_one_verifier_per_configuration(public_settings: GuardSettings,
                                        make_settings: Callable[..., GuardSettings]) -> None:
    with guarded(public_settings, PATTERNS):
        first, second = WSGIHandler(), ASGIHandler()
        chain = [mw for mw in _guards(first)] + [mw for mw in _guards(second)]
        assert len(chain) == 2
        assert chain[0].verifier is chain[1].verifier is get_verifier()
        assert get_verifier(public_settings) is get_verifier()
        with override_settings(M2M_GUARD=make_settings(realm="other")):
            other = get_verifier()
            assert other is not chain[0].verifier
            assert other.settings.realm == "other"
        assert get_verifier() is chain[0].verifier  # back to the first configuration


def _guards(handler: Any) -> list[M2MGuardMiddleware]:
    """The M2MGuardMiddleware instances in a handler's chain (Django keeps bound methods)."""
    found = []
    for method in handler._exception_middleware:
        owner = getattr(method, "__self__", None)
        if isinstance(owner, M2MGuardMiddleware):
            found.append(owner)
    return found


def test_verifier_is_not_built_per_request(own_views: None, issuer: KeySetServer) -> None:
    client = Client()
    verifier = get_verifier()
    for _ in range(5):
        assert client.get("/whoami", headers=bearer(issuer.mint())).status_code == 200
    assert get_verifier() is verifier
    assert verifier.health()["ready"] is True
    assert issuer.requests["/keys"] == 1  # one key-set fetch for all five requests


# -- the documentation's snippets run ------------------------------------------------------

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.mark.parametrize("page", ["django.md", "drf.md"])
def test_docs_snippets_run(page: str) -> None:
    snippets = re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(encoding="utf-8"),
                          flags=re.DOTALL)
    assert len(snippets) >= 2
    for snippet in snippets:  # settings modules and views: defining them must just work
        namespace: dict[str, Any] = {"__name__": f"docs_{page.split('.')[0]}"}
        exec(compile(snippet, page, "exec"), namespace)
    if page == "django.md":
        assert issubclass(namespace["DeploymentsView"], ScopesRequiredMixin)
    else:
        assert namespace["DeploymentsAPI"].required_scopes["POST"] == ["deploy:applications"]


def test_warm_up_at_startup(public_settings: GuardSettings, issuer: KeySetServer) -> None:
    with guarded(public_settings, PATTERNS, M2M_GUARD_WARM_UP=True):
        WSGIHandler()
        assert issuer.requests["/keys"] == 1  # before any request
        assert get_verifier().health()["ready"] is True
        WSGIHandler()  # the same verifier: not warmed twice
        assert issuer.requests["/keys"] == 1
        response = Client().get("/whoami", headers=bearer(issuer.mint()))
        assert response.status_code == 200
        assert issuer.requests["/keys"] == 1


def test_failed_warm_up_does_not_stop_startup(make_settings: Callable[..., GuardSettings],
                                              issuer: KeySetServer,
                                              caplog: pytest.LogCaptureFixture) -> None:
    issuer.stop()
    with guarded(make_settings(http_timeout=0.5), PATTERNS, M2M_GUARD_WARM_UP=True):
        WSGIHandler()
        assert "could not warm up key sets" in caplog.text
        assert get_verifier().health()["ready"] is False
