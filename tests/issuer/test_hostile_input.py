"""Hostile input to the management API (issue: no 500 on Unicode or odd numbers, no data
poisoning): lone surrogates in any string or member name, non-ASCII digits, oversized page
tokens. Each is a 400 in the issuer's JSON error shape naming the field, and changes nothing."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import Rig

SURROGATE = "\ud800"


def raw_json(rig: Rig, method: str, path: str, text: str) -> Any:
    """Send `text` as the JSON body as it is (json= would refuse to encode a lone surrogate:
    the escape sequence ``\\ud800`` is what reaches the server)."""
    return rig.api.request(method, path, content=text.encode("ascii"),
                           headers={"Content-Type": "application/json"})


def assert_400(response: Any, field: str) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == "INVALID_ARGUMENT"
    assert body["details"][0]["field"] == field, body
    assert field in body["message"]


CREATE_CASES = [
    ('{"name": "\\ud800"}', "name"),
    ('{"name": "ok", "description": "x\\udfff"}', "description"),
    ('{"name": "ok", "custom_claims": [{"key": "k", "value": "\\ud800"}]}',
     "custom_claims[0].value"),
    ('{"name": "ok", "custom_claims": [{"key": "\\ud800", "value": "v"}]}',
     "custom_claims[0].key"),
    ('{"name": "ok", "scopes": ["\\ud800"]}', "scopes[0]"),
    ('{"name": "ok", "audience": ["a\\ud800"]}', "audience[0]"),
    ('{"name": "ok", "\\ud800": 1}', "body"),
    ('{"name": "ok", "custom_claims": [{"\\udc00": "k", "value": "v"}]}', "custom_claims[0]"),
    ('{"name": "ok", "expiry": "\\u00b3\\u2076\\u2070\\u2070"}', "expiry"),  # "³⁶⁰⁰"
    ('{"name": "ok", "expiry": "\\uff13\\uff16\\uff10\\uff10"}', "expiry"),  # fullwidth 3600
    ('{"name": "ok", "expiry": "\\u0663\\u0666\\u0660\\u0660"}', "expiry"),  # Arabic-Indic
    ('{"name": "ok", "expiry": "+3600"}', "expiry"),
    ('{"name": "ok", "expiry": "99999999999999999999"}', "expiry"),
]


@pytest.mark.parametrize(("text", "field"), CREATE_CASES)
def test_create_refuses_and_stores_nothing(shared_rig: Rig, text: str, field: str) -> None:
    org = "org_hostile1"
    response = raw_json(shared_rig, "POST", shared_rig.clients_path(org), text)
    assert_400(response, field)
    listing = shared_rig.api.get(shared_rig.clients_path(org))
    assert listing.status_code == 200, listing.text
    assert listing.json()["total_size"] == 0  # nothing was stored


@pytest.mark.parametrize(("text", "field"), [
    ('{"description": "\\ud800"}', "description"),
    ('{"custom_claims": [{"key": "k", "value": "\\udbff"}]}', "custom_claims[0].value"),
    ('{"\\ud800": "x"}', "body"),
    ('{"expiry": "\\u0663\\u0666\\u0660\\u0660"}', "expiry"),
])
def test_update_refuses_and_changes_nothing(shared_rig: Rig, text: str, field: str) -> None:
    client, _ = shared_rig.create("org_hostile2", description="before")
    path = f"{shared_rig.clients_path('org_hostile2')}/{client['client_id']}"
    assert_400(raw_json(shared_rig, "PATCH", path, text), field)
    after = shared_rig.api.get(path)
    assert after.status_code == 200, after.text
    assert after.json()["client"] == client
    assert shared_rig.api.get(shared_rig.clients_path("org_hostile2")).status_code == 200


@pytest.mark.parametrize("page_size", ["²", "３", "٣", "1e1", "-1", " 5", "0", "101",
                                       "9" * 30])
def test_page_size_is_ascii_digits_in_bounds(shared_rig: Rig, page_size: str) -> None:
    response = shared_rig.api.get(shared_rig.clients_path(), params={"page_size": page_size})
    assert_400(response, "page_size")


@pytest.mark.parametrize("token", ["9" * 20, "9" * 5000, "YWZ0ZXI6OTk5OTk5OTk5OTk5OTk5OTk5OTk5",
                                   "YWZ0ZXI6wrM", "YWZ0ZXI6LTE", "%%%", "é"])
def test_page_token_never_a_500(shared_rig: Rig, token: str) -> None:
    # "after:99999999999999999999999", "after:³", "after:-1" encoded as the issuer would
    response = shared_rig.api.get(shared_rig.clients_path(), params={"page_token": token})
    assert_400(response, "page_token")


def test_rotation_body_with_a_surrogate_member(shared_rig: Rig) -> None:
    before = shared_rig.api.get("/api/v1/keys").json()
    response = raw_json(shared_rig, "POST", "/api/v1/keys:rotate", '{"\\ud800": 1}')
    assert_400(response, "body")
    assert shared_rig.api.get("/api/v1/keys").json() == before


def test_the_python_api_checks_text_too(shared_rig: Rig) -> None:
    from m2m_guard.local_issuer.clients import ApiError
    with pytest.raises(ApiError) as caught:
        shared_rig.issuer.create_client("org_hostile3", name="ok",
                                        custom_claims={"k": SURROGATE})
    assert caught.value.status == 400
    assert caught.value.details[0]["field"] == "custom_claims[0].value"
    assert shared_rig.api.get(shared_rig.clients_path("org_hostile3")).json()["total_size"] == 0
