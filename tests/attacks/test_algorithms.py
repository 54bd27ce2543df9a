"""Algorithm attacks: `none`, HMAC keyed with the public key, the algorithm pinned by the
key's own `alg`, keys embedded in the header (jwk, jku, x5u, x5c).

See tests/attacks/kit.py for how attacks are sent and checked."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from starlette.testclient import TestClient

from m2m_guard import ConfigurationError, GuardSettings
from m2m_guard._core.encoding import b64url_encode
from m2m_guard.local_issuer import KeySetServer, SigningKey

from ..conftest import AUDIENCE
from .kit import (
    D_ALG,
    D_ALG_MISMATCH,
    D_EMPTY,
    D_SIG,
    D_UNKNOWN_KID,
    DROP,
    assert_invalid_token,
    assert_ok,
    claims_of,
    dumps,
    header_of,
    send,
    token,
)


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
