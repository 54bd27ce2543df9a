"""RFC 9728: the protected-resource metadata document served by the ASGI middleware, and the
`resource_metadata` parameter of the 401 and 403 challenges."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from starlette.testclient import TestClient

from m2m_guard import ConfigurationError, GuardSettings, IssuerUnavailable, MissingToken
from m2m_guard._core.resource_metadata import (
    challenge_url,
    metadata_path,
    metadata_url,
    resource_metadata,
)
from m2m_guard.errors import render_error
from m2m_guard.local_issuer import KeySetServer

from .conftest import deployment_app

RESOURCE = "https://api.example.com"
DOC_URL = "https://api.example.com/.well-known/oauth-protected-resource"


def test_paths_follow_rfc_9728_section_3_1() -> None:
    assert metadata_path("https://api.example.com") == "/.well-known/oauth-protected-resource"
    assert metadata_path("https://api.example.com/") == "/.well-known/oauth-protected-resource"
    assert metadata_path("https://api.example.com/v1/") == \
        "/.well-known/oauth-protected-resource/v1"
    assert metadata_url("https://api.example.com:8443/v1") == \
        "https://api.example.com:8443/.well-known/oauth-protected-resource/v1"


def test_document(issuer: KeySetServer, make_settings: Callable[..., GuardSettings]) -> None:
    settings = make_settings(resource=RESOURCE,
                             resource_scopes=["read:deployments", "deploy:applications"])
    assert resource_metadata(settings) == {
        "resource": RESOURCE,
        "authorization_servers": [issuer.url],
        "bearer_methods_supported": ["header"],
        "scopes_supported": ["read:deployments", "deploy:applications"],
    }
    assert "scopes_supported" not in resource_metadata(make_settings(resource=RESOURCE))
    with pytest.raises(ValueError, match="resource"):
        resource_metadata(make_settings())


def test_served_and_announced_through_the_middleware(
        issuer: KeySetServer, make_settings: Callable[..., GuardSettings]) -> None:
    settings = make_settings(resource=RESOURCE, resource_scopes="read:deployments")
    with TestClient(deployment_app(settings)) as client:
        document = client.get("/.well-known/oauth-protected-resource")  # no token needed
        assert document.status_code == 200
        assert document.headers["content-type"] == "application/json"
        assert document.json()["resource"] == RESOURCE
        assert document.json()["authorization_servers"] == [issuer.url]
        assert document.json()["scopes_supported"] == ["read:deployments"]

        missing = client.get("/deployments")
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == (
            f'Bearer realm="api", resource_metadata="{DOC_URL}"')
        expired = client.get("/deployments", headers={
            "Authorization": f"Bearer {issuer.mint(exp=int(time.time()) - 3600)}"})
        assert expired.headers["www-authenticate"] == (
            'Bearer realm="api", error="invalid_token", error_description="The token has '
            f'expired.", resource_metadata="{DOC_URL}"')
        narrow = issuer.mint(scopes=["read:deployments"])
        forbidden = client.post("/deployments", headers={"Authorization": f"Bearer {narrow}"})
        assert forbidden.status_code == 403
        assert forbidden.headers["www-authenticate"].endswith(
            f'scope="deploy:applications", resource_metadata="{DOC_URL}"')


def test_resource_with_a_path(issuer: KeySetServer,
                              make_settings: Callable[..., GuardSettings]) -> None:
    settings = make_settings(resource="https://api.example.com/deployments-api")
    with TestClient(deployment_app(settings)) as client:
        path = "/.well-known/oauth-protected-resource/deployments-api"
        assert client.get(path).json()["resource"] == "https://api.example.com/deployments-api"
        assert client.get("/.well-known/oauth-protected-resource").status_code == 401
        assert f'resource_metadata="https://api.example.com{path}"' in \
            client.get("/deployments").headers["www-authenticate"]


def test_explicit_url_only_announces(issuer: KeySetServer,
                                     make_settings: Callable[..., GuardSettings]) -> None:
    url = "https://meta.example.com/.well-known/oauth-protected-resource"
    settings = make_settings(resource_metadata_url=url)
    assert challenge_url(settings) == url
    with TestClient(deployment_app(settings)) as client:
        assert client.get("/deployments").headers["www-authenticate"] == (
            f'Bearer realm="api", resource_metadata="{url}"')
        assert client.get("/.well-known/oauth-protected-resource").status_code == 401
    # With both, the explicit URL is the one announced.
    assert challenge_url(make_settings(resource=RESOURCE, resource_metadata_url=url)) == url


def test_off_by_default_and_byte_identical(issuer: KeySetServer,
                                           settings: GuardSettings) -> None:
    assert challenge_url(settings) is None
    assert render_error(MissingToken(), realm="api") == render_error(
        MissingToken(), realm="api", resource_metadata=None)
    with TestClient(deployment_app(settings)) as client:
        assert client.get("/deployments").headers["www-authenticate"] == 'Bearer realm="api"'
        assert client.get("/.well-known/oauth-protected-resource").status_code == 401


def test_503_has_no_challenge() -> None:
    rendered = render_error(IssuerUnavailable(), realm="api", resource_metadata=DOC_URL)
    assert "www-authenticate" not in dict(rendered.headers)


@pytest.mark.parametrize(("options", "message"), [
    ({"resource": "api.example.com"}, "resource must be an absolute https URL"),
    ({"resource": "https://api.example.com/#x"}, "without a fragment"),
    ({"resource": "https://api.example.com/?tenant=1"}, "without a query"),
    ({"resource": "http://api.example.com"}, "plain http is only accepted for loopback"),
    ({"resource": 'https://api.example.com/"x'}, "quotes or backslashes"),
    ({"resource_metadata_url": "https://x.example/a b"}, "without spaces"),
    ({"resource_scopes": ["read deployments"], "resource": RESOURCE}, "each entry is one scope"),
    ({"resource_scopes": ["read:deployments"]}, "resource_scopes is set but resource is not"),
])
def test_invalid_settings(make_settings: Callable[..., GuardSettings], options: dict[str, object],
                          message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        make_settings(**options)


def test_from_env(issuer: KeySetServer) -> None:
    settings = GuardSettings.from_env({
        "M2M_GUARD_ISSUER": issuer.url, "M2M_GUARD_AUDIENCE": "deployment-api",
        "M2M_GUARD_RESOURCE": RESOURCE,
        "M2M_GUARD_RESOURCE_SCOPES": "read:deployments, deploy:applications",
        "M2M_GUARD_RESOURCE_METADATA_URL": DOC_URL,
    })
    assert settings.resource == RESOURCE and settings.resource_metadata_url == DOC_URL
    assert settings.resource_scopes == ("read:deployments", "deploy:applications")
    with pytest.raises(ConfigurationError, match="M2M_GUARD_RESOURCE_SCOPES is set but"):
        GuardSettings.from_env({"M2M_GUARD_ISSUER": issuer.url,
                                "M2M_GUARD_AUDIENCE": "deployment-api",
                                "M2M_GUARD_RESOURCE_SCOPES": "a"})
