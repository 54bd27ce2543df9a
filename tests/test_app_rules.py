"""App-wide rules in the settings (`allowed_clients`, `required_claim_values`): validated like
every option, applied inside verification before a token is cached, so the cache-hit fast path
stays on and a refused token is never cached. Every adapter's answers: tests/contract/."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from m2m_guard import AccessDenied, ConfigurationError, GuardSettings, TokenVerifier
from m2m_guard._core.gate import Gate
from m2m_guard.events import Event
from m2m_guard.local_issuer import KeySetServer

OTHER = "m2morg_99999999999999999"


def test_a_token_failing_an_app_rule_is_refused_and_never_cached(
        issuer: KeySetServer, make_settings: Callable[..., GuardSettings],
        caplog: pytest.LogCaptureFixture) -> None:
    settings = make_settings(allowed_clients=(OTHER,),
                             required_claim_values={"custom_claims.environment": "production"})
    caplog.set_level(logging.INFO, logger="m2m_guard")
    with TokenVerifier(settings) as verifier:
        assert Gate(verifier).fast_path  # app-wide rules are not checks: the fast path stays
        refused = issuer.mint()
        for _ in range(2):
            with pytest.raises(AccessDenied) as caught:
                verifier.verify_sync(refused)
            assert caught.value.rule == "allowed_clients"
        assert verifier.token_cache is not None and len(verifier.token_cache) == 0
        assert verifier.cached_token(refused) is None
        allowed = issuer.mint(client_id=OTHER, sub=OTHER)
        access = verifier.verify_sync(allowed)
        assert len(verifier.token_cache) == 1
        assert verifier.cached_token(allowed) is access  # the hit has passed the rules
    lines = [r for r in caplog.records if getattr(r, "kind", None) == "refused"]
    assert [(r.reason, getattr(r, "rule", None)) for r in lines] == [
        ("client_refused", "allowed_clients")] * 2


def test_claim_values_are_read_strictly_and_the_event_names_the_rule(
        issuer: KeySetServer, make_settings: Callable[..., GuardSettings]) -> None:
    settings = make_settings(required_claim_values={
        "custom_claims.environment": ["production_us", "production_eu"]})
    events: list[Event] = []
    with TokenVerifier(settings, on_event=events.append) as verifier:
        verifier.verify_sync(issuer.mint(custom_claims={"environment": "production_eu"}))
        for environment in (["production_eu"], "production", None, {"x": 1}):
            with pytest.raises(AccessDenied):
                verifier.verify_sync(issuer.mint(custom_claims={"environment": environment}))
    refused = [event for event in events if event.kind == "refused"]
    assert len(refused) == 4
    assert {(e.reason, e.status, e.rule) for e in refused} == {
        ("claim_refused", 403, "claim:custom_claims.environment")}


def test_app_rules_read_from_the_environment(issuer: KeySetServer) -> None:
    settings = GuardSettings.from_env({
        "M2M_GUARD_ISSUER": issuer.url, "M2M_GUARD_AUDIENCE": "deployment-api",
        "M2M_GUARD_ALLOWED_CLIENTS": "m2morg_a, m2morg_b",
        "M2M_GUARD_REQUIRED_CLAIM_VALUES":
            '{"custom_claims.environment": ["production_us"], "tier": 2, "beta": true}'})
    assert settings.allowed_clients == ("m2morg_a", "m2morg_b")
    assert settings.required_claim_values == (
        ("custom_claims.environment", ("production_us",)), ("tier", (2,)), ("beta", (True,)))
    hash(settings)  # still usable as a key (one verifier per configuration)


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("M2M_GUARD_REQUIRED_CLAIM_VALUES", "custom_claims.environment=production_us",
     "M2M_GUARD_REQUIRED_CLAIM_VALUES='custom_claims.environment=production_us' is invalid: "
     "expected a JSON object"),
    ("M2M_GUARD_REQUIRED_CLAIM_VALUES", '["production_us"]',
     "M2M_GUARD_REQUIRED_CLAIM_VALUES='[\"production_us\"]' is invalid: expected a JSON object"),
    ("M2M_GUARD_REQUIRED_CLAIM_VALUES", '{"custom_claims..environment": "x"}',
     "M2M_GUARD_REQUIRED_CLAIM_VALUES is invalid: claim path"),
    ("M2M_GUARD_REQUIRED_CLAIM_VALUES", '{"tier": 1.5}',
     "M2M_GUARD_REQUIRED_CLAIM_VALUES is invalid: claim tier"),
    ("M2M_GUARD_REQUIRED_CLAIM_VALUES", '{"tier": []}',
     "M2M_GUARD_REQUIRED_CLAIM_VALUES is invalid: claim tier needs at least one"),
    ("M2M_GUARD_ALLOWED_CLIENTS", ",", None),
])
def test_invalid_app_rules_name_the_variable(variable: str, value: str,
                                             message: str | None) -> None:
    environ = {"M2M_GUARD_ISSUER": "https://issuer.example", "M2M_GUARD_AUDIENCE": "api",
               variable: value}
    if message is None:  # an empty list is no rule at all
        assert GuardSettings.from_env(environ).allowed_clients == ()
        return
    with pytest.raises(ConfigurationError) as caught:
        GuardSettings.from_env(environ)
    assert str(caught.value).startswith(message), str(caught.value)


def test_invalid_app_rules_in_python_name_the_option() -> None:
    with pytest.raises(ConfigurationError, match="^allowed_clients must hold non-empty"):
        GuardSettings(issuer="https://issuer.example", audience="api", allowed_clients=[""])
    with pytest.raises(ConfigurationError, match="^required_claim_values must map"):
        GuardSettings(issuer="https://issuer.example", audience="api",
                      required_claim_values="custom_claims.environment")  # type: ignore[arg-type]
