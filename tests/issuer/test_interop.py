"""Clients nobody here wrote: authlib gets tokens, PyJWT reads /keys, m2m_guard's middleware
accepts the result (the example deployment API of the README)."""

from __future__ import annotations

import warnings

import httpx
import jwt
import pytest
from starlette.testclient import TestClient

from examples.starlette_app import create_app
from m2m_guard import GuardSettings

from .conftest import ORG, Rig

with warnings.catch_warnings():  # authlib announces a future package rename on import
    import authlib.deprecate  # noqa: F401 - installs an "always" filter of its own: override it next

    warnings.simplefilter("ignore")
    from authlib.integrations.httpx_client import OAuth2Client

AUDIENCE = "deployment-api"


@pytest.fixture(scope="module")
def deployer(shared_rig: Rig) -> tuple[str, str]:
    client, secret = shared_rig.create(
        ORG, scopes=["deploy:applications", "read:deployments"], audience=[AUDIENCE],
        custom_claims=[{"key": "environment", "value": "production_us"}])
    return client["client_id"], secret


@pytest.mark.parametrize("method", ["client_secret_post", "client_secret_basic"])
def test_authlib_pyjwt_and_the_middleware(shared_rig: Rig, deployer: tuple[str, str],
                                          method: str) -> None:
    client_id, secret = deployer
    url = shared_rig.url
    with OAuth2Client(client_id, secret, token_endpoint_auth_method=method) as oauth:
        token = oauth.fetch_token(url + "/oauth/token", grant_type="client_credentials")
    assert token["token_type"] == "Bearer" and token["expires_in"] == 3600
    access_token = token["access_token"]

    jwks = jwt.PyJWKClient(url + "/keys")
    signing_key = jwks.get_signing_key_from_jwt(access_token)
    claims = jwt.decode(access_token, signing_key.key, algorithms=["RS256"], audience=AUDIENCE,
                        issuer=url, options={"require": ["exp", "iat", "nbf", "sub"]})
    assert claims["sub"] == client_id and claims["oid"] == ORG
    assert claims["custom_claims"] == {"environment": "production_us"}

    app = create_app(GuardSettings(issuer=url, audience=AUDIENCE, public_paths=("/health",)))
    with TestClient(app) as api:
        bearer = {"Authorization": f"Bearer {access_token}"}
        assert api.get("/deployments", headers=bearer).status_code == 200
        deployed = api.post("/deployments", headers=bearer,
                            json={"service": "billing", "version": "1.5.0"})
        assert deployed.status_code == 202
        assert deployed.json()["requested_by"] == client_id
        denied = api.get("/admin/audit", headers=bearer)
        assert denied.status_code == 403
        assert 'scope="admin:platform"' in denied.headers["www-authenticate"]
        assert api.get("/deployments").status_code == 401


def test_authlib_narrowed_scope_is_enforced_by_the_middleware(shared_rig: Rig,
                                                               deployer: tuple[str, str]) -> None:
    client_id, secret = deployer
    with OAuth2Client(client_id, secret, scope="read:deployments") as oauth:
        token = oauth.fetch_token(shared_rig.url + "/oauth/token",
                                  grant_type="client_credentials")
    assert token["scope"] == "read:deployments"
    app = create_app(GuardSettings(issuer=shared_rig.url, audience=AUDIENCE))
    with TestClient(app) as api:
        bearer = {"Authorization": f"Bearer {token['access_token']}"}
        assert api.get("/deployments", headers=bearer).status_code == 200
        assert api.post("/deployments", headers=bearer, json={}).status_code == 403


def test_authlib_sees_oauth_errors(shared_rig: Rig, deployer: tuple[str, str]) -> None:
    from authlib.integrations.base_client import OAuthError

    client_id, _ = deployer
    with OAuth2Client(client_id, "wrong-secret") as oauth, \
            pytest.raises(OAuthError) as refused:
        oauth.fetch_token(shared_rig.url + "/oauth/token", grant_type="client_credentials")
    assert refused.value.error == "invalid_client"
    assert isinstance(httpx.get(shared_rig.url + "/keys").json()["keys"], list)
