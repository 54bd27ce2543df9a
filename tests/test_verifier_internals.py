"""The never-a-500 rule for unexpected errors, at verification and at startup."""

from __future__ import annotations

import logging
import time

import pytest
from starlette.testclient import TestClient

import m2m_guard.verifier as verifier_module
from m2m_guard import GuardSettings, InvalidToken, TokenVerifier
from m2m_guard.local_issuer import KeySetServer

from .conftest import deployment_app


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


def test_check_claims_applies_the_claim_rules_without_keys() -> None:
    """`check_claims` is the verifier's claim stage alone (used by the local issuer for its
    management tokens): time claims with the leeway, claim types and the audience."""
    from m2m_guard import GuardSettings, InvalidToken, TokenVerifier

    now = 1_800_000_000.0
    verifier = TokenVerifier(GuardSettings(issuer="https://issuer.example", audience="api",
                                           leeway=30), wall_clock=lambda: now)
    good = {"iss": "https://issuer.example", "aud": ["api"], "exp": now + 60, "nbf": now}
    verifier.check_claims(good)
    verifier.check_claims({**good, "exp": now - 29})  # inside the leeway
    refused = {
        "expired": {**good, "exp": now - 31},
        "not_yet_valid": {**good, "nbf": now + 31},
        "missing_exp": {k: v for k, v in good.items() if k != "exp"},
        "wrong_audience": {**good, "aud": ["other"]},
        "invalid_exp": {**good, "exp": str(now + 60)},
        "invalid_sub": {**good, "sub": 7},
    }
    for reason, claims in refused.items():
        with pytest.raises(InvalidToken) as caught:
            verifier.check_claims(claims)
        assert caught.value.reason == reason, (reason, caught.value.reason)
