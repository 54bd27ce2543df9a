"""The rule language (`_core/requirements.py`, `_core/claim_paths.py`): rules are validated when
written, claim values are read strictly, composition answers with the failing rule, and the
refusal names the rule and never a value. Every adapter's answers are in tests/contract/."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from m2m_guard import (
    AccessDenied,
    AccessToken,
    InsufficientScope,
    MissingToken,
    Rule,
    all_of,
    any_of,
    require,
    require_any_scope,
    require_claims,
    require_clients,
    require_scopes,
)
from m2m_guard._core.claim_paths import ABSENT, claim_path, read_path
from m2m_guard._core.context import reset_current_token, route_requirements, set_current_token
from m2m_guard.errors import render_error

CLIENT = "m2morg_68315758685323697"


def token(scopes: tuple[str, ...] = ("deploy:applications",), **claims: Any) -> AccessToken:
    base: dict[str, Any] = {"iss": "https://issuer.example", "client_id": CLIENT, "sub": CLIENT,
                            "exp": 2_000_000_000,
                            "custom_claims": {"environment": "production_us"}}
    base.update(claims)
    return AccessToken.from_claims(base, frozenset(scopes), algorithm="RS256", key_id="k",
                                   fingerprint="0" * 16)


def refusal(rule: Rule, access: AccessToken) -> Exception | None:
    try:
        rule.requirement.check(access)
    except Exception as exc:  # noqa: BLE001 - the refusal is the result
        return exc
    return None


# -- paths -----------------------------------------------------------------------------------

def test_paths_are_dotted_or_tuples_and_walk_objects_only() -> None:
    assert claim_path("custom_claims.environment") == ("custom_claims", "environment")
    assert claim_path(("https://example.com/claims", "tier")) == (
        "https://example.com/claims", "tier")
    claims = {"a": {"b": "x"}, "list": [{"b": "x"}], "s": "text"}
    assert read_path(claims, ("a", "b")) == "x"
    assert read_path(claims, ("list", "b")) is ABSENT  # through an array: nothing
    assert read_path(claims, ("s", "b")) is ABSENT
    assert read_path(claims, ("missing",)) is ABSENT


@pytest.mark.parametrize("path", ["", "a..b", ".a", "a.", (), ("a", ""), ("a", 1), 3,
                                  " a", "a.b.c.d.e.f.g.h.i"])
def test_an_invalid_path_is_an_error_when_the_rule_is_written(path: Any) -> None:
    with pytest.raises(ValueError, match="claim path"):
        require_claims({path: "x"})


@pytest.mark.parametrize("value", [1.5, None, {"a": 1}, [], [1.5], b"x"])
def test_an_ill_typed_value_is_an_error_when_the_rule_is_written(value: Any) -> None:
    with pytest.raises(ValueError, match="custom_claims.environment"):
        require_claims({"custom_claims.environment": value})


def test_other_construction_errors() -> None:
    with pytest.raises(ValueError, match="at least one claim"):
        require_claims()
    with pytest.raises(ValueError, match="at least one client"):
        require_clients()
    with pytest.raises(ValueError, match="client id"):
        require_clients("")
    with pytest.raises(ValueError, match="rule name"):
        require(lambda t: True, name='say "hi"')
    with pytest.raises(ValueError, match="callable"):
        require("not callable", name="x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="takes rules"):
        all_of(require_scopes("a"), "b")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one rule"):
        any_of()


# -- claim values ----------------------------------------------------------------------------

def test_claim_equality_and_membership() -> None:
    rule = require_claims({"custom_claims.environment": "production_us"})
    assert refusal(rule, token()) is None
    assert isinstance(refusal(rule, token(custom_claims={"environment": "production"})),
                      AccessDenied)
    one_of = require_claims({"custom_claims.environment": ["production_us", "production_eu"]})
    assert refusal(one_of, token(custom_claims={"environment": "production_eu"})) is None
    assert refusal(require_claims(gty="client-credentials"), token(gty="client-credentials")) \
        is None


@pytest.mark.parametrize("found", [["production_us"], {"v": "production_us"}, None, 1,
                                   "PRODUCTION_US", "production_us "])
def test_claim_values_are_never_coerced(found: Any) -> None:
    rule = require_claims({"custom_claims.environment": "production_us"})
    error = refusal(rule, token(custom_claims={"environment": found}))
    assert isinstance(error, AccessDenied)


def test_a_boolean_is_not_a_number() -> None:
    assert isinstance(refusal(require_claims(level=1), token(level=True)), AccessDenied)
    assert isinstance(refusal(require_claims(flag=True), token(flag=1)), AccessDenied)
    assert refusal(require_claims(flag=True), token(flag=True)) is None
    assert refusal(require_claims(level=1), token(level=1)) is None


# -- clients, predicates, composition ---------------------------------------------------------

def test_clients_are_read_as_access_token_client_id() -> None:
    rule = require_clients(CLIENT)
    assert refusal(rule, token()) is None
    other = token(client_id="m2morg_other", sub="m2morg_other")
    error = refusal(rule, other)
    assert isinstance(error, AccessDenied) and error.rule == "clients"
    assert error.reason == "client_refused"


def test_a_predicate_must_return_exactly_true_and_an_exception_refuses(
        caplog: pytest.LogCaptureFixture) -> None:
    assert refusal(require(lambda t: True, name="yes"), token()) is None
    truthy: Any = lambda t: "yes"  # noqa: E731
    assert isinstance(refusal(require(truthy, name="truthy"), token()), AccessDenied)

    def broken(t: AccessToken) -> bool:
        raise KeyError("oops")

    caplog.set_level(logging.ERROR, logger="m2m_guard")
    error = refusal(require(broken, name="broken-rule"), token())
    assert isinstance(error, AccessDenied) and error.rule == "broken-rule"
    assert "broken-rule" in caplog.text and "KeyError" in caplog.text


def test_all_of_answers_with_the_first_failing_rule() -> None:
    rule = all_of(require_scopes("deploy:applications"),
                  require_claims({"custom_claims.environment": "production_us"}))
    assert refusal(rule, token()) is None
    scope = refusal(rule, token(scopes=()))
    assert isinstance(scope, InsufficientScope) and scope.required == ("deploy:applications",)
    claim = refusal(rule, token(custom_claims={}))
    assert isinstance(claim, AccessDenied) and claim.rule == "claim:custom_claims.environment"


def test_any_of_names_itself_or_asks_for_scopes_when_only_scopes_are_involved() -> None:
    mixed = any_of(require_scopes("admin:platform"), require_clients("m2morg_other"))
    error = refusal(mixed, token())
    assert isinstance(error, AccessDenied)
    assert error.rule == "any_of(scopes:admin:platform, clients)"
    assert refusal(mixed, token(scopes=("admin:platform",))) is None
    scopes_only = any_of(require_scopes("a", "b"), require_any_scope("c", "d"))
    asked = refusal(scopes_only, token(scopes=("a",)))
    assert isinstance(asked, InsufficientScope) and asked.required == ("a", "b")
    assert refusal(scopes_only, token(scopes=("d",))) is None


def test_several_claims_are_all_required_and_each_named() -> None:
    rule = require_claims({"custom_claims.environment": "production_us",
                           "custom_claims.github_repository": ["acme/a", "acme/b"]})
    ok = token(custom_claims={"environment": "production_us", "github_repository": "acme/b"})
    assert refusal(rule, ok) is None
    error = refusal(rule, token())
    assert isinstance(error, AccessDenied)
    assert error.rule == "claim:custom_claims.github_repository"


# -- the answer --------------------------------------------------------------------------------

def test_the_answer_is_403_access_denied_with_a_bare_challenge_and_no_value() -> None:
    rule = require_claims({"custom_claims.environment": "production_eu"})
    error = refusal(rule, token())
    assert isinstance(error, AccessDenied)
    rendered = render_error(error, realm="api")
    headers = dict(rendered.headers)
    assert rendered.status == 403
    assert headers["www-authenticate"] == 'Bearer realm="api"'
    assert rendered.body == (b'{"error":"access_denied","error_description":"The token does not '
                             b'satisfy the rule claim:custom_claims.environment"}')
    assert b"production" not in rendered.body


# -- the decorator -----------------------------------------------------------------------------

def test_rules_decorate_sync_and_async_functions_and_stack() -> None:
    rule = require_claims({"custom_claims.environment": "production_us"})

    @require_scopes("deploy:applications")
    @rule
    def handler(x: int) -> int:
        return x + 1

    @rule
    async def async_handler() -> str:
        return "ok"

    assert [r.name for r in route_requirements(handler)] == [
        "claim:custom_claims.environment", "scopes:deploy:applications"]
    with pytest.raises(MissingToken):
        handler(1)
    marker = set_current_token(token())
    try:
        assert handler(1) == 2
        coroutine = async_handler()
        with pytest.raises(StopIteration):
            coroutine.send(None)
    finally:
        reset_current_token(marker)
    marker = set_current_token(token(custom_claims={"environment": "staging"}))
    try:
        with pytest.raises(AccessDenied):
            handler(1)
    finally:
        reset_current_token(marker)
