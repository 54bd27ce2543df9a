"""POST /oauth/token over real HTTP: the success shape, Scalekit's claims, RFC 6749 §5.2 errors."""

from __future__ import annotations

import base64
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from m2m_guard import GuardSettings, TokenVerifier
from m2m_guard._core.encoding import b64url_decode

from .conftest import ORG, Rig


def decode(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    header, payload, _ = token.split(".")
    return json.loads(b64url_decode(header)), json.loads(b64url_decode(payload))


@pytest.fixture(scope="module")
def quickstart(shared_rig: Rig) -> tuple[str, str]:
    client, secret = shared_rig.create(
        ORG, description="deploys", scopes=["deploy:applications", "read:deployments"],
        audience=["deployment-api"], expiry=1800,
        custom_claims=[{"key": "github_repository", "value": "acmecorp/inventory-service"},
                       {"key": "environment", "value": "production_us"}])
    return client["client_id"], secret


def oauth_error(response: httpx.Response, status: int, error: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"
    body = response.json()
    assert body["error"] == error
    if error == "invalid_client":
        assert response.headers["www-authenticate"].startswith('Basic realm="')
    return str(body["error_description"])


def test_a_token_carries_exactly_scalekits_claims(shared_rig: Rig,
                                                  quickstart: tuple[str, str]) -> None:
    client_id, secret = quickstart
    response = shared_rig.token(client_id, secret)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
    assert body["token_type"] == "Bearer" and body["expires_in"] == 1800
    assert body["scope"] == "deploy:applications read:deployments"
    header, claims = decode(body["access_token"])
    assert header == {"alg": "RS256", "kid": shared_rig.issuer.keys.signing_key().kid,
                      "typ": "JWT"}
    assert header["kid"].startswith("snk_")
    assert set(claims) == {"iss", "sub", "client_id", "oid", "scopes", "scope", "aud",
                           "custom_claims", "jti", "iat", "nbf", "exp"}
    assert claims["iss"] == shared_rig.url
    assert claims["sub"] == claims["client_id"] == client_id
    assert claims["oid"] == ORG
    assert claims["scopes"] == ["deploy:applications", "read:deployments"]
    assert claims["scope"] == "deploy:applications read:deployments"
    assert claims["aud"] == ["deployment-api"]
    assert claims["custom_claims"] == {"github_repository": "acmecorp/inventory-service",
                                       "environment": "production_us"}
    assert claims["jti"].startswith("tkn_")
    assert claims["nbf"] == claims["iat"] and claims["exp"] == claims["iat"] + 1800
    # And m2m_guard accepts it.
    with TokenVerifier(GuardSettings(issuer=shared_rig.url, audience="deployment-api")) as v:
        access = v.verify_sync(body["access_token"])
    assert access.client_id == client_id and access.organization_id == ORG
    assert access.scopes == {"deploy:applications", "read:deployments"}


def test_no_aud_claim_without_a_registered_audience(shared_rig: Rig) -> None:
    client, secret = shared_rig.create(ORG, name="no audience")
    _, claims = decode(shared_rig.access_token(client["client_id"], secret))
    assert "aud" not in claims
    assert claims["scopes"] == [] and claims["scope"] == "" and claims["custom_claims"] == {}


def test_http_basic_credentials(shared_rig: Rig, quickstart: tuple[str, str]) -> None:
    client_id, secret = quickstart
    response = shared_rig.http.post("/oauth/token", auth=(client_id, secret),
                                    data={"grant_type": "client_credentials"})
    assert response.status_code == 200
    # A client_id repeated in the form is allowed when it matches (some clients send it).
    again = shared_rig.http.post("/oauth/token", auth=(client_id, secret),
                                 data={"grant_type": "client_credentials", "client_id": client_id})
    assert again.status_code == 200


def test_scope_narrows_to_a_subset(shared_rig: Rig, quickstart: tuple[str, str]) -> None:
    client_id, secret = quickstart
    body = shared_rig.token(client_id, secret, scope="read:deployments").json()
    assert body["scope"] == "read:deployments"
    _, claims = decode(body["access_token"])
    assert claims["scopes"] == ["read:deployments"] and claims["scope"] == "read:deployments"
    both = shared_rig.token(client_id, secret, scope="read:deployments deploy:applications")
    assert both.json()["scope"] == "deploy:applications read:deployments"


@pytest.mark.parametrize("scope", ["admin:platform", "read:deployments admin:platform", "",
                                   "read:deployments  deploy:applications", " read:deployments"])
def test_invalid_scope(shared_rig: Rig, quickstart: tuple[str, str], scope: str) -> None:
    description = oauth_error(shared_rig.token(*quickstart, scope=scope), 400, "invalid_scope")
    if "admin" in scope:
        assert "admin:platform" in description and "read:deployments" in description


def _basic(value: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(value.encode()).decode()}


def test_client_authentication_errors(shared_rig: Rig, quickstart: tuple[str, str]) -> None:
    client_id, secret = quickstart
    http = shared_rig.http
    grant = {"grant_type": "client_credentials"}
    cases = [
        shared_rig.token(client_id, secret + "x"),
        shared_rig.token(client_id, secret[:-1]),
        shared_rig.token("m2morg_12345678901234567", secret),
        shared_rig.token("x" * 500, secret),
        shared_rig.token(client_id, ""),
        http.post("/oauth/token", data=grant),
        http.post("/oauth/token", data={**grant, "client_id": client_id}),
        http.post("/oauth/token", data=grant, auth=(client_id, "wrong")),
        http.post("/oauth/token", data=grant, headers={"Authorization": "Basic !!!"}),
        http.post("/oauth/token", data=grant, headers=_basic("no-colon")),
        http.post("/oauth/token", data=grant, headers={"Authorization": "Bearer abc"}),
    ]
    for response in cases:
        description = oauth_error(response, 401, "invalid_client")
        assert secret not in description


def test_invalid_requests(shared_rig: Rig, quickstart: tuple[str, str]) -> None:
    client_id, secret = quickstart
    http = shared_rig.http
    form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
    both = http.post("/oauth/token", data=form, auth=(client_id, secret))
    assert "one way" in oauth_error(both, 400, "invalid_request")
    other_id = http.post("/oauth/token", auth=(client_id, secret),
                         data={"grant_type": "client_credentials", "client_id": "m2morg_2"})
    oauth_error(other_id, 400, "invalid_request")
    repeated = http.post("/oauth/token", content=(
        f"grant_type=client_credentials&client_id={client_id}&client_secret={secret}"
        "&scope=a&scope=b"), headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert "repeated" in oauth_error(repeated, 400, "invalid_request")
    as_json = http.post("/oauth/token", json=form)
    assert "x-www-form-urlencoded" in oauth_error(as_json, 400, "invalid_request")
    huge = http.post("/oauth/token", data={**form, "padding": "x" * 20000})
    oauth_error(huge, 400, "invalid_request")
    no_grant = http.post("/oauth/token", data={k: v for k, v in form.items()
                                               if k != "grant_type"})
    assert "grant_type" in oauth_error(no_grant, 400, "invalid_request")
    two_headers = http.post("/oauth/token", data={"grant_type": "client_credentials"},
                            headers=[("Authorization", "Basic YTpi"),
                                     ("Authorization", "Basic YTpi")])
    oauth_error(two_headers, 400, "invalid_request")
    bad_bytes = http.post("/oauth/token", content=b"grant_type=\xff\xfe",
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
    oauth_error(bad_bytes, 400, "invalid_request")


@pytest.mark.parametrize("grant_type", ["password", "authorization_code", "refresh_token",
                                        "CLIENT_CREDENTIALS"])
def test_unsupported_grant_type(shared_rig: Rig, quickstart: tuple[str, str],
                                grant_type: str) -> None:
    client_id, secret = quickstart
    response = shared_rig.http.post("/oauth/token", data={
        "grant_type": grant_type, "client_id": client_id, "client_secret": secret})
    oauth_error(response, 400, "unsupported_grant_type")


def test_unknown_parameters_are_ignored(shared_rig: Rig, quickstart: tuple[str, str]) -> None:
    assert shared_rig.token(*quickstart, audience="x", resource="y").status_code == 200


def test_concurrent_token_requests(shared_rig: Rig, quickstart: tuple[str, str]) -> None:
    client_id, secret = quickstart
    other, other_secret = shared_rig.create(ORG, name="second", scopes=["read:deployments"],
                                            audience=["deployment-api"])
    credentials = [(client_id, secret), (other["client_id"], other_secret)] * 12

    def fetch(pair: tuple[str, str]) -> httpx.Response:
        with httpx.Client(base_url=shared_rig.url, timeout=30) as client:
            return client.post("/oauth/token", data={
                "grant_type": "client_credentials", "client_id": pair[0],
                "client_secret": pair[1]})

    with ThreadPoolExecutor(max_workers=12) as pool:
        responses = list(pool.map(fetch, credentials))
    assert [r.status_code for r in responses] == [200] * len(credentials)
    tokens = [r.json()["access_token"] for r in responses]
    assert len({decode(t)[1]["jti"] for t in tokens}) == len(tokens)
    with TokenVerifier(GuardSettings(issuer=shared_rig.url, audience="deployment-api")) as v:
        subjects = [v.verify_sync(token).client_id for token in tokens]
    assert subjects == [pair[0] for pair in credentials]


def test_form_credentials_beside_a_bearer_header(shared_rig: Rig,
                                                 quickstart: tuple[str, str]) -> None:
    """The Scalekit SDKs send their own Bearer token on every request, the M2M client's
    credentials in the form: the header is not a client method, the form authenticates."""
    client_id, secret = quickstart
    form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
    answer = shared_rig.http.post("/oauth/token", data=form,
                                  headers={"Authorization": "Bearer some.environment.token"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["token_type"] == "Bearer"
    wrong = shared_rig.http.post("/oauth/token", data={**form, "client_secret": secret + "x"},
                                 headers={"Authorization": "Bearer x"})
    oauth_error(wrong, 401, "invalid_client")
