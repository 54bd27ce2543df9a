"""RFC 6750 framing: repeated headers, tokens in the query, spacing and schemes, illegal
characters, oversized and deeply nested input.

See tests/attacks/kit.py for how attacks are sent and checked."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from m2m_guard.local_issuer import KeySetServer, SigningKey

from .kit import (
    D_CLAIMS,
    D_HEADER,
    D_TOO_LARGE,
    R_HEADER_AND_QUERY,
    R_ILLEGAL,
    R_NO_TOKEN,
    R_QUERY,
    R_TAB,
    R_TWO_HEADERS,
    SENT,
    assert_invalid_request,
    assert_invalid_token,
    assert_missing_token,
    assert_ok,
    claims_of,
    dumps,
    header_of,
    send,
    token,
)


# == 12. RFC 6750 framing =======================================================================
def test_two_authorization_headers(client: TestClient, issuer_server: KeySetServer) -> None:
    good = issuer_server.mint()
    for first, second in [(f"Bearer {good}", f"Bearer {good}"),
                          (f"Bearer {good}", "Basic dXNlcjpwYXNz"),
                          ("Basic dXNlcjpwYXNz", f"Bearer {good}"),
                          (f"Bearer {good}", "")]:
        response = send(client, headers=[("Authorization", first), ("Authorization", second)])
        assert_invalid_request(response, R_TWO_HEADERS)


@pytest.mark.parametrize("query", ["same-token", "other-token", "empty", "among-others"])
def test_header_plus_query_token(client: TestClient, issuer_server: KeySetServer,
                                 query: str) -> None:
    good = issuer_server.mint()
    params = {"same-token": {"access_token": good}, "other-token": {"access_token": "abc"},
              "empty": {"access_token": ""},
              "among-others": {"a": "1", "access_token": good}}[query]
    assert_invalid_request(send(client, good, params=params), R_HEADER_AND_QUERY)


@pytest.mark.parametrize("query", ["access_token=TOKEN", "access%5Ftoken=TOKEN",
                                   "x=1&access_token=TOKEN", "access_token"])
def test_query_token_alone(client: TestClient, issuer_server: KeySetServer, query: str) -> None:
    good = issuer_server.mint()
    SENT.append(good)
    response = client.get("/deployments?" + query.replace("TOKEN", good))
    assert response.status_code != 500
    assert_invalid_request(response, R_QUERY)


@pytest.mark.parametrize("authorization", ["Bearer", "Bearer ", "Bearer    ", "bearer",
                                           "BEARER "])
def test_bearer_without_token(client: TestClient, authorization: str) -> None:
    assert_invalid_request(send(client, authorization=authorization), R_NO_TOKEN)


@pytest.mark.parametrize("scheme", ["Bearer  ", "Bearer     ", "bearer ", "BEARER ", "bEaReR "])
def test_bearer_spacing_and_case_accepted(client: TestClient, issuer_server: KeySetServer,
                                          scheme: str) -> None:
    assert_ok(send(client, authorization=scheme + issuer_server.mint()))


@pytest.mark.parametrize("authorization", ["Basic dXNlcjpwYXNz", "Digest username=\"x\"",
                                           "Token abc", "Bearerabc", "MAC id=1", "Negotiate x",
                                           "DPoP eyJhbGciOiJFUzI1NiJ9.e30.c2ln", ""])
def test_other_schemes_are_no_credentials(client: TestClient, authorization: str) -> None:
    assert_missing_token(send(client, authorization=authorization))


def test_tab_after_bearer(client: TestClient, issuer_server: KeySetServer) -> None:
    assert_invalid_request(send(client, authorization="Bearer\t" + issuer_server.mint()), R_TAB)


@pytest.mark.parametrize("value", ["abc$def", "a.b.c!", "tok\"en", "a,b", "a;b", "a=b", "a\\b",
                                   "<script>", "a.b.c d", "{\"alg\":\"none\"}", "%41%42"])
def test_token_with_illegal_characters(client: TestClient, value: str) -> None:
    assert_invalid_request(send(client, authorization="Bearer " + value), R_ILLEGAL)


def test_token_with_non_ascii_bytes(client: TestClient) -> None:
    for raw in [b"Bearer \xc3\xa9", b"Bearer abc\xff", b"Bearer \xe2\x80\x8babc"]:
        assert_invalid_request(send(client, authorization=raw), R_ILLEGAL)


@pytest.mark.parametrize("filler", ["A", "$", ".", " "])
def test_one_mebibyte_header_refused_by_size(client: TestClient, filler: str) -> None:
    """1 MiB of anything is refused by the size check, before any parsing or decoding."""
    value = "x" + filler * (1 << 20) + "x"
    response = send(client, authorization="Bearer " + value)
    assert_invalid_token(response, D_TOO_LARGE)
    assert "16384 bytes" in response.json()["error_description"]


@pytest.mark.parametrize("part", ["header", "payload"])
@pytest.mark.parametrize("opener", [b"[", b'{"a":'])
def test_deep_nesting_over_limit_refused_before_decoding(client: TestClient,
                                                         issuer_server: KeySetServer,
                                                         rs: SigningKey, part: str,
                                                         opener: bytes) -> None:
    """200,000 levels of nesting: over the size limit, so it is never decoded at all."""
    deep = opener * 200_000
    forged = token(rs, deep, claims_of(issuer_server)) if part == "header" \
        else token(rs, header_of(rs), deep)
    response = send(client, forged)
    assert_invalid_token(response, D_TOO_LARGE)


@pytest.mark.parametrize("shape", ["closed", "unclosed", "objects", "in-member"])
@pytest.mark.parametrize("part", ["header", "payload"])
def test_deep_nesting_under_limit(client: TestClient, issuer_server: KeySetServer,
                                  rs: SigningKey, shape: str, part: str) -> None:
    """~15 KiB of nesting fits the size limit; the parser's depth limit refuses it (no 500)."""
    depth = 5_400
    nested = {
        "closed": b"[" * depth + b"]" * depth,
        "unclosed": b"[" * (2 * depth),
        "objects": b'{"a":' * 1_800 + b"1" + b"}" * 1_800,
        "in-member": None,
    }[shape]
    if part == "header":
        if nested is None:
            nested = dumps(header_of(rs))[:-1] + b',"x":' + b"[" * depth + b"]" * depth + b"}"
        forged = token(rs, nested, claims_of(issuer_server))
    else:
        if nested is None:
            nested = (dumps(claims_of(issuer_server))[:-1] + b',"custom_claims2":'
                      + b"[" * depth + b"]" * depth + b"}")
        forged = token(rs, header_of(rs), nested)
    assert 14 * 1024 < len(forged) < 16384
    assert_invalid_token(send(client, forged), D_HEADER if part == "header" else D_CLAIMS)
