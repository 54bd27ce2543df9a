"""Conditional refresh (ETag / 304) and the never-a-500 rule for unexpected errors."""

from __future__ import annotations

import logging
import time

import pytest
from starlette.testclient import TestClient

import m2m_guard.verifier as verifier_module
from m2m_guard import GuardSettings, InvalidToken, TokenVerifier
from m2m_guard.local_issuer import KeySetServer, SigningKey

from .conftest import deployment_app


def test_refresh_with_etag_gets_304_and_keeps_keys() -> None:
    key = SigningKey.generate("ES256")
    clock = [50.0]
    with KeySetServer([key], max_age=None) as issuer:
        verifier = TokenVerifier(GuardSettings(issuer=issuer.url, audience="deployment-api",
                                               jwks_cache_ttl=10), clock=lambda: clock[0])
        token = issuer.mint()
        first = verifier.verify_sync(token)
        keys = verifier._issuers[issuer.url].state.keys
        clock[0] += 11
        assert verifier.verify_sync(issuer.mint()).key_id == key.kid
        assert issuer.requests["/keys"] == 2 and issuer.not_modified == 1
        assert verifier._issuers[issuer.url].state.keys is keys
        assert verifier.verify_sync(token) is first
        assert verifier.health()["issuers"][issuer.url]["fetches"] == 2
        # A changed set is fetched in full again (the ETag no longer matches).
        issuer.publish(key, SigningKey.generate("EdDSA", kid="snk_new"))
        clock[0] += 11
        verifier.verify_sync(issuer.mint())
        assert issuer.requests["/keys"] == 3 and issuer.not_modified == 1
        assert verifier.health()["issuers"][issuer.url]["key_ids"] == [key.kid, "snk_new"]


def test_unexpected_error_inside_verification_is_401_and_logged(
        issuer: KeySetServer, settings: GuardSettings, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The safety net for bugs: a fault injected into the pipeline (no real input reaches one)
    must give 401 with a logged traceback, never a 500 and never the token in the log."""
    def broken(*args: object) -> frozenset[str]:
        raise RuntimeError("injected failure")

    monkeypatch.setattr(verifier_module, "scopes_from_claims", broken)
    verifier = TokenVerifier(settings)
    token = issuer.mint()
    with pytest.raises(InvalidToken) as caught:
        verifier.verify_sync(token)
    assert caught.value.reason == "internal_error"
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="m2m_guard"), \
            TestClient(deployment_app(settings, verifier=verifier),
                       raise_server_exceptions=False) as client:
        response = client.get("/deployments", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert response.json() == {"error": "invalid_token",
                               "error_description": "The token could not be verified."}
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and errors[0].exc_info is not None
    assert "injected failure" in caplog.text
    assert token not in caplog.text


def test_unexpected_warm_up_error_does_not_fail_startup(
        issuer: KeySetServer, settings: GuardSettings, caplog: pytest.LogCaptureFixture) -> None:
    calls = {"n": 0}

    def clock_failing_once() -> float:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("injected startup failure")
        return time.monotonic()

    verifier = TokenVerifier(settings, clock=clock_failing_once)
    with caplog.at_level(logging.INFO, logger="m2m_guard"), \
            TestClient(deployment_app(settings, verifier=verifier)) as client:
        response = client.get("/deployments",
                              headers={"Authorization": f"Bearer {issuer.mint()}"})
    assert response.status_code == 200
    assert "injected startup failure" in caplog.text
