"""Hostile and concurrent input: nothing answers 500, limits hold under races, odd credentials."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from m2m_guard.local_issuer import LocalIssuer, serve_issuer

from .conftest import ADMIN_ID, ADMIN_SECRET, ORG, Rig, admin_token

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12)
field_names = st.sampled_from(["name", "description", "scopes", "audience", "custom_claims",
                               "expiry", "client_id", "secrets", ""])
bodies = st.dictionaries(field_names, json_values, max_size=5) | json_values


@pytest.fixture(scope="module")
def app_client() -> Iterator[tuple[TestClient, dict[str, str], str]]:
    """The issuer's app through Starlette's TestClient (fast enough for many examples)."""
    with LocalIssuer(admin_client_id=ADMIN_ID, admin_client_secret=ADMIN_SECRET,
                     key_publish_delay=0) as issuer:
        client, _ = issuer.create_client(ORG, name="target")
        with TestClient(issuer.app, raise_server_exceptions=True) as http:
            headers = {"Authorization": "Bearer " + admin_token(http)}
            yield http, headers, client["client_id"]


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=bodies, patch=st.booleans())
def test_management_bodies_never_cause_a_server_error(
        app_client: tuple[TestClient, dict[str, str], str], body: Any, patch: bool) -> None:
    http, headers, client_id = app_client
    path = f"/api/v1/organizations/{ORG}/clients"
    response = (http.patch(f"{path}/{client_id}", json=body, headers=headers) if patch
                else http.post(path, json=body, headers=headers))
    assert response.status_code in (200, 201, 400), response.text
    if response.status_code == 400:
        problem = response.json()
        assert problem["code"] == "INVALID_ARGUMENT" and problem["details"]


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(form=st.dictionaries(st.sampled_from(["grant_type", "client_id", "client_secret",
                                             "scope", "x"]), st.text(max_size=30), max_size=5),
       authorization=st.none() | st.text(max_size=40))
def test_token_requests_never_cause_a_server_error(
        app_client: tuple[TestClient, dict[str, str], str], form: dict[str, str],
        authorization: str | None) -> None:
    http = app_client[0]
    headers = {}
    if authorization is not None and authorization.isascii() and authorization.isprintable():
        headers["Authorization"] = authorization
    response = http.post("/oauth/token", data=form, headers=headers)
    assert response.status_code in (400, 401), response.text
    assert response.json()["error"] in ("invalid_request", "invalid_client",
                                        "unsupported_grant_type", "invalid_scope")


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(segment=st.text(max_size=30))
def test_path_ids_never_cause_a_server_error(
        app_client: tuple[TestClient, dict[str, str], str], segment: str) -> None:
    http, headers, client_id = app_client
    encoded = quote(segment, safe="")
    for path in (f"/api/v1/organizations/{encoded}/clients",
                 f"/api/v1/organizations/{ORG}/clients/{encoded}",
                 f"/api/v1/organizations/{ORG}/clients/{client_id}/secrets/{encoded}"):
        for method in ("GET", "DELETE"):
            response = http.request(method, path, headers=headers)
            assert response.status_code in (200, 400, 404, 405), (path, response.text)


def test_concurrent_secret_additions_respect_the_limit(shared_rig: Rig) -> None:
    client, _ = shared_rig.create(ORG, name="raced")
    path = f"{shared_rig.clients_path()}/{client['client_id']}/secrets"
    token = shared_rig.api.headers["Authorization"]

    def add(_: int) -> int:
        with httpx.Client(base_url=shared_rig.url, timeout=30,
                          headers={"Authorization": token}) as http:
            return http.post(path).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = sorted(pool.map(add, range(8)))
    assert statuses == [201] * 4 + [409] * 4  # one secret existed: four more fit
    stored = shared_rig.api.get(f"{shared_rig.clients_path()}/{client['client_id']}")
    assert len(stored.json()["client"]["secrets"]) == 5


@pytest.mark.parametrize(("secret", "raw_works"), [
    ("skcs_plus+percent%25colon:slash/end0", False), ("skcs_spaces and ünïcode 1234567", True)])
def test_basic_credentials_are_form_encoded(secret: str, raw_works: bool) -> None:
    """RFC 6749 §2.3.1: Basic credentials are form-urlencoded first, and read that one way; a
    secret without "+" or "%" reads the same either way."""
    with LocalIssuer(admin_client_id=ADMIN_ID, admin_client_secret=secret) as issuer, \
            serve_issuer(issuer) as running, httpx.Client(base_url=running.url) as http:
        grant = {"grant_type": "client_credentials"}
        raw = base64.b64encode(f"{ADMIN_ID}:{secret}".encode()).decode()
        encoded = base64.b64encode(f"{ADMIN_ID}:{quote(secret, safe='')}".encode()).decode()
        response = http.post("/oauth/token", data=grant,
                             headers={"Authorization": "Basic " + encoded})
        assert response.status_code == 200, response.text
        response = http.post("/oauth/token", data=grant,
                             headers={"Authorization": "Basic " + raw})
        assert response.status_code == (200 if raw_works else 401), response.text
        form = http.post("/oauth/token", data={**grant, "client_id": ADMIN_ID,
                                               "client_secret": secret})
        assert form.status_code == 200
        wrong = base64.b64encode(f"{ADMIN_ID}:{secret}x".encode()).decode()
        assert http.post("/oauth/token", data=grant,
                         headers={"Authorization": "Basic " + wrong}).status_code == 401
