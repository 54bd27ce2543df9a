"""FastAPI's OpenAPI document: the client-credentials scheme with its scopes and token URL, and
each operation's security requirement, for the dependency form, `require_scopes` and the
middleware; where the token URL comes from (setting, discovery, fallback)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import pytest
from fastapi import APIRouter, FastAPI, Security
from fastapi.testclient import TestClient

from examples.fastapi_app import SCOPES, create_app
from m2m_guard import (
    AccessToken,
    ConfigurationError,
    GuardSettings,
    IssuerSettings,
    TokenVerifier,
    require_any_scope,
    require_claims,
    require_scopes,
)
from m2m_guard._adapters.fastapi_openapi import RULES_EXTENSION
from m2m_guard._core.fetch import read_token_endpoint
from m2m_guard.asgi import M2MGuardMiddleware
from m2m_guard.fastapi import SCHEME_NAME, M2MGuard, M2MToken, RequireScopes, m2m_token
from m2m_guard.local_issuer import KeySetServer


def security_of(schema: dict[str, Any]) -> dict[tuple[str, str], Any]:
    return {(path, method): operation.get("security")
            for path, item in schema["paths"].items() for method, operation in item.items()}


def flow_of(schema: dict[str, Any]) -> dict[str, Any]:
    scheme = schema["components"]["securitySchemes"][SCHEME_NAME]
    assert scheme["type"] == "oauth2"
    assert set(scheme["flows"]) == {"clientCredentials"}
    flow: dict[str, Any] = scheme["flows"]["clientCredentials"]
    return flow


def test_example_documents_the_client_credentials_flow(issuer: KeySetServer,
                                                       settings: GuardSettings) -> None:
    with TestClient(create_app(settings.replace(token_url="https://auth.example.com/token"))) \
            as client:
        schema = client.get("/openapi.json").json()
    flow = flow_of(schema)
    assert flow["tokenUrl"] == "https://auth.example.com/token"
    assert flow["scopes"] == SCOPES  # every scope a route demands, with its description
    assert security_of(schema) == {
        ("/deployments", "get"): [{SCHEME_NAME: ["read:deployments"]}],
        ("/deployments", "post"): [{SCHEME_NAME: ["deploy:applications"]}],
        ("/admin/audit", "get"): [{SCHEME_NAME: ["admin:platform"]}],
        ("/production/deployments", "get"): [{SCHEME_NAME: ["deploy:applications"]}],
        ("/admin/clients", "get"): [{SCHEME_NAME: []}],
        ("/releases", "get"): [{SCHEME_NAME: []}],
        ("/health", "get"): None,
    }


def test_rules_beyond_scopes_are_documented_per_operation(settings: GuardSettings) -> None:
    """`RequireRule` dependencies: the scope part of an all_of in the security requirement,
    every other rule in words in `x-m2m-guard-rules` and in the description."""
    with TestClient(create_app(settings)) as client:
        paths = client.get("/openapi.json").json()["paths"]
    rules = {path: paths[path]["get"].get(RULES_EXTENSION)
             for path in ("/production/deployments", "/admin/clients", "/releases",
                          "/admin/audit")}
    assert rules == {
        "/production/deployments": ['claim custom_claims.environment equal to "production_us"'],
        "/admin/clients": [
            "client id one of m2morg_68315758685323697, m2morg_77210528056826613"],
        "/releases": ["any of: the scopes admin:platform; or release-service"],
        "/admin/audit": None,  # scopes only: the security requirement says it all
    }
    description = paths["/production/deployments"]["get"]["description"]
    assert description.endswith('The access token must satisfy: claim '
                                'custom_claims.environment equal to "production_us".')
    assert "access_denied" in paths["/releases"]["get"]["responses"]["403"]["description"]


def test_decorated_rules_are_documented_too(settings: GuardSettings) -> None:
    app = FastAPI()

    @app.get("/production", summary="Production only")
    @require_claims({"custom_claims.environment": ["production_us", "production_eu"]})
    async def production(token: M2MToken) -> dict[str, str]:
        """Deploy to production."""
        return {}

    M2MGuard(app, settings)
    with TestClient(app) as client:
        operation = client.get("/openapi.json").json()["paths"]["/production"]["get"]
    assert operation["security"] == [{SCHEME_NAME: []}]
    assert operation[RULES_EXTENSION] == [
        'claim custom_claims.environment one of "production_us", "production_eu"']
    assert operation["description"].startswith("Deploy to production.\n\n")


def test_token_url_from_discovery(issuer: KeySetServer, settings: GuardSettings) -> None:
    issuer.discovery_extra["token_endpoint"] = issuer.url + "/oauth2/v1/token"
    app = create_app(settings)
    with TestClient(app) as client:  # startup warms up: discovery has run
        schema = client.get("/openapi.json").json()
        assert app.state.m2m_guard.verifier.token_endpoint() == issuer.url + "/oauth2/v1/token"
        assert app.state.m2m_guard.verifier.token_endpoint(issuer.url) == (
            issuer.url + "/oauth2/v1/token")
    assert flow_of(schema)["tokenUrl"] == issuer.url + "/oauth2/v1/token"


def test_token_url_follows_discovery_once_it_has_run(
        issuer: KeySetServer, settings: GuardSettings,
        caplog: pytest.LogCaptureFixture) -> None:
    issuer.discovery_extra["token_endpoint"] = issuer.url + "/oauth2/v1/token"
    client = TestClient(create_app(settings))  # no lifespan: nothing fetched yet
    before = client.get("/openapi.json").json()
    client.get("/deployments", headers={"Authorization": f"Bearer {issuer.mint()}"})
    after = client.get("/openapi.json").json()
    assert flow_of(before)["tokenUrl"] == issuer.url + "/oauth/token"  # fallback, with a hint
    assert "M2M_GUARD_TOKEN_URL" in caplog.text
    assert flow_of(after)["tokenUrl"] == issuer.url + "/oauth2/v1/token"


def test_configured_jwks_url_means_no_discovery_so_set_token_url(
        issuer: KeySetServer, make_settings: Callable[..., GuardSettings]) -> None:
    settings = make_settings(jwks_url=issuer.jwks_url)
    with TestClient(create_app(settings)) as client:
        schema = client.get("/openapi.json").json()
        verifier = client.app.state.m2m_guard.verifier  # type: ignore[attr-defined]
        assert verifier.token_endpoint() is None
    assert flow_of(schema)["tokenUrl"] == issuer.url + "/oauth/token"
    assert issuer.requests["/.well-known/openid-configuration"] == 0


def test_token_url_argument_wins(settings: GuardSettings) -> None:
    app = FastAPI()

    @app.get("/x")
    async def x(token: M2MToken) -> None:
        return None

    M2MGuard(app, settings.replace(token_url="https://settings.example.com/token"),
             token_url="https://argument.example.com/token")
    assert flow_of(app.openapi())["tokenUrl"] == "https://argument.example.com/token"


@pytest.mark.parametrize("value, expected", [
    ("https://auth.example.com/oauth/token", "https://auth.example.com/oauth/token"),
    ("http://127.0.0.1:1/oauth/token", None),  # plain http on another origin
    ("/oauth/token", None),
    ("javascript:alert(1)", None),
    ("https://auth.example.com/a b", None),
    (42, None),
    ("https://" + "a" * 3000, None),
])
def test_read_token_endpoint(value: Any, expected: str | None) -> None:
    issuer = IssuerSettings("http://127.0.0.1:8000")
    assert read_token_endpoint(issuer, {"token_endpoint": value}) == expected
    same_origin = "http://127.0.0.1:8000/oauth/token"
    assert read_token_endpoint(issuer, {"token_endpoint": same_origin}) == same_origin


def test_a_sync_fetch_learns_the_token_endpoint_too(issuer: KeySetServer,
                                                    settings: GuardSettings) -> None:
    with TokenVerifier(settings) as verifier:
        assert verifier.token_endpoint() is None
        verifier.warm_up_sync()
        assert verifier.token_endpoint() == issuer.url + "/oauth/token"
        assert verifier.token_endpoint("https://other.example.com") is None


def test_token_url_setting(issuer: KeySetServer) -> None:
    env = {"M2M_GUARD_ISSUER": issuer.url, "M2M_GUARD_AUDIENCE": "api",
           "M2M_GUARD_TOKEN_URL": "https://auth.example.com/oauth/token"}
    assert GuardSettings.from_env(env).token_url == "https://auth.example.com/oauth/token"
    with pytest.raises(ConfigurationError, match="token_url"):
        GuardSettings(issuer=issuer.url, audience="api", token_url="ftp://auth.example.com/t")
    with pytest.raises(ConfigurationError, match="token_url"):
        GuardSettings(issuer=issuer.url, audience="api", token_url="http://auth.example.com/t")


def test_every_form_declares_its_requirement(settings: GuardSettings) -> None:
    """Dependencies, `require_scopes` / `require_any_scope` (stacked too), both at once, and the
    middleware's lock on every path it guards; public paths and unguarded routes stay open."""
    app = FastAPI()
    app.add_middleware(M2MGuardMiddleware,
                       settings=settings.replace(public_paths=("/health", "/docs*")))
    router = APIRouter()

    @router.get("/dependency")
    async def dependency(token: Annotated[AccessToken, Security(
            m2m_token, scopes=["read:deployments"])]) -> None:
        return None

    @router.get("/marker", dependencies=[RequireScopes("admin:platform")])
    def marker() -> None:
        return None

    @router.get("/decorated")
    @require_scopes("deploy:applications")
    async def decorated() -> None:
        return None

    @router.get("/any-of")
    @require_any_scope("audit:read", "read:deployments")
    def any_of() -> None:
        return None

    @router.get("/stacked")
    @require_scopes("deploy:applications")
    @require_any_scope("audit:read", "admin:platform")
    async def stacked() -> None:
        return None

    @router.get("/both")
    @require_scopes("deploy:applications")
    async def both(token: Annotated[AccessToken, RequireScopes("read:deployments")]) -> None:
        return None

    @router.get("/guarded")
    async def guarded() -> None:
        return None

    @router.get("/health")
    async def health() -> None:
        return None

    @router.get("/docs/extra")
    async def docs_extra() -> None:
        return None

    app.include_router(router)
    M2MGuard(app, scopes={"audit:read": "Read the audit log"})
    schema = app.openapi()
    assert security_of(schema) == {
        ("/dependency", "get"): [{SCHEME_NAME: ["read:deployments"]}],
        ("/marker", "get"): [{SCHEME_NAME: ["admin:platform"]}],
        ("/decorated", "get"): [{SCHEME_NAME: ["deploy:applications"]}],
        ("/any-of", "get"): [{SCHEME_NAME: ["audit:read"]},
                             {SCHEME_NAME: ["read:deployments"]}],
        ("/stacked", "get"): [{SCHEME_NAME: ["deploy:applications", "audit:read"]},
                              {SCHEME_NAME: ["deploy:applications", "admin:platform"]}],
        ("/both", "get"): [{SCHEME_NAME: ["read:deployments", "deploy:applications"]}],
        ("/guarded", "get"): [{SCHEME_NAME: []}],
        ("/health", "get"): None,
        ("/docs/extra", "get"): None,
    }
    assert flow_of(schema)["scopes"] == {
        "admin:platform": "", "audit:read": "Read the audit log", "deploy:applications": "",
        "read:deployments": ""}
    # the document is built from FastAPI's cached one each time, never compounded
    assert app.openapi() == schema


def test_no_guarded_route_means_no_scheme(settings: GuardSettings) -> None:
    app = FastAPI()

    @app.get("/open")
    async def open_route() -> None:
        return None

    M2MGuard(app, settings)
    schema = app.openapi()
    assert "securitySchemes" not in schema.get("components", {})
    assert security_of(schema) == {("/open", "get"): None}


def test_docs_page_offers_the_flow(issuer: KeySetServer, settings: GuardSettings) -> None:
    with TestClient(create_app(settings)) as client:
        docs = client.get("/docs")
        schema = client.get("/openapi.json").json()
    assert docs.status_code == 200
    assert "swagger-ui" in docs.text
    assert schema["components"]["securitySchemes"][SCHEME_NAME]["description"].startswith(
        "OAuth 2.0 client credentials")


def test_decorator_only_app_gets_the_whole_scheme(settings: GuardSettings) -> None:
    app = FastAPI()
    app.add_middleware(M2MGuardMiddleware,
                       settings=settings.replace(token_url="https://auth.example.com/token"))

    @app.get("/deploy")
    @require_scopes("deploy:applications")
    def deploy() -> None:
        return None

    M2MGuard(app)
    schema = app.openapi()
    assert schema["components"]["securitySchemes"] == {SCHEME_NAME: {
        "type": "oauth2",
        "description": "OAuth 2.0 client credentials: send the access token as "
                       "`Authorization: Bearer <token>`.",
        "flows": {"clientCredentials": {"tokenUrl": "https://auth.example.com/token",
                                        "scopes": {"deploy:applications": ""}}},
    }}
    assert security_of(schema) == {("/deploy", "get"): [{SCHEME_NAME: ["deploy:applications"]}]}


def test_guarded_operations_document_401_and_403(issuer: KeySetServer,
                                                 settings: GuardSettings) -> None:
    """Every operation with a guard requirement documents the refusals a client gets (the error
    body's schema and the WWW-Authenticate header); public ones document none."""
    app = FastAPI()
    app.add_middleware(M2MGuardMiddleware,
                       settings=settings.replace(public_paths=("/health", "/openapi.json")))
    M2MGuard(app, token_url="https://auth.example.com/token")

    @app.get("/deployments")
    async def deployments(token: Annotated[AccessToken, RequireScopes("read:deployments")]
                          ) -> dict[str, str]:
        return {}

    @app.get("/locked")  # guarded by the middleware only
    async def locked() -> dict[str, str]:
        return {}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {}

    with TestClient(app) as client:
        schema = client.get("/openapi.json").json()
        refused = client.get("/deployments")
    assert refused.status_code == 401
    error_schema = schema["components"]["schemas"]["M2MGuardError"]
    assert set(refused.json()) <= set(error_schema["properties"])
    assert refused.json()["error"] in error_schema["properties"]["error"]["enum"]
    for path in ("/deployments", "/locked"):
        responses = schema["paths"][path]["get"]["responses"]
        for status in ("401", "403"):
            answer = responses[status]
            assert "WWW-Authenticate" in answer["headers"]
            assert answer["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/M2MGuardError"}
    assert set(schema["paths"]["/health"]["get"]["responses"]) == {"200"}
