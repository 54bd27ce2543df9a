"""Time claims no float can hold (10**400, 1e400, past the year 9999): a precise 401
invalid_token, never an ERROR log record or a traceback, through the middleware and the core."""

from __future__ import annotations

import json
import logging

import pytest
from starlette.testclient import TestClient

from m2m_guard import InvalidToken, TokenVerifier
from m2m_guard.local_issuer import KeySetServer
from m2m_guard.local_issuer.signing import scalekit_claims
from tests.conftest import deployment_app

# JSON literals, written into the payload as they are (1e400 parses as an infinity).
EDGES = ["1" + "0" * 400, "-1" + "0" * 400, "1e400", "-1e400", "253402300800",
         "253402300799.5e3", "1" + "0" * 30]


def token_with(issuer: KeySetServer, claim: str, literal: str) -> str:
    claims = scalekit_claims(issuer.url)
    claims[claim] = "__VALUE__"
    payload = json.dumps(claims, separators=(",", ":")).replace('"__VALUE__"', literal)
    header = json.dumps({"alg": "RS256", "kid": issuer.keys[0].kid, "typ": "JWT"})
    return issuer.keys[0].sign_raw(header.encode(), payload.encode())


@pytest.mark.parametrize("claim", ["exp", "iat", "nbf"])
@pytest.mark.parametrize("literal", EDGES)
def test_huge_time_claims_are_a_precise_401(issuer: KeySetServer, settings, claim: str,
                                            literal: str,
                                            caplog: pytest.LogCaptureFixture) -> None:
    token = token_with(issuer, claim, literal)
    caplog.set_level(logging.DEBUG)
    with TestClient(deployment_app(settings)) as client:
        response = client.get("/deployments", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"
    assert f"{claim} is not a valid NumericDate" in response.json()["error_description"]
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert "Traceback" not in caplog.text
    with pytest.raises(InvalidToken) as caught:
        TokenVerifier(settings).verify_sync(token)
    assert caught.value.reason == f"invalid_{claim}"
