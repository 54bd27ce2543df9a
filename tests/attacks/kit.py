"""What every attack test shares: the refusals expected word for word, sending a request and
checking the answer, and building tokens signed over exactly the bytes sent."""

from __future__ import annotations

import json
from typing import Any

from starlette.testclient import TestClient

from m2m_guard._core.encoding import b64url_encode
from m2m_guard.local_issuer import KeySetServer, SigningKey, scalekit_claims

# -- the refusals we expect, word for word --------------------------------------------------------
D_ALG = "The token's algorithm is not accepted."
D_EMPTY = "The token has an empty header or signature."
D_SIG = "The token signature is invalid."
D_UNKNOWN_KID = "The token's signing key is not in its issuer's key set."
D_ALG_MISMATCH = "The token's algorithm does not match its key."
D_KID = "The token's kid must be a non-empty string of at most 256 characters."
D_CRIT = "The token has critical header parameters that are not understood."
D_B64 = "Unencoded payloads (b64) are not accepted."
D_ZIP = "Compressed payloads (zip) are not accepted."
D_TYPE = "The token type is not accepted for access tokens."
D_NO_TYP = "The token has no typ; at+jwt is required."
D_CTY = "Nested or typed content (cty) is not accepted."
D_HEADER = "The token header is not a strict JSON object."
D_HEADER_OBJECT = "The token header is not a JSON object."
D_CLAIMS = "The token claims are not a strict JSON object."
D_CLAIMS_OBJECT = "The token claims are not a JSON object."
D_FRAMING = "The token is not a compact JWS (three dot-separated segments)."
D_ISS = "The token's issuer is not trusted."
D_AUD = "The token is not meant for this audience."
D_AUD_TYPE = "The aud claim must be a string or an array of strings."
D_AUD_MISSING = "The token has no aud claim."
D_EXPIRED = "The token has expired."
D_NBF = "The token is not valid yet (nbf)."
D_IAT = "The token was issued in the future (iat)."
D_NO_EXP = "The token has no exp claim."
D_TOO_LARGE = "The token is larger than 16384 bytes."
R_ILLEGAL = "The bearer token contains characters RFC 6750 does not allow."
R_NO_TOKEN = "The Authorization header has the Bearer scheme but no token."
R_TWO_HEADERS = "The request has more than one Authorization header."
R_HEADER_AND_QUERY = "The token is sent both in the header and in the query string."
R_QUERY = ("Tokens in the query string are not accepted; send them in the Authorization "
           "header.")
R_TAB = "The Authorization header must separate Bearer and the token with a space."
INSUFFICIENT_READ = "The access token lacks the scope: read:deployments"


def d_b64url(segment: str) -> str:
    return f"The token {segment} is not canonical base64url."


def d_number(claim: str) -> str:
    return f"The {claim} claim must be a number of seconds."


# -- sending, and checking what came back ---------------------------------------------------------
SENT: list[str] = []  # every raw token sent during the current test (for the log check)


def send(client: TestClient, token: str | None = None, *, path: str = "/deployments",
         method: str = "GET", authorization: str | bytes | None = None,
         headers: list[tuple[str, str | bytes]] | None = None,
         params: dict[str, str] | None = None) -> Any:
    """One request; `token` becomes `Authorization: Bearer <token>`. Never a 500."""
    all_headers: list[tuple[str, str | bytes]] = list(headers or [])
    if token is not None:
        SENT.append(token)
        all_headers.append(("Authorization", f"Bearer {token}"))
    if authorization is not None:
        SENT.append(authorization.decode("latin-1") if isinstance(authorization, bytes)
                     else authorization)
        all_headers.append(("Authorization", authorization))
    for _, value in all_headers:
        SENT.append(value.decode("latin-1") if isinstance(value, bytes) else value)
    response = client.request(method, path, headers=all_headers, params=params)
    assert response.status_code != 500, response.text
    assert response.status_code in (200, 400, 401, 403), response.text
    return response


def _common(response: Any) -> None:
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"


def assert_invalid_token(response: Any, description: str | None = None) -> str:
    """401 invalid_token with the exact challenge; the description if given. Returns it."""
    assert response.status_code == 401, response.text
    _common(response)
    body = response.json()
    assert set(body) == {"error", "error_description"}
    assert body["error"] == "invalid_token"
    found = body["error_description"]
    assert response.headers.get_list("www-authenticate") == [
        f'Bearer realm="api", error="invalid_token", error_description="{found}"']
    if description is not None:
        assert found == description
    return str(found)


def assert_invalid_request(response: Any, description: str) -> None:
    assert response.status_code == 400, response.text
    _common(response)
    assert response.json() == {"error": "invalid_request", "error_description": description}
    assert response.headers.get_list("www-authenticate") == [
        f'Bearer realm="api", error="invalid_request", error_description="{description}"']


def assert_missing_token(response: Any) -> None:
    assert response.status_code == 401, response.text
    _common(response)
    assert response.json() == {"error": "missing_token",
                               "error_description": "A bearer token is required."}
    assert response.headers.get_list("www-authenticate") == ['Bearer realm="api"']


def assert_insufficient_read(response: Any) -> None:
    assert response.status_code == 403, response.text
    _common(response)
    assert response.json() == {"error": "insufficient_scope",
                               "error_description": INSUFFICIENT_READ,
                               "scope": "read:deployments"}
    assert response.headers.get_list("www-authenticate") == [
        f'Bearer realm="api", error="insufficient_scope", '
        f'error_description="{INSUFFICIENT_READ}", scope="read:deployments"']


def assert_ok(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["deployments"] == ["api-v1"]
    assert "read:deployments" in body["auth_scopes"]
    return body


# -- building tokens ----------------------------------------------------------------------------
def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def header_of(key: SigningKey, **members: Any) -> dict[str, Any]:
    """The usual header of `key` with `members` set (a member set to `DROP` is removed)."""
    header: dict[str, Any] = {"alg": key.alg, "kid": key.kid, "typ": "JWT"}
    for name, value in members.items():
        if value is DROP:
            header.pop(name, None)
        else:
            header[name] = value
    return header


DROP = object()


def claims_of(server: KeySetServer, **overrides: Any) -> dict[str, Any]:
    """Scalekit-shaped claims of `server` with `overrides` (a value of `DROP` removes it)."""
    claims = scalekit_claims(server.url)
    for name, value in overrides.items():
        if value is DROP:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims


def signed(key: SigningKey, header_segment: str, payload_segment: str, *,
           alg: str | None = None) -> str:
    """A compact JWS over exactly these segments (whatever they hold), signed by `key`."""
    signing_input = f"{header_segment}.{payload_segment}"
    return signing_input + "." + b64url_encode(key.signature(signing_input.encode(), alg))


def token(key: SigningKey, header: dict[str, Any] | bytes, claims: dict[str, Any] | bytes, *,
          alg: str | None = None) -> str:
    """Sign JSON (dicts are serialized as they are, null members included) or exact bytes."""
    h = header if isinstance(header, bytes) else dumps(header)
    p = claims if isinstance(claims, bytes) else dumps(claims)
    return signed(key, b64url_encode(h), b64url_encode(p), alg=alg)


def split(value: str) -> list[str]:
    return value.split(".")


URLSAFE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def payload_with_raw(server: KeySetServer, claim: str, raw: bytes) -> bytes:
    """Claims JSON with `claim` set to the literal JSON text `raw` (NaN, 1e400, ...)."""
    claims = claims_of(server, **{claim: "__RAW__"})
    return dumps(claims).replace(b'"__RAW__"', raw)
