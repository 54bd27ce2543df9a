"""Scopes from claims, scope requirements, `AccessToken`'s typed view, and the error renderer."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Any

import pytest

from m2m_guard import (
    AccessToken,
    GuardError,
    GuardSettings,
    InsufficientScope,
    InvalidRequest,
    InvalidToken,
    IssuerUnavailable,
    MissingToken,
    TokenVerifier,
)
from m2m_guard._core.scopes import ScopeRequirement, scopes_from_claims, validate_scopes
from m2m_guard.errors import render_error, safe_description
from m2m_guard.local_issuer import KeySetServer

DEFAULT_CLAIMS = ("scopes", "scope", "scp")
RFC6750_CHARS = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]*")


# -- scopes_from_claims -----------------------------------------------------------------------

@pytest.mark.parametrize(("claims", "expected"), [
    ({"scopes": ["read:deployments", "deploy:applications"]},
     {"read:deployments", "deploy:applications"}),
    ({"scope": "read:deployments deploy:applications"},
     {"read:deployments", "deploy:applications"}),
    ({"scp": "a b"}, {"a", "b"}),
    ({"scp": ["a", "b"]}, {"a", "b"}),
    ({"scope": "single"}, {"single"}),
    ({"scopes": []}, set()),
    ({"scope": ""}, set()),
    ({}, set()),
    ({"scopes": None}, set()),
    # union of the claims
    ({"scopes": ["a"], "scope": "b c", "scp": ["d"]}, {"a", "b", "c", "d"}),
    ({"scopes": ["a", "a"], "scope": "a"}, {"a"}),
    # other shapes are ignored, never coerced: tab, double/leading/trailing space, newline
    ({"scope": "a\tb"}, set()),
    ({"scope": "a  b"}, set()),
    ({"scope": " a b"}, set()),
    ({"scope": "a b "}, set()),
    ({"scope": "a\nb"}, set()),
    ({"scope": "a\u00a0b"}, set()),
    ({"scope": 'a "b"'}, set()),
    ({"scope": "a\\b"}, set()),
    # non-strings in a claim make the whole claim count for nothing
    ({"scopes": ["a", 1]}, set()),
    ({"scopes": ["a", None]}, set()),
    ({"scopes": ["a", ["b"]]}, set()),
    ({"scopes": ["a", ""]}, set()),
    ({"scopes": ["a b"]}, set()),
    ({"scopes": "a b"}, set()),  # `scopes` is an array claim (Scalekit): a string is ignored
    ({"scope": ["a"]}, set()),  # `scope` is a string claim (RFC 8693): an array is ignored
    ({"scp": "a b"}, {"a", "b"}),  # `scp` takes both shapes (Okta, Entra)
    ({"scp": ["a", "b"]}, {"a", "b"}),
    ({"scope": 42}, set()),
    ({"scope": True}, set()),
    ({"scp": {"a": True}}, set()),
    ({"scopes": ("a",)}, set()),  # JSON never produces tuples; only lists count as arrays
    # one bad claim does not poison the others
    ({"scopes": ["a", 1], "scope": "b"}, {"b"}),
    ({"scope": "a\tb", "scp": ["c"]}, {"c"}),
])
def test_scopes_from_claims_shapes(claims: dict[str, Any], expected: set[str]) -> None:
    assert scopes_from_claims(claims, DEFAULT_CLAIMS) == frozenset(expected)


def test_custom_scope_claims() -> None:
    claims = {"permissions": ["read:deployments"], "roles": "admin ops", "scopes": ["ignored"]}
    assert scopes_from_claims(claims, ("permissions",)) == {"read:deployments"}
    assert scopes_from_claims(claims, ("permissions", "roles")) == {"read:deployments", "admin",
                                                                     "ops"}
    assert scopes_from_claims(claims, ()) == frozenset()


def test_scopes_are_case_sensitive_and_exact() -> None:
    scopes = scopes_from_claims({"scope": "Read:Deployments read:deployments-all"}, ("scope",))
    requirement = ScopeRequirement(all_of=("read:deployments",))
    assert not requirement.is_met(scopes)  # no case folding, no superstrings


# -- ScopeRequirement and validate_scopes -----------------------------------------------------

def test_scope_requirement_all_and_any() -> None:
    all_of = ScopeRequirement(all_of=("a", "b"))
    assert all_of.is_met(frozenset({"a", "b", "c"}))
    assert not all_of.is_met(frozenset({"a"}))
    any_of = ScopeRequirement(any_of=("a", "b"))
    assert any_of.is_met(frozenset({"b"}))
    assert not any_of.is_met(frozenset({"c"}))
    both = ScopeRequirement(all_of=("x",), any_of=("a", "b"))
    assert both.is_met(frozenset({"x", "a"}))
    assert not both.is_met(frozenset({"x"}))
    assert not both.is_met(frozenset({"a", "b"}))
    assert ScopeRequirement().is_met(frozenset())


def _token(claims: dict[str, Any], scope_claims: tuple[str, ...] = DEFAULT_CLAIMS) -> AccessToken:
    base = {"iss": "https://yourenv.scalekit.dev", "exp": 1_900_000_000}
    base.update(claims)
    return AccessToken.from_claims(base, scopes_from_claims(base, scope_claims),
                                   algorithm="RS256", key_id="snk_1",
                                   fingerprint="0123456789abcdef")


def test_scope_requirement_check_raises_with_the_scopes_to_announce() -> None:
    token = _token({"scopes": ["a"]})
    ScopeRequirement(all_of=("a",)).check(token)
    with pytest.raises(InsufficientScope) as info:
        ScopeRequirement(all_of=("a", "b")).check(token)
    assert info.value.required == ("a", "b") and info.value.any_of is False
    with pytest.raises(InsufficientScope) as info:
        ScopeRequirement(any_of=("c", "d")).check(token)
    assert info.value.required == ("c", "d") and info.value.any_of is True
    with pytest.raises(InsufficientScope) as info:
        ScopeRequirement(all_of=("x",), any_of=("a",)).check(token)
    assert info.value.required == ("x",)


def test_validate_scopes() -> None:
    assert validate_scopes(["a", "b", "a"]) == ("a", "b")
    assert validate_scopes(("read:deployments", "https://api.example/read")) == (
        "read:deployments", "https://api.example/read")
    for bad in (["a b"], [""], [], [1], ["a\tb"], ['a"b'], ["a\\b"], ["é"], ["a\n"]):
        with pytest.raises(ValueError):
            validate_scopes(bad)


# -- AccessToken --------------------------------------------------------------------------------

@pytest.mark.parametrize(("claims", "client_id"), [
    ({"client_id": "c", "azp": "a", "cid": "i", "appid": "p", "sub": "s"}, "c"),
    ({"azp": "a", "cid": "i", "appid": "p", "sub": "s"}, "a"),
    ({"cid": "i", "appid": "p", "sub": "s"}, "i"),
    ({"appid": "p", "sub": "s"}, "p"),
    ({"sub": "s"}, "s"),
    ({}, None),
    # non-strings and empty strings are skipped, not stringified
    ({"client_id": 5, "azp": "", "cid": None, "appid": ["x"], "sub": "s"}, "s"),
    ({"client_id": True}, None),
])
def test_client_id_fallback_order(claims: dict[str, Any], client_id: str | None) -> None:
    assert _token(claims).client_id == client_id


@pytest.mark.parametrize(("claims", "org"), [
    ({"oid": "org_1", "org_id": "org_2"}, "org_1"),
    ({"org_id": "org_2"}, "org_2"),
    ({"oid": 7, "org_id": "org_2"}, "org_2"),
    ({}, None),
])
def test_organization_id(claims: dict[str, Any], org: str | None) -> None:
    assert _token(claims).organization_id == org


def test_access_token_properties() -> None:
    token = _token({"sub": "m2morg_1", "aud": ["deployment-api", 3, "billing-api"],
                    "iat": 1_700_000_000, "nbf": 1_700_000_000.5, "jti": "tkn_1",
                    "custom_claims": {"environment": "production", "tier": {"level": 2}},
                    "scopes": ["read:deployments"]})
    assert token.issuer == "https://yourenv.scalekit.dev"
    assert token.subject == "m2morg_1"
    assert token.audience == ("deployment-api", "billing-api")
    assert token.expires_at == datetime(2030, 3, 17, 17, 46, 40, tzinfo=timezone.utc)
    assert token.issued_at == datetime.fromtimestamp(1_700_000_000, tz=timezone.utc)
    assert token.issued_at.tzinfo is timezone.utc  # type: ignore[union-attr]
    assert token.not_before == datetime.fromtimestamp(1_700_000_000.5, tz=timezone.utc)
    assert token.token_id == "tkn_1"
    assert token.scopes == frozenset({"read:deployments"})
    assert token.algorithm == "RS256" and token.key_id == "snk_1"
    assert token.custom_claims == {"environment": "production", "tier": {"level": 2}}
    assert token.has_scopes("read:deployments")
    assert token.has_scopes()
    assert not token.has_scopes("read:deployments", "x")
    assert token.has_any_scope("x", "read:deployments")
    assert not token.has_any_scope("x")


def test_access_token_optional_claims_absent_or_mistyped() -> None:
    token = _token({"aud": "single", "iat": "1700000000", "sub": 5, "jti": 9,
                    "custom_claims": ["not", "an", "object"]})
    assert token.audience == ("single",)
    assert token.issued_at is None  # a string is not a NumericDate
    assert token.not_before is None
    assert token.subject is None
    assert token.token_id is None
    assert dict(token.custom_claims) == {}
    assert _token({"aud": 5}).audience == ()
    assert _token({"iat": True}).issued_at is None


def test_claims_and_custom_claims_are_read_only() -> None:
    token = _token({"custom_claims": {"environment": "production"}, "scopes": ["a"]})
    with pytest.raises(TypeError):
        token.claims["scopes"] = ["admin"]  # type: ignore[index]
    with pytest.raises(TypeError):
        token.custom_claims["environment"] = "dev"  # type: ignore[index]
    with pytest.raises(AttributeError):
        token.scopes = frozenset({"admin"})  # type: ignore[misc]
    assert isinstance(token.scopes, frozenset)
    with pytest.raises(TypeError):
        _token({}).custom_claims["x"] = 1  # type: ignore[index]


def test_repr_has_no_raw_token_or_claims(issuer: KeySetServer, settings: GuardSettings) -> None:
    raw = issuer.mint(custom_claims={"secret_tier": "platinum"})
    verifier = TokenVerifier(settings)
    try:
        token = verifier.verify_sync(raw)
    finally:
        verifier.close()
    text = repr(token)
    assert text == (f"AccessToken(client_id='m2morg_68315758685323697', issuer={issuer.url!r}, "
                    f"scopes=['deploy:applications', 'read:deployments'], "
                    f"fingerprint={token.fingerprint!r})")
    for part in raw.split("."):
        assert part not in text
    assert "platinum" not in text and "platinum" not in str(token)
    assert re.fullmatch(r"[0-9a-f]{16}", token.fingerprint)
    assert not any(isinstance(v, str) and raw in v for v in vars_of(token))
    # the verified token maps Scalekit's claims
    assert token.organization_id == "org_59615193906282635"
    assert token.custom_claims == {"secret_tier": "platinum"}
    assert token.audience == ("deployment-api",)
    assert token.token_id is not None and token.token_id.startswith("tkn_")


def vars_of(token: AccessToken) -> list[Any]:
    return [getattr(token, name) for name in token.__slots__]  # type: ignore[attr-defined]


def test_tokens_compare_by_identity() -> None:
    a = _token({"sub": "x"})
    b = _token({"sub": "x"})
    assert a != b and a == a


# -- render_error -----------------------------------------------------------------------------

def _rendered(error: GuardError, realm: str = "api", **kw: Any) -> tuple[int, dict[str, str],
                                                                       dict[str, Any]]:
    result = render_error(error, realm=realm, **kw)
    headers = dict(result.headers)
    assert len(headers) == len(result.headers)  # no header repeated
    assert result.content_type == "application/json"
    return result.status, headers, json.loads(result.body)


def test_render_missing_token() -> None:
    status, headers, body = _rendered(MissingToken())
    assert status == 401
    assert headers == {"content-type": "application/json", "www-authenticate": 'Bearer realm="api"',
                       "cache-control": "no-store"}
    assert body == {"error": "missing_token", "error_description": "A bearer token is required."}


def test_render_invalid_request() -> None:
    status, headers, body = _rendered(InvalidRequest(), realm="deployments")
    assert status == 400
    assert headers["www-authenticate"] == (
        'Bearer realm="deployments", error="invalid_request", '
        'error_description="The Authorization header is malformed."')
    assert body == {"error": "invalid_request",
                    "error_description": "The Authorization header is malformed."}


def test_render_invalid_token() -> None:
    status, headers, body = _rendered(InvalidToken("The token has expired.", reason="expired"))
    assert status == 401
    assert headers["www-authenticate"] == (
        'Bearer realm="api", error="invalid_token", error_description="The token has expired."')
    assert headers["cache-control"] == "no-store"
    assert body == {"error": "invalid_token", "error_description": "The token has expired."}
    assert InvalidToken().description == "The access token is invalid."
    assert InvalidToken(reason="expired").reason == "expired"
    assert InvalidToken().reason == "invalid_token"


def test_render_insufficient_scope() -> None:
    status, headers, body = _rendered(InsufficientScope(("a:b", "c")))
    assert status == 403
    assert headers["www-authenticate"] == (
        'Bearer realm="api", error="insufficient_scope", '
        'error_description="The access token lacks the scope: a:b c", scope="a:b c"')
    assert body == {"error": "insufficient_scope",
                    "error_description": "The access token lacks the scope: a:b c",
                    "scope": "a:b c"}
    _, headers, body = _rendered(InsufficientScope(["x", "y"], any_of=True))
    assert body["error_description"] == "The access token lacks one of the scopes: x y"
    assert headers["www-authenticate"].endswith('scope="x y"')
    # a single any-of scope reads like an all-of one
    assert InsufficientScope(("x",), any_of=True).description == (
        "The access token lacks the scope: x")
    # no scopes: no scope parameter at all
    _, headers, body = _rendered(InsufficientScope())
    assert headers["www-authenticate"] == (
        'Bearer realm="api", error="insufficient_scope", '
        'error_description="The access token does not have the required scope."')
    assert "scope" not in body


def test_render_issuer_unavailable() -> None:
    status, headers, body = _rendered(IssuerUnavailable(retry_after=12))
    assert status == 503
    assert headers == {"content-type": "application/json", "retry-after": "12",
                       "cache-control": "no-store"}
    assert body == {"error": "temporarily_unavailable",
                    "error_description": "The token issuer's keys are temporarily unavailable."}
    assert IssuerUnavailable(retry_after=0).retry_after == 1
    assert IssuerUnavailable(retry_after=-5).retry_after == 1
    assert IssuerUnavailable().retry_after == 30
    assert IssuerUnavailable().reason == "issuer_unavailable"


def test_render_resource_metadata() -> None:
    _, headers, _ = _rendered(MissingToken(),
                              resource_metadata="https://api.example/.well-known/x")
    assert headers["www-authenticate"] == (
        'Bearer realm="api", resource_metadata="https://api.example/.well-known/x"')


def test_error_classes_fixed_codes() -> None:
    table = [(MissingToken, 401, None, "missing_token"),
             (InvalidRequest, 400, "invalid_request", "invalid_request"),
             (InvalidToken, 401, "invalid_token", "invalid_token"),
             (InsufficientScope, 403, "insufficient_scope", "insufficient_scope"),
             (IssuerUnavailable, 503, None, "temporarily_unavailable")]
    for cls, status, code, body_error in table:
        assert issubclass(cls, GuardError)
        assert (cls.status_code, cls.error_code, cls.body_error) == (status, code, body_error)
        error = cls()
        assert str(error) == error.description
        assert RFC6750_CHARS.fullmatch(error.description)


# -- safe_description -------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("The token has expired.", "The token has expired."),
    ('kid "x"', "kid ?x?"),
    ("a\\b", "a?b"),
    ("line\nbreak\r\ttab", "line?break??tab"),
    ("caf\u00e9 \u202e", "caf? ?"),
    ("\x00\x7f", "??"),
    ("", ""),
])
def test_safe_description(text: str, expected: str) -> None:
    assert safe_description(text) == expected


def test_safe_description_bounds_length() -> None:
    long = safe_description("x" * 1000)
    assert len(long) == 200 and long.endswith("...")
    assert safe_description("x" * 200) == "x" * 200


def test_error_descriptions_are_sanitised_on_creation() -> None:
    error = InvalidToken('bad "kid" \\ \n' + "é" * 300)
    assert RFC6750_CHARS.fullmatch(error.description)
    assert len(error.description) <= 200
    _, headers, body = _rendered(error)
    assert headers["www-authenticate"].count('"') == 6  # realm, error, error_description
    assert body["error_description"] == error.description
