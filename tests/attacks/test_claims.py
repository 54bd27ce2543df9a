"""Claim attacks: NumericDates of the wrong type, time claims and leeway, audience and issuer
near misses, an attacker's issuer, scope shapes (judged only on verified claims).

See tests/attacks/kit.py for how attacks are sent and checked."""

from __future__ import annotations

import time
from typing import Any

import pytest
from starlette.testclient import TestClient

from m2m_guard._core.encoding import b64url_encode
from m2m_guard.local_issuer import KeySetServer, SigningKey

from ..conftest import AUDIENCE
from .kit import (
    D_ALG,
    D_AUD,
    D_AUD_MISSING,
    D_AUD_TYPE,
    D_CLAIMS,
    D_EMPTY,
    D_EXPIRED,
    D_IAT,
    D_ISS,
    D_NBF,
    D_NO_EXP,
    D_SIG,
    D_UNKNOWN_KID,
    DROP,
    assert_insufficient_read,
    assert_invalid_token,
    assert_ok,
    claims_of,
    d_number,
    dumps,
    header_of,
    payload_with_raw,
    send,
    split,
    token,
)


# == 9. NumericDates ============================================================================
@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("raw", [b"NaN", b"Infinity", b"-Infinity"])
def test_numeric_date_non_json_literals(client: TestClient, issuer_server: KeySetServer,
                                        rs: SigningKey, claim: str, raw: bytes) -> None:
    forged = token(rs, header_of(rs), payload_with_raw(issuer_server, claim, raw))
    assert_invalid_token(send(client, forged), D_CLAIMS)


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("raw", [b"1e400", b"-1e400", b'"9999999999"', b'"1700000000"', b"true",
                                 b"false", b"null", b"[]", b"{}", b"[9999999999]"])
def test_numeric_date_wrong_type(client: TestClient, issuer_server: KeySetServer,
                                 rs: SigningKey, claim: str, raw: bytes) -> None:
    """Overflowing, string, boolean, null and structured NumericDates are refused as such."""
    forged = token(rs, header_of(rs), payload_with_raw(issuer_server, claim, raw))
    assert_invalid_token(send(client, forged), d_number(claim))


def test_exp_missing(client: TestClient, issuer_server: KeySetServer, rs: SigningKey) -> None:
    forged = token(rs, header_of(rs), claims_of(issuer_server, exp=DROP))
    assert_invalid_token(send(client, forged), D_NO_EXP)


@pytest.mark.parametrize(("claim", "offset", "expected"), [
    ("exp", -120, D_EXPIRED),     # expired well beyond the 30 s leeway
    ("exp", -45, D_EXPIRED),
    ("exp", -10, None),           # expired, but within the leeway
    ("exp", 5, None),
    ("nbf", 120, D_NBF),          # not valid for two more minutes
    ("nbf", 45, D_NBF),
    ("nbf", 10, None),            # within the leeway
    ("iat", 120, D_IAT),          # issued in the future
    ("iat", 45, D_IAT),
    ("iat", 10, None),            # within the leeway
])
def test_time_claims_and_leeway(client: TestClient, issuer_server: KeySetServer, rs: SigningKey,
                                claim: str, offset: int, expected: str | None) -> None:
    now = int(time.time())
    forged = token(rs, header_of(rs), claims_of(issuer_server, **{claim: now + offset}))
    response = send(client, forged)
    if expected is None:
        assert_ok(response)
    else:
        assert_invalid_token(response, expected)


def test_float_numeric_dates_are_numbers(client: TestClient, issuer_server: KeySetServer,
                                         rs: SigningKey) -> None:
    now = time.time()
    good = token(rs, header_of(rs), claims_of(issuer_server, exp=now + 100.5, iat=now - 0.5,
                                              nbf=now - 0.25))
    assert_ok(send(client, good))
    expired = token(rs, header_of(rs), claims_of(issuer_server, exp=now - 100.5))
    assert_invalid_token(send(client, expired), D_EXPIRED)


# == 10. aud / iss near misses ==================================================================
@pytest.mark.parametrize(("aud", "expected"), [
    (DROP, D_AUD_MISSING),
    ("deployment-api ", D_AUD), (" deployment-api", D_AUD), ("Deployment-API", D_AUD),
    ("DEPLOYMENT-API", D_AUD), ("deployment", D_AUD), ("deployment-ap", D_AUD),
    ("deployment-api-v2", D_AUD), ("deployment-apis", D_AUD), ("xdeployment-api", D_AUD),
    ("deployment-api\u0000", D_AUD), ("deployment\u2011api", D_AUD), ("", D_AUD),
    ("deployment-api other-api", D_AUD), ("*", D_AUD),
    (["other-api", "another-api"], D_AUD), (["deployment-api "], D_AUD),
    (["Deployment-API"], D_AUD), (["deployment", "api"], D_AUD),
    ([], D_AUD_TYPE), ([1, 2], D_AUD_TYPE), (["deployment-api", 1], D_AUD_TYPE),
    ([["deployment-api"]], D_AUD_TYPE), ([None], D_AUD_TYPE),
    ({"deployment-api": True}, D_AUD_TYPE), (42, D_AUD_TYPE), (True, D_AUD_TYPE),
    (None, D_AUD_MISSING),  # "aud": null reads as no audience at all: refused either way
], ids=repr)
def test_audience_near_misses(client: TestClient, issuer_server: KeySetServer, rs: SigningKey,
                              aud: Any, expected: str) -> None:
    forged = token(rs, header_of(rs), claims_of(issuer_server, aud=aud))
    assert_invalid_token(send(client, forged), expected)


@pytest.mark.parametrize("aud", ["deployment-api", ["deployment-api"],
                                 ["other-api", "deployment-api"]], ids=repr)
def test_audience_exact_matches(client: TestClient, issuer_server: KeySetServer,
                                rs: SigningKey, aud: Any) -> None:
    assert_ok(send(client, token(rs, header_of(rs), claims_of(issuer_server, aud=aud))))


def issuer_variants(server: KeySetServer, attacker: KeySetServer) -> dict[str, Any]:
    url = server.url
    host_port = url.removeprefix("http://")
    port = int(host_port.rsplit(":", 1)[1])
    return {
        "trailing-slash": url + "/",
        "upper-case": url.upper(),
        "scheme-case": "HTTP://" + host_port,
        "https": "https://" + host_port,
        "other-port": f"http://127.0.0.1:{port + 1 if port < 65535 else port - 1}",
        "no-port": "http://127.0.0.1",
        "localhost": f"http://localhost:{port}",
        "ipv6-loopback": f"http://[::1]:{port}",
        "path": url + "/tenant",
        "dot-segment": url + "/.",
        "query": url + "?",
        "fragment": url + "#",
        "userinfo": f"http://user@{host_port}",
        "leading-space": " " + url,
        "trailing-space": url + " ",
        "nul": url + "\u0000",
        "unconfigured": "https://evil.example",
        "attacker-server": attacker.url,
        "empty": "",
        "missing": DROP,
        "null": None,
        "number": 127001,
        "list": [url],
        "object": {"iss": url},
        "bool": True,
    }


ISSUER_VARIANTS = ["trailing-slash", "upper-case", "scheme-case", "https", "other-port",
                   "no-port", "localhost", "ipv6-loopback", "path", "dot-segment", "query",
                   "fragment", "userinfo", "leading-space", "trailing-space", "nul",
                   "unconfigured", "attacker-server", "empty", "missing", "null", "number",
                   "list", "object", "bool"]


@pytest.mark.parametrize("variant", ISSUER_VARIANTS)
def test_issuer_near_misses(client: TestClient, issuer_server: KeySetServer,
                            attacker: KeySetServer, rs: SigningKey, variant: str) -> None:
    """Only the exact configured issuer is trusted, and no other issuer is ever contacted."""
    iss = issuer_variants(issuer_server, attacker)[variant]
    forged = token(rs, header_of(rs), claims_of(issuer_server, iss=iss))
    assert_invalid_token(send(client, forged), D_ISS)
    assert sum(attacker.requests.values()) == 0


def test_attacker_issuer_with_its_own_keys(client: TestClient, attacker: KeySetServer,
                                           attacker_key: SigningKey) -> None:
    """A token minted by another (real, reachable) issuer with its own key set is refused."""
    forged = attacker.mint(attacker_key, aud=[AUDIENCE])
    assert_invalid_token(send(client, forged), D_ISS)
    assert sum(attacker.requests.values()) == 0


# == 11. scope shapes ==========================================================================
SCOPE_SHAPES: list[tuple[str, dict[str, Any], int]] = [
    # (id, scope claims, expected status on GET /deployments which needs read:deployments)
    ("scopes-array", {"scopes": ["read:deployments"]}, 200),
    ("scopes-as-string", {"scopes": "read:deployments"}, 403),  # `scopes` is an array claim
    ("scopes-as-spaced-string", {"scopes": "deploy:applications read:deployments"}, 403),
    ("scope-string", {"scope": "read:deployments"}, 200),
    ("scope-string-two", {"scope": "deploy:applications read:deployments"}, 200),
    ("scope-as-array", {"scope": ["read:deployments"]}, 403),  # `scope` is a string claim
    ("scp-string", {"scp": "read:deployments"}, 200),
    ("scp-array", {"scp": ["audit:read", "read:deployments"]}, 200),
    ("bad-scopes-good-scope", {"scopes": ["read:deployments", 1], "scope": "read:deployments"},
     200),
    ("scope-tab", {"scope": "deploy:applications\tread:deployments"}, 403),
    ("scope-double-space", {"scope": "deploy:applications  read:deployments"}, 403),
    ("scope-leading-space", {"scope": " read:deployments"}, 403),
    ("scope-trailing-space", {"scope": "read:deployments "}, 403),
    ("scope-newline", {"scope": "deploy:applications\nread:deployments"}, 403),
    ("scope-comma", {"scope": "deploy:applications,read:deployments"}, 403),
    ("scope-nbsp", {"scope": "deploy:applications\u00a0read:deployments"}, 403),
    ("superstring", {"scopes": ["read:deploymentsX"]}, 403),
    ("superstring-string", {"scope": "read:deployments:all"}, 403),
    ("prefix", {"scopes": ["read:"]}, 403),
    ("prefix-string", {"scope": "read"}, 403),
    ("wildcard", {"scopes": ["*", "read:*"]}, 403),
    ("upper-case", {"scopes": ["READ:DEPLOYMENTS"]}, 403),
    ("zero-width", {"scopes": ["read:deployments\u200b"]}, 403),
    ("array-with-non-string", {"scopes": ["read:deployments", 1]}, 403),
    ("array-with-null", {"scopes": ["read:deployments", None]}, 403),
    ("array-nested", {"scopes": [["read:deployments"]]}, 403),
    ("array-item-with-space", {"scopes": ["deploy:applications read:deployments"]}, 403),
    ("array-item-empty", {"scopes": ["read:deployments", ""]}, 403),
    ("object", {"scopes": {"read:deployments": True}}, 403),
    ("bool", {"scopes": True}, 403),
    ("number", {"scope": 1}, 403),
    ("empty-array", {"scopes": []}, 403),
    ("empty-string", {"scope": ""}, 403),
    ("unconfigured-claim", {"permissions": ["read:deployments"]}, 403),
    ("roles-claim", {"roles": ["read:deployments"]}, 403),
    ("no-scopes", {}, 403),
]


@pytest.mark.parametrize(("shape", "scope_claims", "status"), SCOPE_SHAPES,
                         ids=[case[0] for case in SCOPE_SHAPES])
def test_scope_shapes(client: TestClient, issuer_server: KeySetServer, rs: SigningKey,
                      shape: str, scope_claims: dict[str, Any], status: int) -> None:
    claims = claims_of(issuer_server, scopes=DROP)
    claims.update(scope_claims)
    response = send(client, token(rs, header_of(rs), claims))
    if status == 200:
        assert_ok(response)
    else:
        assert_insufficient_read(response)


@pytest.mark.parametrize("forgery", ["impostor-same-kid", "tampered-payload", "no-signature",
                                     "unknown-kid", "alg-none"])
@pytest.mark.parametrize(("method", "path"), [("GET", "/deployments"), ("POST", "/deployments"),
                                              ("GET", "/admin"), ("GET", "/audit")])
def test_scopes_of_unverified_tokens_never_count(client: TestClient, issuer_server: KeySetServer,
                                                 rs: SigningKey, impostors: dict[str, SigningKey],
                                                 forgery: str, method: str, path: str) -> None:
    """A token with every scope but no valid signature is 401, never 200 and never 403."""
    every = ["read:deployments", "deploy:applications", "admin:platform", "audit:read"]
    claims = claims_of(issuer_server, scopes=every, scope=" ".join(every), scp=every)
    if forgery == "impostor-same-kid":
        forged, expected = token(impostors["RS256"], header_of(rs), claims), D_SIG
    elif forgery == "tampered-payload":
        h, _, s = split(token(rs, header_of(rs), claims_of(issuer_server, scopes=[])))
        forged, expected = f"{h}.{b64url_encode(dumps(claims))}.{s}", D_SIG
    elif forgery == "no-signature":
        forged = f"{b64url_encode(dumps(header_of(rs)))}.{b64url_encode(dumps(claims))}."
        expected = D_EMPTY
    elif forgery == "unknown-kid":
        forged, expected = token(rs, header_of(rs, kid="snk_unknown"), claims), D_UNKNOWN_KID
    else:
        forged = token(rs, header_of(rs, alg="none"), claims)
        expected = D_ALG
    assert_invalid_token(send(client, forged, method=method, path=path), expected)


def test_invalid_token_is_401_even_without_the_scopes(client: TestClient,
                                                      issuer_server: KeySetServer,
                                                      rs: SigningKey) -> None:
    """Verification comes before scopes: a bad token never gets a 403 that would leak."""
    good = token(rs, header_of(rs), claims_of(issuer_server, scopes=[]))
    assert_insufficient_read(send(client, good))
    h, p, s = split(good)
    bad = f"{h}.{p}.{s[:100]}{'B' if s[100] == 'A' else 'A'}{s[101:]}"
    assert_invalid_token(send(client, bad), D_SIG)
