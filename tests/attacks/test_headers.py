"""Header attacks: `kid` abuse, `crit` / `b64` / `zip`, type confusion (`typ`, `cty`, nesting).

See tests/attacks/kit.py for how attacks are sent and checked."""

from __future__ import annotations

import zlib
from typing import Any

import pytest
from starlette.testclient import TestClient

from m2m_guard._core.encoding import b64url_encode
from m2m_guard.local_issuer import KeySetServer, SigningKey

from .kit import (
    D_B64,
    D_CLAIMS,
    D_CRIT,
    D_CTY,
    D_KID,
    D_NO_TYP,
    D_TYPE,
    D_UNKNOWN_KID,
    D_ZIP,
    DROP,
    assert_invalid_token,
    assert_ok,
    claims_of,
    dumps,
    header_of,
    send,
    token,
)


# == 5. kid abuse =============================================================================
@pytest.mark.parametrize("kid", [
    "../../dev/null", "../../../../etc/passwd", "/dev/null", "file:///etc/passwd",
    "snk_rs256/../snk_rs256", "..\\..\\windows\\win.ini", "' OR '1'='1", "snk_rs256' --",
    "1; DROP TABLE keys; --", "snk_rs256\u0000", "snk_rs256 ", " snk_rs256", "SNK_RS256",
    "http://127.0.0.1:1/keys", "snk\r\nX-Injected: 1", "snk_rs256\u202e", "%2e%2e%2fkeys",
    "A" * 256,
])
def test_kid_abuse_unknown(client: TestClient, issuer_server: KeySetServer, rs: SigningKey,
                           kid: str) -> None:
    """Odd but well-formed kids are just unknown: 401, and nothing but the key set is fetched."""
    forged = token(rs, header_of(rs, kid=kid), claims_of(issuer_server))
    assert_invalid_token(send(client, forged), D_UNKNOWN_KID)
    assert set(issuer_server.requests) <= {"/keys", "/.well-known/openid-configuration"}


@pytest.mark.parametrize("kid", [
    "", "A" * 257, "A" * 10_000, 123, 0, 1.5, True, False, [], ["snk_rs256"],
    {"kid": "snk_rs256"}, None,
], ids=lambda v: f"{type(v).__name__}-{len(v) if isinstance(v, str) else repr(v)}")
def test_kid_malformed(client: TestClient, issuer_server: KeySetServer, rs: SigningKey,
                       kid: Any) -> None:
    """Empty, oversized and non-string kids (null included) are refused, signature or not."""
    forged = token(rs, header_of(rs, kid=kid), claims_of(issuer_server))
    assert len(forged) < 16384
    assert_invalid_token(send(client, forged), D_KID)


# == 6. crit, b64, zip ========================================================================
@pytest.mark.parametrize(("members", "expected"), [
    ({"crit": ["exp"], "exp": 1}, D_CRIT),
    ({"crit": []}, D_CRIT),
    ({"crit": "b64"}, D_CRIT),
    ({"crit": ["x-unknown"], "x-unknown": True}, D_CRIT),
    ({"crit": ["alg"]}, D_CRIT),
    ({"crit": None}, D_CRIT),
    ({"crit": ["b64"], "b64": False}, D_CRIT),
    ({"crit": ["b64"], "b64": True}, D_CRIT),
    ({"b64": False}, D_B64),
    ({"b64": "false"}, D_B64),
    ({"b64": 0}, D_B64),
    ({"b64": None}, D_B64),
    ({"zip": "DEF"}, D_ZIP),
    ({"zip": "GZIP"}, D_ZIP),
    ({"zip": None}, D_ZIP),
])
def test_crit_b64_zip(client: TestClient, issuer_server: KeySetServer, rs: SigningKey,
                      members: dict[str, Any], expected: str) -> None:
    forged = token(rs, header_of(rs, **members), claims_of(issuer_server))
    assert_invalid_token(send(client, forged), expected)


def test_zip_with_really_compressed_payload(client: TestClient, issuer_server: KeySetServer,
                                           rs: SigningKey) -> None:
    forged = token(rs, header_of(rs, zip="DEF"), zlib.compress(dumps(claims_of(issuer_server))))
    assert_invalid_token(send(client, forged), D_ZIP)


def test_b64_false_detached_unencoded_payload(client: TestClient, issuer_server: KeySetServer,
                                              rs: SigningKey) -> None:
    """RFC 7797: signature over the raw payload, sent detached (empty payload segment)."""
    header = b64url_encode(dumps(header_of(rs, b64=False, crit=["b64"])))
    payload = dumps(claims_of(issuer_server))
    signature = rs.signature(header.encode() + b"." + payload)
    assert_invalid_token(send(client, f"{header}..{b64url_encode(signature)}"), D_CRIT)
    header = b64url_encode(dumps(header_of(rs, b64=False)))
    signature = rs.signature(header.encode() + b"." + payload)
    assert_invalid_token(send(client, f"{header}..{b64url_encode(signature)}"), D_B64)


# == 7. type confusion ==========================================================================
@pytest.mark.parametrize("typ", [DROP, "JWT", "jwt", "at+jwt", "application/at+jwt", "AT+JWT"],
                         ids=repr)
def test_typ_accepted_by_default(client: TestClient, issuer_server: KeySetServer,
                                 rs: SigningKey, typ: Any) -> None:
    assert_ok(send(client, token(rs, header_of(rs, typ=typ), claims_of(issuer_server))))


@pytest.mark.parametrize("typ", ["at+jwt", "application/at+jwt", "AT+JWT",
                                 "Application/At+Jwt"])
def test_typ_accepted_in_strict_mode(strict_client: TestClient, issuer_server: KeySetServer,
                                     rs: SigningKey, typ: str) -> None:
    assert_ok(send(strict_client, token(rs, header_of(rs, typ=typ), claims_of(issuer_server))))


REFUSED_TYPES = ["dpop+jwt", "application/dpop+jwt", "secevent+jwt", "application/secevent+jwt",
                 "logout+jwt", "id_token+jwt", "JOSE", "JOSE+JSON", "application/jwt", "at+jwt ",
                 " JWT", "at+jwt;charset=utf-8", "", 1, True, ["JWT"], {"typ": "JWT"}, None]


@pytest.mark.parametrize("typ", REFUSED_TYPES, ids=repr)
@pytest.mark.parametrize("strict", [False, True])
def test_typ_refused(client: TestClient, strict_client: TestClient, issuer_server: KeySetServer,
                     rs: SigningKey, typ: Any, strict: bool) -> None:
    forged = token(rs, header_of(rs, typ=typ), claims_of(issuer_server))
    assert_invalid_token(send(strict_client if strict else client, forged), D_TYPE)


@pytest.mark.parametrize("typ", ["JWT", "jwt", DROP], ids=repr)
def test_typ_jwt_refused_in_strict_mode(strict_client: TestClient, issuer_server: KeySetServer,
                                        rs: SigningKey, typ: Any) -> None:
    forged = token(rs, header_of(rs, typ=typ), claims_of(issuer_server))
    assert_invalid_token(send(strict_client, forged), D_NO_TYP if typ is DROP else D_TYPE)


@pytest.mark.parametrize("cty", ["JWT", "jwt", "application/json", "at+jwt", None, 1])
def test_cty_refused(client: TestClient, issuer_server: KeySetServer, rs: SigningKey,
                     cty: Any) -> None:
    forged = token(rs, header_of(rs, cty=cty), claims_of(issuer_server))
    assert_invalid_token(send(client, forged), D_CTY)


def test_nested_token_is_refused(client: TestClient, issuer_server: KeySetServer,
                                 rs: SigningKey) -> None:
    """A valid inner token wrapped in an outer JWS with cty JWT: the outer one is refused."""
    inner = issuer_server.mint()
    outer = token(rs, header_of(rs, cty="JWT"), inner.encode())
    assert_invalid_token(send(client, outer), D_CTY)
    outer = token(rs, header_of(rs), inner.encode())  # same without cty: not JSON claims
    assert_invalid_token(send(client, outer), D_CLAIMS)
