"""Attack tests by category (DESIGN §8), all through a real Starlette app and a real key set.

Every attack goes through `deployment_app` (tests.conftest) driven by Starlette's TestClient, with
the issuer's keys served over loopback HTTP. Each test asserts the exact status, the exact
`WWW-Authenticate` challenge and the JSON body; the `send` helper also asserts that nothing ever
answers 500 (the app runs with `raise_server_exceptions=False`, so a crash would be a 500).

Where an attack only fails with a strict implementation (non-canonical base64url, algorithm
confusion, duplicate names, ...), the token is signed over exactly the bytes sent, so a lenient
implementation would accept it: the test can fail.

An autouse fixture checks, after every test, that no raw token sent in that test (nor any long
segment of one) appears in any log record of the `m2m_guard` logger (DESIGN §4).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import logging
import random
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import NameOID
from starlette.testclient import TestClient

from m2m_guard import ConfigurationError, GuardSettings
from m2m_guard.encoding import b64url_encode
from m2m_guard.local_issuer import KeySetServer, SigningKey, scalekit_claims

from .conftest import AUDIENCE, deployment_app

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
    return (f"The token's {claim} is not a valid NumericDate (seconds since 1970, at most "
            "253402300799: the end of the year 9999).")


# -- sending, and checking what came back ---------------------------------------------------------
_SENT: list[str] = []  # every raw token sent during the current test (for the log check)


def send(client: TestClient, token: str | None = None, *, path: str = "/deployments",
         method: str = "GET", authorization: str | bytes | None = None,
         headers: list[tuple[str, str | bytes]] | None = None,
         params: dict[str, str] | None = None) -> Any:
    """One request; `token` becomes `Authorization: Bearer <token>`. Never a 500."""
    all_headers: list[tuple[str, str | bytes]] = list(headers or [])
    if token is not None:
        _SENT.append(token)
        all_headers.append(("Authorization", f"Bearer {token}"))
    if authorization is not None:
        _SENT.append(authorization.decode("latin-1") if isinstance(authorization, bytes)
                     else authorization)
        all_headers.append(("Authorization", authorization))
    for _, value in all_headers:
        _SENT.append(value.decode("latin-1") if isinstance(value, bytes) else value)
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


# -- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def keys(signing_keys: dict[str, SigningKey]) -> dict[str, SigningKey]:
    return signing_keys


@pytest.fixture(scope="module")
def issuer_server(signing_keys: dict[str, SigningKey]) -> Iterator[KeySetServer]:
    """The trusted issuer: publishes RS256, PS256, ES256 and EdDSA keys (each pinned by alg)."""
    with KeySetServer(list(signing_keys.values())) as server:
        yield server


@pytest.fixture(scope="module")
def attacker_key() -> SigningKey:
    return SigningKey.generate("RS256", kid="attacker-key")


@pytest.fixture(scope="module")
def attacker(attacker_key: SigningKey) -> Iterator[KeySetServer]:
    """A key-set server the attacker controls (on loopback); the guard must never call it."""
    with KeySetServer([attacker_key]) as server:
        yield server


@pytest.fixture(scope="module")
def impostors() -> dict[str, SigningKey]:
    """Keys an attacker made, with the same algorithm and kid as each of the issuer's keys."""
    return {alg: SigningKey.generate(alg, kid=f"snk_{alg.lower()}")
            for alg in ("RS256", "PS256", "ES256", "EdDSA")}


def _client(server: KeySetServer, **options: Any) -> TestClient:
    settings = GuardSettings(issuer=server.url, audience=AUDIENCE, http_timeout=2.0, **options)
    return TestClient(deployment_app(settings), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def client(issuer_server: KeySetServer) -> Iterator[TestClient]:
    with _client(issuer_server) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def strict_client(issuer_server: KeySetServer) -> Iterator[TestClient]:
    with _client(issuer_server, strict_typ=True) as test_client:
        yield test_client


@pytest.fixture
def rs(keys: dict[str, SigningKey]) -> SigningKey:
    return keys["RS256"]


@pytest.fixture(autouse=True)
def _raw_tokens_never_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """After each test: no token sent (nor any long segment of one) appears in the logs."""
    caplog.set_level(logging.DEBUG, logger="m2m_guard")
    _SENT.clear()
    yield
    secrets = {value for value in _SENT if len(value) >= 24}
    for value in _SENT:
        secrets.update(part for part in value.replace(" ", ".").split(".") if len(part) >= 24)
    formatter = logging.Formatter()
    for record in caplog.records:
        text = record.getMessage()
        if record.exc_info:
            text += formatter.formatException(record.exc_info)
        for secret in secrets:
            assert secret not in text, f"a raw token reached the log: {record.getMessage()!r}"


def test_baseline_token_is_accepted(client: TestClient, issuer_server: KeySetServer,
                                    rs: SigningKey) -> None:
    """The attacks below are variations of this: the unmodified token verifies."""
    assert_ok(send(client, token(rs, header_of(rs), claims_of(issuer_server))))
    assert_ok(send(client, issuer_server.mint()))


# == 1. alg none ================================================================================
NONE_SPELLINGS = ["none", "None", "NONE", "nOnE", "NoNe", "nONE", "noNE"]


@pytest.mark.parametrize("alg", NONE_SPELLINGS)
@pytest.mark.parametrize("signature", ["empty", "junk", "real-rs256", "real-rs256-no-kid"])
def test_alg_none_in_every_casing(client: TestClient, issuer_server: KeySetServer,
                                  rs: SigningKey, alg: str, signature: str) -> None:
    header = header_of(rs, alg=alg, kid=DROP if signature.endswith("no-kid") else rs.kid)
    payload = b64url_encode(dumps(claims_of(issuer_server)))
    signing_input = f"{b64url_encode(dumps(header))}.{payload}"
    sig = {"empty": b"", "junk": b"\x00" * 32}.get(signature)
    if sig is None:
        sig = rs.signature(signing_input.encode())
    response = send(client, signing_input + "." + b64url_encode(sig))
    assert_invalid_token(response, D_EMPTY if signature == "empty" else D_ALG)


@pytest.mark.parametrize("alg", ["rs256", "Rs256", "RS256 ", " RS256", "RS-256", "RSA256", "",
                                 None, 256, ["RS256"], {"alg": "RS256"}, True,
                                 "RS256\u0000", "ＲＳ256"])
def test_alg_must_be_an_exact_accepted_name(client: TestClient, issuer_server: KeySetServer,
                                            rs: SigningKey, alg: Any) -> None:
    """A real RS256 signature does not help an `alg` that is not exactly "RS256"."""
    forged = token(rs, header_of(rs, alg=alg), claims_of(issuer_server), alg="RS256")
    assert_invalid_token(send(client, forged), D_ALG)


def test_alg_missing(client: TestClient, issuer_server: KeySetServer, rs: SigningKey) -> None:
    forged = token(rs, header_of(rs, alg=DROP), claims_of(issuer_server), alg="RS256")
    assert_invalid_token(send(client, forged), D_ALG)


@pytest.mark.parametrize("algorithms", [["none"], ["HS256"], ["RS256", "HS512"], ["NONE"]])
def test_settings_refuse_none_and_hmac(issuer_server: KeySetServer, algorithms: list[str]) -> None:
    with pytest.raises(ConfigurationError):
        GuardSettings(issuer=issuer_server.url, audience=AUDIENCE, algorithms=algorithms)


# == 2. key confusion: HMAC keyed with the issuer's public key ==================================
def public_key_forms(key: SigningKey) -> dict[str, bytes]:
    public = key.private_key.public_key()
    forms = {
        "pem": public.public_bytes(serialization.Encoding.PEM,
                                   serialization.PublicFormat.SubjectPublicKeyInfo),
        "der": public.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo),
        "openssh": public.public_bytes(serialization.Encoding.OpenSSH,
                                       serialization.PublicFormat.OpenSSH),
        "jwk-json": dumps(key.public_jwk()),
        "jwk-json-spaced": json.dumps(key.public_jwk()).encode(),
        "jwk-json-sorted": json.dumps(key.public_jwk(), sort_keys=True).encode(),
        "jwks-json": dumps({"keys": [key.public_jwk()]}),
    }
    forms["pem-no-newline"] = forms["pem"].rstrip(b"\n")
    if isinstance(public, rsa.RSAPublicKey):
        forms["pem-pkcs1"] = public.public_bytes(serialization.Encoding.PEM,
                                                 serialization.PublicFormat.PKCS1)
        forms["der-pkcs1"] = public.public_bytes(serialization.Encoding.DER,
                                                 serialization.PublicFormat.PKCS1)
        n = public.public_numbers().n
        forms["raw"] = n.to_bytes((n.bit_length() + 7) // 8, "big")
    elif isinstance(public, ec.EllipticCurvePublicKey):
        forms["raw"] = public.public_bytes(serialization.Encoding.X962,
                                           serialization.PublicFormat.UncompressedPoint)
        forms["raw-compressed"] = public.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)
    else:
        assert isinstance(public, ed25519.Ed25519PublicKey)
        forms["raw"] = public.public_bytes_raw()
    return forms


_FORMS = ["pem", "der", "openssh", "jwk-json", "jwk-json-spaced", "jwk-json-sorted", "jwks-json",
          "pem-no-newline", "raw"]
CONFUSION_CASES = (
    [("RS256", form) for form in [*_FORMS, "pem-pkcs1", "der-pkcs1"]]
    + [("PS256", form) for form in ["pem", "der", "jwk-json", "raw"]]
    + [("ES256", form) for form in [*_FORMS, "raw-compressed"]]
    + [("EdDSA", form) for form in _FORMS]
)


@pytest.mark.parametrize("hs", ["HS256", "HS384", "HS512"])
@pytest.mark.parametrize(("key_alg", "form"), CONFUSION_CASES)
def test_hmac_keyed_with_public_key_is_refused(client: TestClient, issuer_server: KeySetServer,
                                               keys: dict[str, SigningKey], hs: str,
                                               key_alg: str, form: str) -> None:
    key = keys[key_alg]
    secret = public_key_forms(key)[form]
    header = b64url_encode(dumps(header_of(key, alg=hs)))
    payload = b64url_encode(dumps(claims_of(issuer_server)))
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[hs]
    mac = hmac.new(secret, f"{header}.{payload}".encode(), digest).digest()
    assert_invalid_token(send(client, f"{header}.{payload}.{b64url_encode(mac)}"), D_ALG)


# == 3. algorithm pinning by the key's own alg ==================================================
@pytest.mark.parametrize(("signer", "alg", "kid"), [
    ("RS256", "PS256", "snk_rs256"),   # PS256 under an RS256-pinned RSA key
    ("RS256", "PS384", "snk_rs256"),
    ("RS256", "RS384", "snk_rs256"),
    ("RS256", "RS512", "snk_rs256"),
    ("PS256", "RS256", "snk_ps256"),   # RS256 under a PS256-pinned RSA key
    ("PS256", "PS512", "snk_ps256"),
    ("ES256", "ES256", "snk_rs256"),   # ES256 token naming an RSA key
    ("ES256", "ES256", "snk_eddsa"),
    ("EdDSA", "EdDSA", "snk_es256"),
    ("RS256", "RS256", "snk_ps256"),   # right algorithm family, the other RSA key's kid
])
def test_algorithm_pinned_to_the_key(client: TestClient, issuer_server: KeySetServer,
                                     keys: dict[str, SigningKey], signer: str, alg: str,
                                     kid: str) -> None:
    """The real private key signs, but with an algorithm the named key is not pinned to."""
    key = keys[signer]
    forged = token(key, header_of(key, alg=alg, kid=kid), claims_of(issuer_server),
                   alg=alg if alg[:2] in ("RS", "PS") else None)
    # The kid is known, so this is refused as a mismatch without spending the refetch cooldown.
    assert_invalid_token(send(client, forged), D_ALG_MISMATCH)


@pytest.mark.parametrize(("signer", "alg"), [("RS256", "PS256"), ("PS256", "RS256")])
def test_algorithm_pinning_without_kid(client: TestClient, issuer_server: KeySetServer,
                                       keys: dict[str, SigningKey], signer: str,
                                       alg: str) -> None:
    """Without kid, only the key pinned to `alg` may verify: the other RSA key's signature fails."""
    key = keys[signer]
    forged = token(key, header_of(key, alg=alg, kid=DROP), claims_of(issuer_server), alg=alg)
    assert_invalid_token(send(client, forged), D_SIG)


# == 4. embedded keys: jwk / jku / x5u / x5c ====================================================
def self_signed_certificate(key: SigningKey) -> bytes:
    private = key.private_key
    assert isinstance(private, rsa.RSAPrivateKey)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "snk_rs256")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(private.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .sign(private, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.DER)


def embedded_members(kind: str, attacker: KeySetServer, attacker_key: SigningKey) -> dict[str, Any]:
    cert = self_signed_certificate(attacker_key)
    jwk = attacker_key.public_jwk()
    members: dict[str, dict[str, Any]] = {
        "jwk": {"jwk": jwk},
        "jku": {"jku": attacker.jwks_url},
        "x5u": {"x5u": attacker.url + "/cert.pem"},
        "x5c": {"x5c": [base64.b64encode(cert).decode()]},
        "x5t": {"x5c": [base64.b64encode(cert).decode()],
                "x5t#S256": b64url_encode(hashlib.sha256(cert).digest())},
        "all": {"jwk": jwk, "jku": attacker.jwks_url, "x5u": attacker.url + "/cert.pem",
                "x5c": [base64.b64encode(cert).decode()]},
    }
    return members[kind]


@pytest.mark.parametrize("kind", ["jwk", "jku", "x5u", "x5c", "x5t", "all"])
@pytest.mark.parametrize(("kid", "expected"), [
    ("attacker-key", D_UNKNOWN_KID),   # the embedded key's own kid: not in the issuer's set
    ("snk_rs256", D_SIG),              # the issuer's kid: the issuer's key does not verify it
    (DROP, D_SIG),                     # no kid: the issuer's single RS256 key does not verify it
])
def test_embedded_keys_are_never_used(client: TestClient, issuer_server: KeySetServer,
                                      attacker: KeySetServer, attacker_key: SigningKey,
                                      kind: str, kid: Any, expected: str) -> None:
    before = sum(attacker.requests.values())
    header = header_of(attacker_key, kid=kid, **embedded_members(kind, attacker, attacker_key))
    forged = token(attacker_key, header, claims_of(issuer_server,
                                                   scopes=["read:deployments", "admin:platform"]))
    assert_invalid_token(send(client, forged), expected)
    assert_invalid_token(send(client, forged, path="/admin"), expected)
    assert sum(attacker.requests.values()) == before == 0  # never fetched from the attacker


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


_URLSAFE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


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
    index = _URLSAFE.index(segment[-1])
    assert index & 1 == 0
    return segment[:-1] + _URLSAFE[index | 1]


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


# == 9. NumericDates ============================================================================
def payload_with_raw(server: KeySetServer, claim: str, raw: bytes) -> bytes:
    """Claims JSON with `claim` set to the literal JSON text `raw` (NaN, 1e400, ...)."""
    claims = claims_of(server, **{claim: "__RAW__"})
    return dumps(claims).replace(b'"__RAW__"', raw)


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
    _SENT.append(good)
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


# == 13. signature tampering ===================================================================
def replace_char(segment: str, index: int) -> str:
    old = segment[index]
    new = "B" if old == "A" else "A"
    return segment[:index] + new + segment[index + 1:]


@pytest.mark.parametrize("alg", ["RS256", "PS256", "ES256", "EdDSA"])
@pytest.mark.parametrize("position", [0, 1, 7, "middle", -2])
@pytest.mark.parametrize("segment", [0, 1, 2])
def test_flip_one_character(client: TestClient, issuer_server: KeySetServer,
                            keys: dict[str, SigningKey], alg: str, position: Any,
                            segment: int) -> None:
    """Any single changed character in any segment is a 401 (the reason varies with where)."""
    good = issuer_server.mint(keys[alg])
    parts = split(good)
    index = len(parts[segment]) // 2 if position == "middle" else position
    parts[segment] = replace_char(parts[segment], index % len(parts[segment]))
    description = assert_invalid_token(send(client, ".".join(parts)))
    if segment == 2 and position in ("middle", 1, 7, 0):
        assert description == D_SIG


@pytest.mark.parametrize("alg", ["RS256", "PS256", "ES256", "EdDSA"])
@pytest.mark.parametrize("change", ["scopes", "exp", "sub", "header-typ", "header-whitespace"])
def test_re_encoded_parts_without_re_signing(client: TestClient, issuer_server: KeySetServer,
                                             keys: dict[str, SigningKey], alg: str,
                                             change: str) -> None:
    key = keys[alg]
    good = token(key, header_of(key), claims_of(issuer_server))
    h, p, s = split(good)
    claims = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
    if change == "scopes":
        p = b64url_encode(dumps({**claims, "scopes": [*claims["scopes"], "admin:platform"]}))
    elif change == "exp":
        p = b64url_encode(dumps({**claims, "exp": claims["exp"] + 86400}))
    elif change == "sub":
        p = b64url_encode(dumps({**claims, "sub": "m2morg_other", "client_id": "m2morg_other"}))
    elif change == "header-typ":
        h = b64url_encode(dumps(header_of(key, typ="at+jwt")))
    else:
        h = b64url_encode(json.dumps(header_of(key)).encode())  # spaces after ':' and ','
    assert_ok(send(client, good))
    assert_invalid_token(send(client, f"{h}.{p}.{s}"), D_SIG)


@pytest.mark.parametrize("alg", ["RS256", "PS256", "ES256", "EdDSA"])
@pytest.mark.parametrize("cut", ["half", "one-byte-short", "one-byte-long", "leading-zero",
                                 "empty", "doubled", "zeros", "ones"])
def test_wrong_signature_bytes(client: TestClient, issuer_server: KeySetServer,
                               keys: dict[str, SigningKey], alg: str, cut: str) -> None:
    good = issuer_server.mint(keys[alg])
    h, p, s = split(good)
    raw = base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
    new = {"half": raw[: len(raw) // 2], "one-byte-short": raw[:-1],
           "one-byte-long": raw + b"\x00", "leading-zero": b"\x00" + raw, "empty": b"",
           "doubled": raw + raw, "zeros": b"\x00" * len(raw),
           "ones": b"\xff" * len(raw)}[cut]
    forged = f"{h}.{p}.{b64url_encode(new)}"
    assert_invalid_token(send(client, forged), D_EMPTY if cut == "empty" else D_SIG)


@pytest.mark.parametrize("alg", ["RS256", "PS256", "ES256", "EdDSA"])
def test_signature_from_another_key_with_the_same_kid(client: TestClient,
                                                      issuer_server: KeySetServer,
                                                      impostors: dict[str, SigningKey],
                                                      alg: str) -> None:
    impostor = impostors[alg]
    assert impostor.kid == f"snk_{alg.lower()}"
    assert_invalid_token(send(client, issuer_server.mint(impostor)), D_SIG)


P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


@pytest.mark.parametrize("shape", ["r=s=0", "r=0", "s=0", "r=s=n", "s=n", "r=s=1", "der",
                                   "der-zero", "63-bytes", "65-bytes", "r||s-swapped"])
def test_ecdsa_signature_shapes(client: TestClient, issuer_server: KeySetServer,
                                keys: dict[str, SigningKey], shape: str) -> None:
    """ES256 signatures are exactly r || s (32 bytes each); psychic and DER forms are refused."""
    key = keys["ES256"]
    good = issuer_server.mint(key)
    h, p, s = split(good)
    raw = base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
    r_bytes, s_bytes = raw[:32], raw[32:]

    def rs_(r: int, s_: int) -> bytes:
        return r.to_bytes(32, "big") + s_.to_bytes(32, "big")

    private = key.private_key
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    new = {
        "r=s=0": b"\x00" * 64,
        "r=0": b"\x00" * 32 + s_bytes,
        "s=0": r_bytes + b"\x00" * 32,
        "r=s=n": rs_(P256_ORDER, P256_ORDER),
        "s=n": r_bytes + P256_ORDER.to_bytes(32, "big"),
        "r=s=1": rs_(1, 1),
        "der": private.sign(f"{h}.{p}".encode(), ec.ECDSA(hashes.SHA256())),
        "der-zero": encode_dss_signature(0, 0),
        "63-bytes": raw[1:] if raw[0] == 0 else raw[:-1],
        "65-bytes": b"\x00" + raw,
        "r||s-swapped": s_bytes + r_bytes,
    }[shape]
    assert_ok(send(client, good))
    assert_invalid_token(send(client, f"{h}.{p}.{b64url_encode(new)}"), D_SIG)


# == catch-all: random single mutations of a valid token ========================================
def test_random_mutations_never_pass_and_never_crash(client: TestClient,
                                                     issuer_server: KeySetServer,
                                                     keys: dict[str, SigningKey]) -> None:
    rng = random.Random(20240607)
    alphabet = _URLSAFE + ".+/=~"
    statuses: set[int] = set()
    for alg in ("RS256", "ES256", "EdDSA"):
        good = issuer_server.mint(keys[alg])
        for _ in range(60):
            index = rng.randrange(len(good))
            op = rng.choice(["replace", "delete", "insert", "swap"])
            if op == "replace":
                char = rng.choice([c for c in alphabet if c != good[index]])
                mutated = good[:index] + char + good[index + 1:]
            elif op == "delete":
                mutated = good[:index] + good[index + 1:]
            elif op == "insert":
                mutated = good[:index] + rng.choice(alphabet) + good[index:]
            else:
                j = rng.randrange(len(good))
                chars = list(good)
                chars[index], chars[j] = chars[j], chars[index]
                mutated = "".join(chars)
                if mutated == good:
                    continue
            response = send(client, mutated)
            statuses.add(response.status_code)
            if response.status_code == 400:
                assert_invalid_request(response, R_ILLEGAL)
            else:
                assert_invalid_token(response)
    assert statuses <= {400, 401}


# == logs never carry raw tokens ================================================================
def test_refusals_are_logged_without_raw_tokens(client: TestClient, issuer_server: KeySetServer,
                                                rs: SigningKey, impostors: dict[str, SigningKey],
                                                caplog: pytest.LogCaptureFixture) -> None:
    """Refusals are logged with a fingerprint and the reason, never with the token itself."""
    caplog.set_level(logging.DEBUG, logger="m2m_guard")
    attacks = [
        token(rs, header_of(rs, alg="none"), claims_of(issuer_server)),
        issuer_server.mint(impostors["RS256"]),
        token(rs, header_of(rs, kid="../../dev/null"), claims_of(issuer_server)),
        token(rs, header_of(rs), claims_of(issuer_server, aud="Deployment-API")),
        token(rs, header_of(rs), payload_with_raw(issuer_server, "exp", b"null")),
        token(rs, header_of(rs, kid="snk\r\nforged log line"), claims_of(issuer_server)),
    ]
    for forged in attacks:
        assert_invalid_token(send(client, forged))
    messages = [record.getMessage() for record in caplog.records]
    for forged in attacks:
        fingerprint = hashlib.sha256(forged.encode()).hexdigest()[:16]
        assert any(f"fingerprint={fingerprint}" in message for message in messages), messages
        for message in messages:
            assert forged not in message
            assert split(forged)[1] not in message and split(forged)[2] not in message
    assert not any("\r" in message or "\n" in message for message in messages), messages
    assert not any(record.levelno >= logging.ERROR for record in caplog.records)
