"""Encoding tricks: duplicate names, non-UTF-8 JSON, non-canonical base64url, whitespace,
segments and JSON values of the wrong shape.

See tests/attacks/kit.py for how attacks are sent and checked."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from starlette.testclient import TestClient

from m2m_guard._core.encoding import b64url_encode
from m2m_guard.local_issuer import KeySetServer, SigningKey

from .kit import (
    D_CLAIMS,
    D_CLAIMS_OBJECT,
    D_EMPTY,
    D_FRAMING,
    D_HEADER,
    D_HEADER_OBJECT,
    R_ILLEGAL,
    URLSAFE,
    assert_invalid_request,
    assert_invalid_token,
    assert_ok,
    claims_of,
    d_b64url,
    dumps,
    header_of,
    send,
    signed,
    split,
    token,
)

# == 8. encoding tricks =========================================================================
RS_HEADER = b'{"alg":"RS256","kid":"snk_rs256","typ":"JWT"'


@pytest.mark.parametrize("header", [
    RS_HEADER + b',"alg":"RS256"}',
    b'{"alg":"none","kid":"snk_rs256","typ":"JWT","alg":"RS256"}',
    RS_HEADER + b',"alg":"none"}',
    RS_HEADER + b',"kid":"attacker-key"}',
    RS_HEADER + b',"typ":"dpop+jwt"}',
    RS_HEADER + b',"typ":"JWT"}',
    RS_HEADER + b',"x":{"a":1,"a":2}}',
    RS_HEADER + b',"x":[{"a":1,"a":1}]}',
])
def test_duplicate_names_in_header(client: TestClient, issuer_server: KeySetServer,
                                   rs: SigningKey, header: bytes) -> None:
    forged = token(rs, header, claims_of(issuer_server))
    assert_invalid_token(send(client, forged), D_HEADER)


@pytest.mark.parametrize("duplicate", [
    '"iss":"https://evil.example"', '"iss":"{iss}"', '"exp":1', '"aud":"other-api"',
    '"scopes":["admin:platform"]', '"sub":"m2morg_attacker"', '"client_id":"x"',
    '"custom_claims":{{"a":1}}',
])
def test_duplicate_names_in_payload(client: TestClient, issuer_server: KeySetServer,
                                    rs: SigningKey, duplicate: str) -> None:
    """The duplicate comes first, so a last-wins parser would see only the good value."""
    payload = dumps(claims_of(issuer_server))
    extra = duplicate.format(iss=issuer_server.url).encode()
    forged = token(rs, header_of(rs), b"{" + extra + b"," + payload[1:])
    assert_invalid_token(send(client, forged), D_CLAIMS)


def test_duplicate_names_nested_in_payload(client: TestClient, issuer_server: KeySetServer,
                                           rs: SigningKey) -> None:
    payload = dumps(claims_of(issuer_server, custom_claims={"k": 1}))
    payload = payload.replace(b'"custom_claims":{"k":1}', b'"custom_claims":{"k":1,"k":2}')
    assert b'"k":1,"k":2' in payload
    assert_invalid_token(send(client, token(rs, header_of(rs), payload)), D_CLAIMS)


TEXT_ENCODINGS: dict[str, Callable[[str], bytes]] = {
    "utf-16": lambda text: text.encode("utf-16"),
    "utf-16-le": lambda text: text.encode("utf-16-le"),
    "utf-16-be": lambda text: text.encode("utf-16-be"),
    "utf-32": lambda text: text.encode("utf-32"),
    "utf-8-bom": lambda text: b"\xef\xbb\xbf" + text.encode(),
    "latin-1": lambda text: text[:-1].encode() + b',"x":"\xe9"}',
    "overlong-utf-8": lambda text: text[:-1].encode() + b',"x":"\xc0\xa2"}',
}


@pytest.mark.parametrize("encoding", list(TEXT_ENCODINGS))
@pytest.mark.parametrize("part", ["header", "payload"])
def test_non_utf8_json(client: TestClient, issuer_server: KeySetServer, rs: SigningKey,
                       encoding: str, part: str) -> None:
    encode = TEXT_ENCODINGS[encoding]
    header = dumps(header_of(rs))
    claims = dumps(claims_of(issuer_server))
    if part == "header":
        header = encode(header.decode())
    else:
        claims = encode(claims.decode())
    forged = token(rs, header, claims)
    assert_invalid_token(send(client, forged), D_HEADER if part == "header" else D_CLAIMS)


def segment_where(make: Callable[[str], bytes], ok: Callable[[str], bool]) -> str:
    """The base64url of `make(pad)` for the first short `pad` whose encoding satisfies `ok`."""
    for n in range(24):
        segment = b64url_encode(make("a" * n))
        if ok(segment):
            return segment
    raise AssertionError("no padding gave a suitable segment")


def has_url_chars(segment: str) -> bool:
    return "-" in segment and "_" in segment


def has_spare_bits(segment: str) -> bool:
    return len(segment) % 4 in (2, 3)


def standard_alphabet(segment: str) -> str:
    return segment.replace("-", "+").replace("_", "/")


def padded(segment: str) -> str:
    assert len(segment) % 4
    return segment + "=" * (-len(segment) % 4)


def trailing_bits_set(segment: str) -> str:
    """The same bytes for a lenient decoder: an unused low bit of the last character set."""
    assert has_spare_bits(segment)
    index = URLSAFE.index(segment[-1])
    assert index & 1 == 0
    return segment[:-1] + URLSAFE[index | 1]


NONCANONICAL: dict[str, tuple[Callable[[str], bool], Callable[[str], str]]] = {
    "std-alphabet": (has_url_chars, standard_alphabet),
    "padding": (has_spare_bits, padded),
    "trailing-bits": (has_spare_bits, trailing_bits_set),
}


@pytest.mark.parametrize("trick", list(NONCANONICAL))
@pytest.mark.parametrize("part", ["header", "payload", "signature"])
def test_non_canonical_base64url(client: TestClient, issuer_server: KeySetServer,
                                 rs: SigningKey, trick: str, part: str) -> None:
    """Each token is signed over exactly what is sent, so only a strict decoder refuses it."""
    ok, transform = NONCANONICAL[trick]
    claims = claims_of(issuer_server)
    header_segment = segment_where(
        lambda pad: dumps(header_of(rs, n=pad + ">>>???")),
        ok if part == "header" else (lambda s: True))
    payload_segment = segment_where(
        lambda pad: dumps({**claims, "n": pad + ">>>???"}),
        ok if part == "payload" else (lambda s: True))
    if part == "signature":
        for _ in range(50):  # RS256 signatures vary with the claims: find one with '-' and '_'
            good = signed(rs, header_segment, payload_segment)
            if ok(split(good)[2]):
                break
            payload_segment = b64url_encode(dumps(claims_of(issuer_server)))
        h, p, s = split(good)
        assert_ok(send(client, good))
        forged = f"{h}.{p}.{transform(s)}"
    else:
        if part == "header":
            header_segment = transform(header_segment)
        else:
            payload_segment = transform(payload_segment)
        forged = signed(rs, header_segment, payload_segment)
    response = send(client, forged)
    if trick == "padding" and part != "signature":
        # '=' inside the token is not an RFC 6750 b64token: refused as a malformed request.
        assert_invalid_request(response, R_ILLEGAL)
    else:
        assert_invalid_token(response, d_b64url(part))


@pytest.mark.parametrize("where", ["space-in-header", "space-in-signature", "tab-in-payload",
                                   "space-after-dot"])
def test_whitespace_inside_token(client: TestClient, issuer_server: KeySetServer,
                                 rs: SigningKey, where: str) -> None:
    good = token(rs, header_of(rs), claims_of(issuer_server))
    h, p, s = split(good)
    forged = {"space-in-header": f"{h[:5]} {h[5:]}.{p}.{s}",
              "space-in-signature": f"{h}.{p}.{s[:9]} {s[9:]}",
              "tab-in-payload": f"{h}.{p[:7]}\t{p[7:]}.{s}",
              "space-after-dot": f"{h}. {p}.{s}"}[where]
    assert_invalid_request(send(client, forged), R_ILLEGAL)


def test_surrounding_spaces_are_optional_whitespace(client: TestClient,
                                                    issuer_server: KeySetServer) -> None:
    good = issuer_server.mint()
    assert_ok(send(client, authorization=f"Bearer {good}  "))
    assert_ok(send(client, authorization=f"  Bearer {good}"))


def jwe_like(parts: int) -> str:
    header = b64url_encode(b'{"alg":"RSA-OAEP","enc":"A256GCM","kid":"snk_rs256"}')
    rest = [b64url_encode(bytes([i]) * 32) for i in range(parts - 1)]
    return ".".join([header, *rest])


@pytest.mark.parametrize("shape", ["four-parts", "five-parts", "jwe-5", "jwe-dir", "two-parts",
                                   "one-part", "trailing-dot", "leading-dot", "three-dots"])
def test_wrong_number_of_segments(client: TestClient, issuer_server: KeySetServer,
                                  shape: str) -> None:
    good = issuer_server.mint()
    h, p, s = split(good)
    forged = {
        "four-parts": f"{good}.{s}",
        "five-parts": f"{h}.{p}.{s}.{s}.{s}",
        "jwe-5": jwe_like(5),
        "jwe-dir": b64url_encode(b'{"alg":"dir","enc":"A128GCM"}') + ".." + "AAAA.BBBB.CCCC",
        "two-parts": f"{h}.{p}",
        "one-part": h,
        "trailing-dot": f"{good}.",
        "leading-dot": f".{good}",
        "three-dots": "...",
    }[shape]
    assert_invalid_token(send(client, forged), D_FRAMING)


@pytest.mark.parametrize("shape", ["empty-header", "empty-signature", "only-dots",
                                   "empty-payload", "empty-header-and-payload"])
def test_empty_segments(client: TestClient, issuer_server: KeySetServer, rs: SigningKey,
                        shape: str) -> None:
    good = issuer_server.mint()
    h, p, s = split(good)
    if shape == "empty-payload":
        forged = signed(rs, h, "")  # validly signed, but an empty payload is no JSON object
        assert_invalid_token(send(client, forged), D_CLAIMS)
        return
    forged = {"empty-header": f".{p}.{s}", "empty-signature": f"{h}.{p}.",
              "only-dots": "..", "empty-header-and-payload": f"..{s}"}[shape]
    assert_invalid_token(send(client, forged), D_EMPTY)


@pytest.mark.parametrize("value", [b"[]", b'"RS256"', b"null", b"1", b"true",
                                   b'[{"alg":"RS256","kid":"snk_rs256"}]'])
@pytest.mark.parametrize("part", ["header", "payload"])
def test_json_that_is_not_an_object(client: TestClient, issuer_server: KeySetServer,
                                    rs: SigningKey, value: bytes, part: str) -> None:
    if part == "header":
        forged = token(rs, value, claims_of(issuer_server))
        assert_invalid_token(send(client, forged), D_HEADER_OBJECT)
    else:
        forged = token(rs, header_of(rs), value)
        assert_invalid_token(send(client, forged), D_CLAIMS_OBJECT)


@pytest.mark.parametrize("value", [b"", b"{", b"{'alg':'RS256'}", b'{"alg":"RS256",}',
                                   b"{}garbage", b"\x00"])
def test_header_that_is_not_json(client: TestClient, issuer_server: KeySetServer,
                                 rs: SigningKey, value: bytes) -> None:
    forged = token(rs, value, claims_of(issuer_server))
    # An empty header segment is caught by the framing check, the rest by the JSON parser.
    assert_invalid_token(send(client, forged), D_EMPTY if value == b"" else D_HEADER)
