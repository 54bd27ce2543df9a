"""The client-management API over real loopback HTTP: every route, its errors, and its auth."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from m2m_guard.local_issuer import SigningKey

from .conftest import ADMIN_ID, RFC3339, Rig

QUICKSTART = {
    "name": "GitHub Actions Deployment Service",
    "description": "Service account for GitHub Actions to deploy applications to production",
    "custom_claims": [{"key": "github_repository", "value": "acmecorp/inventory-service"},
                      {"key": "environment", "value": "production_us"}],
    "scopes": ["deploy:applications", "read:deployments"],
    "audience": ["deployment-api.acmecorp.com"],
    "expiry": 3600,
}


def error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"code", "message", "details"}
    assert body["code"] == code
    assert body["message"]
    return body


# -- create -------------------------------------------------------------------------------------
def test_create_returns_the_scalekit_shape_and_the_secret_once(shared_rig: Rig, org: str) -> None:
    response = shared_rig.api.post(shared_rig.clients_path(org), json=QUICKSTART)
    assert response.status_code == 201
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == {"client", "plain_secret"}
    client, plain = body["client"], body["plain_secret"]
    assert client["client_id"].startswith("m2morg_")
    assert client["organization_id"] == org
    for name in ("name", "description", "custom_claims", "scopes", "audience", "expiry"):
        assert client[name] == QUICKSTART[name]
    assert RFC3339.match(client["create_time"]) and RFC3339.match(client["update_time"])
    [secret] = client["secrets"]
    assert secret["id"].startswith("sks_")
    assert secret["secret_suffix"] == plain[-4:]
    assert secret["status"] == "ACTIVE"
    assert RFC3339.match(secret["create_time"])
    assert len(plain) >= 40
    # The plain secret is never shown again: not by get, not by list.
    got = shared_rig.api.get(f"{shared_rig.clients_path(org)}/{client['client_id']}")
    listed = shared_rig.api.get(shared_rig.clients_path(org))
    for later in (got, listed):
        assert later.status_code == 200
        assert plain not in later.text
        assert "plain_secret" not in later.text
    assert got.json()["client"] == client


def test_defaults_of_a_minimal_client(shared_rig: Rig, org: str) -> None:
    client, _ = shared_rig.create(org, name="minimal")
    assert client["description"] == ""
    assert client["scopes"] == client["audience"] == client["custom_claims"] == []
    assert client["expiry"] == 3600


@pytest.mark.parametrize(("body", "field", "hint"), [
    ({}, "name", "required"),
    ({"name": 7}, "name", "string"),
    ({"name": "   "}, "name", "empty"),
    ({"name": "x" * 129}, "name", "at most 128"),
    ({"name": "a\x00b"}, "name", "control"),
    ({"name": "n", "description": ["x"]}, "description", "string"),
    ({"name": "n", "scopes": "read:deployments"}, "scopes", "array"),
    ({"name": "n", "scopes": ["read deployments"]}, "scopes[0]", "not a valid scope"),
    ({"name": "n", "scopes": ["ok", 3]}, "scopes[1]", "string"),
    ({"name": "n", "scopes": ['a"b']}, "scopes[0]", "not a valid scope"),
    ({"name": "n", "scopes": [""]}, "scopes[0]", "1 to 128"),
    ({"name": "n", "scopes": ["s"] * 51}, "scopes", "at most 50"),
    ({"name": "n", "audience": ["deployment api"]}, "audience[0]", "not a valid audience"),
    ({"name": "n", "custom_claims": {"env": "prod"}}, "custom_claims", "array"),
    ({"name": "n", "custom_claims": [{"key": "env"}]}, "custom_claims[0]", "key and value"),
    ({"name": "n", "custom_claims": [{"key": "1env", "value": "x"}]}, "custom_claims[0].key",
     "a letter"),
    ({"name": "n", "custom_claims": [{"key": "env", "value": 1}]}, "custom_claims[0].value",
     "string"),
    ({"name": "n", "custom_claims": [{"key": "e", "value": "1"}, {"key": "e", "value": "2"}]},
     "custom_claims[1].key", "duplicate"),
    ({"name": "n", "expiry": True}, "expiry", "integer"),
    ({"name": "n", "expiry": 1.5}, "expiry", "integer"),
    ({"name": "n", "expiry": 10}, "expiry", "between 60 and 86400"),
    ({"name": "n", "expiry": 10**9}, "expiry", "between 60 and 86400"),
    ({"name": "n", "client_id": "m2morg_1"}, "client_id", "not a field"),
])
def test_create_validation(shared_rig: Rig, body: dict[str, Any], field: str, hint: str) -> None:
    response = shared_rig.api.post(shared_rig.clients_path(), json=body)
    details = error(response, 400, "INVALID_ARGUMENT")["details"]
    assert details[0]["field"] == field
    assert hint in details[0]["description"]
    assert field in response.json()["message"]


def test_expiry_as_a_string_of_digits_is_accepted(shared_rig: Rig, org: str) -> None:
    client, _ = shared_rig.create(org, expiry="600")
    assert client["expiry"] == 600


@pytest.mark.parametrize(("content", "hint"), [
    (b"{not json", "not valid JSON"),
    (b'{"name": "a", "name": "b"}', "not valid JSON"),
    (b'["name"]', "JSON object"),
    (b"x" * 70000, "at most"),
])
def test_create_with_a_bad_body(shared_rig: Rig, content: bytes, hint: str) -> None:
    response = shared_rig.api.post(shared_rig.clients_path(), content=content,
                                   headers={"Content-Type": "application/json"})
    details = error(response, 400, "INVALID_ARGUMENT")["details"]
    assert details[0]["field"] == "body" and hint in details[0]["description"]


@pytest.mark.parametrize("bad_org", ["59615193906282635", "organization_1", "org_", "org_a-b",
                                     "org_" + "1" * 65])
def test_organization_ids_are_validated(shared_rig: Rig, bad_org: str) -> None:
    for response in (shared_rig.api.post(shared_rig.clients_path(bad_org), json={"name": "n"}),
                     shared_rig.api.get(shared_rig.clients_path(bad_org))):
        details = error(response, 400, "INVALID_ARGUMENT")["details"]
        assert details[0]["field"] == "organization_id"
        assert "org_" in details[0]["description"]


# -- list, get ----------------------------------------------------------------------------------
def test_list_pages_through_an_organization(shared_rig: Rig, org: str) -> None:
    created = [shared_rig.create(org, name=f"client {i}")[0]["client_id"] for i in range(5)]
    shared_rig.create(org[:-1] + "9", name="another organization's")
    seen: list[str] = []
    token = ""
    for _ in range(5):  # bounded: 3 pages expected
        response = shared_rig.api.get(shared_rig.clients_path(org),
                                      params={"page_size": 2, "page_token": token})
        assert response.status_code == 200
        page = response.json()
        assert page["total_size"] == 5
        assert len(page["clients"]) <= 2
        seen += [client["client_id"] for client in page["clients"]]
        token = page["next_page_token"]
        if not token:
            break
    assert seen == created


def test_list_of_an_empty_organization(shared_rig: Rig, org: str) -> None:
    page = shared_rig.api.get(shared_rig.clients_path(org)).json()
    assert page == {"clients": [], "next_page_token": "", "total_size": 0}


@pytest.mark.parametrize(("params", "field"), [
    ({"page_size": "0"}, "page_size"), ({"page_size": "101"}, "page_size"),
    ({"page_size": "ten"}, "page_size"), ({"page_size": "-1"}, "page_size"),
    ({"page_token": "bm9wZQ"}, "page_token"), ({"page_token": "%%%"}, "page_token"),
])
def test_list_validation(shared_rig: Rig, params: dict[str, str], field: str) -> None:
    response = shared_rig.api.get(shared_rig.clients_path(), params=params)
    assert error(response, 400, "INVALID_ARGUMENT")["details"][0]["field"] == field


def test_get_unknown_malformed_and_foreign_clients(shared_rig: Rig, org: str) -> None:
    client, _ = shared_rig.create(org)
    path = shared_rig.clients_path(org)
    error(shared_rig.api.get(f"{path}/m2morg_12345678901234567"), 404, "NOT_FOUND")
    body = error(shared_rig.api.get(f"{path}/client_1"), 400, "INVALID_ARGUMENT")
    assert body["details"][0]["field"] == "client_id"
    assert "m2morg_" in body["details"][0]["description"]
    other = shared_rig.clients_path(org[:-1] + "8")
    error(shared_rig.api.get(f"{other}/{client['client_id']}"), 404, "NOT_FOUND")


# -- update, delete -----------------------------------------------------------------------------
def test_patch_changes_fields_and_the_next_tokens(shared_rig: Rig, org: str) -> None:
    client, secret = shared_rig.create(org, scopes=["read:deployments"], expiry=600)
    path = f"{shared_rig.clients_path(org)}/{client['client_id']}"
    time.sleep(0.002)  # update_time has millisecond resolution
    response = shared_rig.api.patch(path, json={
        "name": "renamed", "scopes": ["read:deployments", "deploy:applications"],
        "custom_claims": [{"key": "team", "value": "platform"}], "expiry": 900})
    assert response.status_code == 200, response.text
    updated = response.json()["client"]
    assert updated["name"] == "renamed"
    assert updated["scopes"] == ["read:deployments", "deploy:applications"]
    assert updated["expiry"] == 900
    assert updated["create_time"] == client["create_time"]
    assert updated["update_time"] > client["update_time"]
    assert updated["secrets"] == client["secrets"]
    assert updated["description"] == client["description"]  # untouched fields stay
    grant = shared_rig.token(client["client_id"], secret).json()
    assert grant["scope"] == "read:deployments deploy:applications"
    assert grant["expires_in"] == 900


@pytest.mark.parametrize(("body", "field", "hint"), [
    ({}, "body", "at least one"),
    ({"client_id": "m2morg_1"}, "client_id", "cannot be changed"),
    ({"secrets": []}, "secrets", "cannot be changed"),
    ({"name": ""}, "name", "empty"),
    ({"expiry": "soon"}, "expiry", "integer"),
    ({"colour": "blue"}, "colour", "not a field"),
])
def test_patch_validation(shared_rig: Rig, org: str, body: dict[str, Any], field: str,
                          hint: str) -> None:
    client, _ = shared_rig.create(org)
    response = shared_rig.api.patch(f"{shared_rig.clients_path(org)}/{client['client_id']}",
                                    json=body)
    details = error(response, 400, "INVALID_ARGUMENT")["details"]
    assert details[0]["field"] == field and hint in details[0]["description"]


def test_patch_and_delete_unknown_clients(shared_rig: Rig, org: str) -> None:
    path = f"{shared_rig.clients_path(org)}/m2morg_12345678901234567"
    error(shared_rig.api.patch(path, json={"name": "x"}), 404, "NOT_FOUND")
    error(shared_rig.api.delete(path), 404, "NOT_FOUND")


def test_delete_removes_the_client_and_its_secrets(shared_rig: Rig, org: str) -> None:
    client, secret = shared_rig.create(org)
    path = f"{shared_rig.clients_path(org)}/{client['client_id']}"
    assert shared_rig.token(client["client_id"], secret).status_code == 200
    response = shared_rig.api.delete(path)
    assert response.status_code == 200 and response.json() == {}
    error(shared_rig.api.get(path), 404, "NOT_FOUND")
    refused = shared_rig.token(client["client_id"], secret)
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"
    assert shared_rig.issuer.store.query(
        "SELECT id FROM client_secrets WHERE client_id = ?", (client["client_id"],)) == []


# -- secrets ------------------------------------------------------------------------------------
def test_secret_lifecycle(shared_rig: Rig, org: str) -> None:
    client, first = shared_rig.create(org)
    path = f"{shared_rig.clients_path(org)}/{client['client_id']}/secrets"
    added = shared_rig.api.post(path)
    assert added.status_code == 201 and added.headers["cache-control"] == "no-store"
    body = added.json()
    second, record = body["plain_secret"], body["secret"]
    assert record["id"].startswith("sks_") and record["secret_suffix"] == second[-4:]
    assert second != first
    # Both secrets work while both exist (rotation without downtime).
    for plain in (first, second):
        assert shared_rig.token(client["client_id"], plain).status_code == 200
    listed = shared_rig.api.get(f"{shared_rig.clients_path(org)}/{client['client_id']}").json()
    assert [s["id"] for s in listed["client"]["secrets"]] == [
        client["secrets"][0]["id"], record["id"]]
    assert "last_used_time" in listed["client"]["secrets"][0]
    assert second not in str(listed) and first not in str(listed)
    # Up to five secrets, not six.
    for _ in range(3):
        assert shared_rig.api.post(path).status_code == 201
    full = error(shared_rig.api.post(path), 409, "FAILED_PRECONDITION")
    assert "5" in full["message"]
    # Delete the first: it stops working, the second still works.
    deleted = shared_rig.api.delete(f"{path}/{client['secrets'][0]['id']}")
    assert deleted.status_code == 200 and deleted.json() == {}
    assert shared_rig.token(client["client_id"], first).status_code == 401
    assert shared_rig.token(client["client_id"], second).status_code == 200
    error(shared_rig.api.delete(f"{path}/{client['secrets'][0]['id']}"), 404, "NOT_FOUND")
    error(shared_rig.api.delete(f"{path}/secret_1"), 400, "INVALID_ARGUMENT")


def test_the_last_secret_cannot_be_deleted(shared_rig: Rig, org: str) -> None:
    client, secret = shared_rig.create(org)
    path = f"{shared_rig.clients_path(org)}/{client['client_id']}/secrets"
    body = error(shared_rig.api.delete(f"{path}/{client['secrets'][0]['id']}"), 409,
                 "FAILED_PRECONDITION")
    assert "at least one" in body["message"]
    assert shared_rig.token(client["client_id"], secret).status_code == 200


def test_secret_routes_of_unknown_clients(shared_rig: Rig, org: str) -> None:
    path = f"{shared_rig.clients_path(org)}/m2morg_12345678901234567/secrets"
    error(shared_rig.api.post(path), 404, "NOT_FOUND")
    error(shared_rig.api.delete(f"{path}/sks_1"), 404, "NOT_FOUND")


def test_a_secret_of_another_client_is_not_found(shared_rig: Rig, org: str) -> None:
    one, _ = shared_rig.create(org)
    two, _ = shared_rig.create(org)
    shared_rig.api.post(f"{shared_rig.clients_path(org)}/{two['client_id']}/secrets")
    response = shared_rig.api.delete(f"{shared_rig.clients_path(org)}/{two['client_id']}/"
                                     f"secrets/{one['secrets'][0]['id']}")
    error(response, 404, "NOT_FOUND")


# -- routing and auth -----------------------------------------------------------------------------
def test_unknown_routes_and_methods(shared_rig: Rig) -> None:
    error(shared_rig.api.get("/api/v1/nothing"), 404, "NOT_FOUND")
    error(shared_rig.api.put(shared_rig.clients_path()), 405, "METHOD_NOT_ALLOWED")
    assert shared_rig.http.get("/oauth/token").status_code == 405


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + token}


def test_the_management_api_needs_the_environment_client(shared_rig: Rig, org: str) -> None:
    http, issuer = shared_rig.http, shared_rig.issuer
    client, secret = shared_rig.create(org, audience=["deployment-api"])
    m2m_token = shared_rig.access_token(client["client_id"], secret)
    now = int(time.time())
    admin_claims = {"iss": shared_rig.url, "sub": ADMIN_ID, "client_id": ADMIN_ID,
                    "iat": now, "nbf": now, "exp": now + 600}
    foreign = SigningKey.generate(kid=issuer.keys.signing_key().kid)  # same kid, other key
    attempts = {
        "no header": {},
        "basic": {"Authorization": "Basic " + "YTpi"},
        "m2m client token": _bearer(m2m_token),
        "garbage": _bearer("abc.def.ghi"),
        "foreign key": _bearer(foreign.sign(admin_claims)),
        "expired": _bearer(issuer.sign({**admin_claims, "exp": now - 120})),
        "not yet valid": _bearer(issuer.sign({**admin_claims, "nbf": now + 600})),
        "other issuer": _bearer(issuer.sign({**admin_claims, "iss": "http://127.0.0.1:1"})),
        "no exp": _bearer(issuer.sign({k: v for k, v in admin_claims.items() if k != "exp"})),
        "unknown kid": _bearer(SigningKey.generate(kid="snk_1").sign(admin_claims)),
    }
    for name, headers in attempts.items():
        for response in (http.get(shared_rig.clients_path(org), headers=headers),
                         http.post(shared_rig.clients_path(org), headers=headers,
                                   json={"name": "x"}),
                         http.get("/api/v1/nothing", headers=headers),
                         http.post("/api/v1/keys:rotate", headers=headers)):
            assert response.status_code == 401, (name, response.text)
            assert response.headers["www-authenticate"].startswith("Bearer realm="), name
            assert response.json()["code"] == "UNAUTHENTICATED", name
    # The checks above are not vacuous: the same claims signed properly are accepted.
    good = http.get(shared_rig.clients_path(org), headers=_bearer(issuer.sign(admin_claims)))
    assert good.status_code == 200
    assert shared_rig.api.get(shared_rig.clients_path(org)).json()["total_size"] == 1
    # A malformed Bearer credential is a 401 invalid_token, as anywhere m2m_guard guards a
    # route; two Authorization headers stay a 400.
    bad = http.get(shared_rig.clients_path(org), headers={"Authorization": "Bearer a b"})
    assert bad.status_code == 401 and bad.json()["code"] == "UNAUTHENTICATED"
    assert 'error="invalid_token"' in bad.headers["www-authenticate"]
    two = http.get(shared_rig.clients_path(org), headers=[("Authorization", "Bearer a"),
                                                         ("Authorization", "Bearer b")])
    assert two.status_code == 400 and two.json()["code"] == "INVALID_ARGUMENT"
