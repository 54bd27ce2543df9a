"""Provider presets (`provider=` / ``M2M_GUARD_PROVIDER``): tokens shaped as each provider's
documentation shows them (claims, header ``typ``, issuer URL form), signed by the local test
issuer's key and sent through the ASGI middleware; accepted with the scopes and client id the
preset reads, refused when they are not machine tokens (``machine_tokens_only``) or lack the
scope. The issuer URLs are the providers' own forms: with ``jwks_url`` on loopback they are
only compared with ``iss``, never contacted. Each preset equals the settings docs/providers.md
writes by hand."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from m2m_guard import (
    ConfigurationError,
    GuardSettings,
    IssuerSettings,
    current_token,
    require_clients,
    require_scopes,
)
from m2m_guard._core.providers import PROVIDERS
from m2m_guard.asgi import M2MGuardMiddleware
from m2m_guard.local_issuer import KeySetServer

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
APP = "6e74172b-be56-4843-9ff4-e66a39bb12e3"


@dataclass(frozen=True)
class Shape:
    """One provider's client-credentials token, and a user token of the same provider."""

    provider: str
    issuer: str
    audience: str | None  # None: the provider's access tokens have no aud (Cognito)
    scope: str  # a scope the machine token holds
    client: str  # its client id as the preset reads it
    machine: dict[str, Any]
    user: dict[str, Any]
    typ: str | None = "JWT"
    extra_settings: dict[str, Any] = field(default_factory=dict)


def _times() -> dict[str, int]:
    now = int(time.time())
    return {"iat": now, "nbf": now, "exp": now + 3600}


SHAPES = [
    # Auth0 "Access Token Profiles" / client credentials flow: sub "<client>@clients", azp, gty,
    # scope as a string and permissions (RBAC) as an array; issuer with a trailing slash.
    Shape("auth0", "https://acme.us.auth0.com/", "https://deployments.acme.example",
          "deploy:applications", "ZxfBVgjlBIHk3zCTPWdwSLeKwnQQzVtK",
          machine={"sub": "ZxfBVgjlBIHk3zCTPWdwSLeKwnQQzVtK@clients",
                   "azp": "ZxfBVgjlBIHk3zCTPWdwSLeKwnQQzVtK", "gty": "client-credentials",
                   "scope": "read:deployments", "permissions": ["deploy:applications"]},
          user={"sub": "auth0|64f1c2a9e8b7d6c5b4a39281", "azp": "ZxfBVgjlBIHk3zCTPWdwSLeKwnQQzVtK",
                "scope": "openid deploy:applications", "permissions": ["deploy:applications"]}),
    # Okta custom authorization server: no typ in the header, cid, scp as an array, sub = cid
    # for client credentials; issuer https://{domain}/oauth2/default.
    Shape("okta", "https://acme.okta.com/oauth2/default", "api://default",
          "deploy:applications", "0oa5ge3kwrXxkUVJU5d7",
          machine={"ver": 1, "jti": "AT.bTEb3GHuTbVJZDhVzO8y9aN8bdNkoAmTJDAq3SxXuvE",
                   "sub": "0oa5ge3kwrXxkUVJU5d7", "cid": "0oa5ge3kwrXxkUVJU5d7",
                   "scp": ["deploy:applications"]},
          user={"ver": 1, "jti": "AT.other", "sub": "jane@acme.example", "uid": "00u1a2b3c4",
                "cid": "0oa5ge3kwrXxkUVJU5d7", "scp": ["deploy:applications"]},
          typ=None),
    # Microsoft Entra ID v2.0 app-only token: roles (not scp), azp, idtyp app, tid, oid.
    Shape("entra", f"https://login.microsoftonline.com/{TENANT}/v2.0", f"api://{APP}",
          "Deployments.Write", "f2d3a1b0-4c5e-4f6a-8b7c-9d0e1f2a3b4c",
          machine={"ver": "2.0", "azp": "f2d3a1b0-4c5e-4f6a-8b7c-9d0e1f2a3b4c", "azpacr": "1",
                   "idtyp": "app", "oid": "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0",
                   "sub": "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0", "tid": TENANT,
                   "roles": ["Deployments.Write"], "uti": "abc", "rh": "0.ARoA"},
          user={"ver": "2.0", "azp": "f2d3a1b0-4c5e-4f6a-8b7c-9d0e1f2a3b4c",
                "oid": "1c2d3e4f-5061-7283-94a5-b6c7d8e9f001", "sub": "AAAAAAAAAAAAAAAAAAAAAI",
                "tid": TENANT, "scp": "Deployments.Write", "name": "Jane"}),
    # Entra v1.0 issuer form (sts.windows.net), appid instead of azp.
    Shape("entra", f"https://sts.windows.net/{TENANT}/", f"api://{APP}",
          "Deployments.Write", "f2d3a1b0-4c5e-4f6a-8b7c-9d0e1f2a3b4c",
          machine={"ver": "1.0", "appid": "f2d3a1b0-4c5e-4f6a-8b7c-9d0e1f2a3b4c",
                   "appidacr": "1", "idtyp": "app", "oid": "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0",
                   "sub": "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0", "tid": TENANT,
                   "roles": ["Deployments.Write"]},
          user={"ver": "1.0", "appid": "f2d3a1b0-4c5e-4f6a-8b7c-9d0e1f2a3b4c",
                "oid": "1c2d3e4f-5061-7283-94a5-b6c7d8e9f001", "sub": "AAAAAAAAAAAAAAAAAAAAAI",
                "tid": TENANT, "scp": "Deployments.Write", "upn": "jane@acme.example"}),
    # Keycloak service account: realm_access.roles and resource_access.<client>.roles, azp.
    Shape("keycloak", "https://sso.acme.example/realms/platform", "deployment-api",
          "deploy:applications", "deployment-cli",
          machine={"jti": "5f0e1a2b-3c4d", "sub": "8c1d5e2f-6a7b-4c8d-9e0f-1a2b3c4d5e6f",
                   "typ": "Bearer", "azp": "deployment-cli", "acr": "1",
                   "realm_access": {"roles": ["offline_access", "uma_authorization"]},
                   "resource_access": {"deployment-api": {"roles": ["deploy:applications"]}},
                   "scope": "profile email", "client_id": "deployment-cli",
                   "preferred_username": "service-account-deployment-cli"},
          user={"sub": "9d2e", "typ": "Bearer", "azp": "deployment-cli",
                "realm_access": {"roles": {"deploy:applications": True}},  # not a list: nothing
                "resource_access": {"deployment-api": {"roles": "deploy:applications x"}},
                "scope": "openid"},
          extra_settings={"scope_claims": ("scope", "realm_access.roles",
                                           "resource_access.deployment-api.roles")}),
    # Amazon Cognito client credentials: no aud, client_id, token_use access, scope
    # "<resource server>/<scope>", no typ in the header.
    Shape("cognito", "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Ab12Cd34E", None,
          "deployment-api/deploy", "1example23456789abcdefghij",
          machine={"sub": "1example23456789abcdefghij", "client_id": "1example23456789abcdefghij",
                   "token_use": "access", "scope": "deployment-api/deploy", "version": 2,
                   "jti": "a1b2c3d4-e5f6", "auth_time": 1700000000},
          user={"sub": "aaaaaaaa-bbbb-cccc-dddd-example", "client_id": "1example23456789abcdefghij",
                "token_use": "access", "scope": "deployment-api/deploy",
                "username": "jane", "version": 2},
          typ=None, extra_settings={"verify_audience": False,
                                    "allowed_clients": ("1example23456789abcdefghij",)}),
]


def _app(settings: GuardSettings, shape: Shape) -> Starlette:
    @require_scopes(shape.scope)
    async def deploy(request: Request) -> JSONResponse:
        token = current_token()
        assert token is not None
        return JSONResponse({"client_id": token.client_id, "scopes": sorted(token.scopes)})

    @require_clients(shape.client)
    async def mine(request: Request) -> JSONResponse:
        return JSONResponse({})

    return Starlette(routes=[Route("/deploy", deploy), Route("/mine", mine)],
                     middleware=[Middleware(settings)])


def Middleware(settings: GuardSettings) -> Any:  # noqa: N802 - reads like Starlette's
    from starlette.middleware import Middleware as StarletteMiddleware

    return StarletteMiddleware(M2MGuardMiddleware, settings=settings)


def _settings(issuer: KeySetServer, shape: Shape, **more: Any) -> GuardSettings:
    values: dict[str, Any] = {
        "issuer": IssuerSettings(shape.issuer, jwks_url=issuer.jwks_url),
        "audience": shape.audience or (), "provider": shape.provider, "http_timeout": 2.0}
    values.update(shape.extra_settings)
    values.update(more)
    return GuardSettings(**values)


def _token(issuer: KeySetServer, shape: Shape, claims: dict[str, Any]) -> str:
    body = {"iss": shape.issuer, **_times(), **claims}
    if shape.audience is not None:
        body["aud"] = shape.audience
    return issuer.keys[0].sign(body, typ=shape.typ)


@pytest.fixture(params=SHAPES, ids=[f"{s.provider}-{s.issuer.split('/')[2]}" for s in SHAPES])
def shape(request: pytest.FixtureRequest) -> Iterator[Shape]:
    yield request.param


def test_machine_tokens_are_accepted_with_the_preset_reading(issuer: KeySetServer,
                                                             shape: Shape) -> None:
    machine_only = shape.provider != "keycloak"  # Keycloak cannot tell (see below)
    with TestClient(_app(_settings(issuer, shape, machine_tokens_only=machine_only),
                         shape)) as client:
        auth = {"Authorization": f"Bearer {_token(issuer, shape, shape.machine)}"}
        reply = client.get("/deploy", headers=auth)
        assert reply.status_code == 200, reply.text
        assert reply.json()["client_id"] == shape.client
        assert shape.scope in reply.json()["scopes"]
        assert client.get("/mine", headers=auth).status_code == 200


def test_user_tokens_are_refused_when_machine_tokens_only(issuer: KeySetServer,
                                                          shape: Shape) -> None:
    if shape.provider == "keycloak":  # its tokens do not tell a service account apart
        with pytest.raises(ConfigurationError, match="machine_tokens_only is on"):
            _settings(issuer, shape, machine_tokens_only=True)
        return
    with TestClient(_app(_settings(issuer, shape, machine_tokens_only=True), shape)) as client:
        reply = client.get("/deploy", headers={
            "Authorization": f"Bearer {_token(issuer, shape, shape.user)}"})
    assert reply.status_code == 403
    assert reply.headers["www-authenticate"] == 'Bearer realm="api"'
    assert reply.json() == {"error": "access_denied", "error_description":
                            "The token does not satisfy the rule machine_token"}


def test_without_machine_tokens_only_a_user_token_is_judged_on_its_scopes(
        issuer: KeySetServer, shape: Shape) -> None:
    with TestClient(_app(_settings(issuer, shape), shape)) as client:
        reply = client.get("/deploy", headers={
            "Authorization": f"Bearer {_token(issuer, shape, shape.user)}"})
    if shape.provider == "keycloak":  # roles of the wrong JSON type count for nothing
        assert reply.status_code == 403
        assert reply.json()["error"] == "insufficient_scope"
    else:
        assert reply.status_code == 200, reply.text


def test_a_token_without_the_scope_is_insufficient_scope(issuer: KeySetServer,
                                                         shape: Shape) -> None:
    scopeless = {name: value for name, value in shape.machine.items()
                 if name not in ("scope", "scp", "roles", "permissions", "realm_access",
                                 "resource_access")}
    with TestClient(_app(_settings(issuer, shape), shape)) as client:
        reply = client.get("/deploy", headers={
            "Authorization": f"Bearer {_token(issuer, shape, scopeless)}"})
    assert reply.status_code == 403
    assert reply.json()["error"] == "insufficient_scope"


def test_cognito_requires_token_use_access(issuer: KeySetServer) -> None:
    cognito = next(s for s in SHAPES if s.provider == "cognito")
    id_token = {**cognito.machine, "token_use": "id"}
    with TestClient(_app(_settings(issuer, cognito), cognito)) as client:
        reply = client.get("/deploy", headers={
            "Authorization": f"Bearer {_token(issuer, cognito, id_token)}"})
    assert reply.status_code == 403
    assert reply.json()["error_description"] == \
        "The token does not satisfy the rule claim:token_use"


# The settings docs/providers.md shows for each preset, written by hand.
BY_HAND: dict[str, dict[str, Any]] = {
    "scalekit": {},
    "auth0": {"scope_claims": ("scope", "permissions"), "client_id_claims": ("azp", "client_id")},
    "okta": {"scope_claims": ("scp",), "client_id_claims": ("cid",)},
    "entra": {"scope_claims": ("roles", "scp"), "client_id_claims": ("azp", "appid")},
    "keycloak": {"scope_claims": ("scope", "realm_access.roles"),
                 "client_id_claims": ("azp", "client_id")},
    "cognito": {"scope_claims": ("scope",), "client_id_claims": ("client_id",),
                "required_claim_values": {"token_use": "access"}},
}


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_each_preset_is_settings_a_user_could_write(provider: str) -> None:
    base = {"issuer": "https://issuer.example", "audience": "api"}
    preset = GuardSettings(**base, provider=provider)
    by_hand = GuardSettings(**base, **BY_HAND[provider])
    for name in ("scope_claims", "client_id_claims", "required_claim_values"):
        assert getattr(preset, name) == getattr(by_hand, name), name


def test_explicit_options_win_over_the_preset() -> None:
    settings = GuardSettings(issuer="https://issuer.example", audience="api", provider="okta",
                             scope_claims=("scp", "scope"),
                             required_claim_values={"tier": "gold"})
    assert settings.scope_claims == ("scp", "scope")
    assert settings.client_id_claims == ("cid",)
    cognito = GuardSettings(issuer="https://issuer.example", audience="api", provider="cognito",
                            required_claim_values={"custom:tier": "gold"})
    assert cognito.required_claim_values == (("custom:tier", ("gold",)),
                                             ("token_use", ("access",)))


def test_machine_tokens_only_needs_a_provider_that_can_tell() -> None:
    for provider in ("scalekit", "keycloak"):
        with pytest.raises(ConfigurationError, match="machine_tokens_only is on but provider"):
            GuardSettings(issuer="https://issuer.example", audience="api", provider=provider,
                          machine_tokens_only=True)
    with pytest.raises(ConfigurationError, match="^M2M_GUARD_PROVIDER must be one of"):
        GuardSettings.from_env({"M2M_GUARD_ISSUER": "https://issuer.example",
                                "M2M_GUARD_AUDIENCE": "api", "M2M_GUARD_PROVIDER": "okra"})
