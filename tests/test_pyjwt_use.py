"""Where PyJWT does the work, and where our rules stay on top of it.

- Keys: PyJWT builds the public key of every JWK (`jwt.algorithms.*.from_jwk`); the JWK's
  members are judged before PyJWT sees them, and size, exponent and curve are checked on the key
  object PyJWT returned, so a key PyJWT happily builds is still refused.
- Minting: the local issuer and the pytest plugin sign with `jwt.encode`; only the deliberately
  broken tokens of the attack tests are built byte by byte.
"""

from __future__ import annotations

import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from m2m_guard._core.encoding import b64url_decode, b64url_encode
from m2m_guard._core.keys import KeyRejected, load_jwk
from m2m_guard.local_issuer import SigningKey, signing


def _uint(value: int) -> str:
    return b64url_encode(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def _rsa_jwk(key: rsa.RSAPublicKey, **extra: Any) -> dict[str, Any]:
    numbers = key.public_numbers()
    return {"kty": "RSA", "n": _uint(numbers.n), "e": _uint(numbers.e), **extra}


def _ec_jwk(key: ec.EllipticCurvePublicKey, crv: str, size: int) -> dict[str, Any]:
    numbers = key.public_numbers()
    return {"kty": "EC", "crv": crv, "x": b64url_encode(numbers.x.to_bytes(size, "big")),
            "y": b64url_encode(numbers.y.to_bytes(size, "big"))}


@pytest.fixture(scope="module")
def rsa2048() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def rsa1024() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=1024)


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
def test_pyjwt_builds_the_key_from_the_public_members_only(
        monkeypatch: pytest.MonkeyPatch, alg: str) -> None:
    jwk = SigningKey.generate(alg, kid="k1").public_jwk()
    algorithm = {"RS256": RSAAlgorithm, "ES256": ECAlgorithm, "EdDSA": OKPAlgorithm}[alg]
    original = algorithm.from_jwk
    seen: list[dict[str, Any]] = []
    built: list[Any] = []

    def spy(value: Any) -> Any:
        seen.append(dict(value))
        built.append(original(value))
        return built[-1]

    monkeypatch.setattr(algorithm, "from_jwk", staticmethod(spy))
    key = load_jwk(jwk)
    assert len(seen) == 1 and key.public_key is built[0]
    assert set(seen[0]) <= {"kty", "crv", "n", "e", "x", "y"}  # never kid, use, alg or d
    assert key.kid == "k1"


def _swap(monkeypatch: pytest.MonkeyPatch, algorithm: Any, returned: Any) -> None:
    monkeypatch.setattr(algorithm, "from_jwk", staticmethod(lambda value: returned))


def test_rsa_rules_apply_to_the_key_pyjwt_built(monkeypatch: pytest.MonkeyPatch,
                                                rsa2048: rsa.RSAPrivateKey,
                                                rsa1024: rsa.RSAPrivateKey) -> None:
    good = _rsa_jwk(rsa2048.public_key())
    assert load_jwk(good).size == 2048
    # The JWK says 2048 bits; what counts is the key PyJWT returned.
    for returned, reason in [
        (rsa1024.public_key(), "RSA key of 1024 bits; at least 2048 are required"),
        (rsa.RSAPublicNumbers((1 << 64) + 1, rsa2048.public_key().public_numbers().n)
         .public_key(), "RSA public exponent is invalid"),
        (rsa2048, "the RSA key is not a public key"),
        (ec.generate_private_key(ec.SECP256R1()).public_key(), "the RSA key is not a public key"),
    ]:
        _swap(monkeypatch, RSAAlgorithm, returned)
        with pytest.raises(KeyRejected, match=reason):
            load_jwk(good)


def test_curve_rules_apply_to_the_key_pyjwt_built(monkeypatch: pytest.MonkeyPatch) -> None:
    p256 = ec.generate_private_key(ec.SECP256R1())
    good = _ec_jwk(p256.public_key(), "P-256", 32)
    assert load_jwk(good).algorithms == {"ES256"}
    for returned in (ec.generate_private_key(ec.SECP384R1()).public_key(), p256,
                     ec.generate_private_key(ec.SECP256K1()).public_key()):
        _swap(monkeypatch, ECAlgorithm, returned)
        with pytest.raises(KeyRejected, match="not a public key on curve P-256"):
            load_jwk(good)
    ed = ed25519.Ed25519PrivateKey.generate()
    okp = {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(ed.public_key().public_bytes_raw())}
    assert load_jwk(okp).algorithms == {"EdDSA"}
    for other in (ed448.Ed448PrivateKey.generate().public_key(), ed):
        _swap(monkeypatch, OKPAlgorithm, other)
        with pytest.raises(KeyRejected, match="not a public Ed25519 key"):
            load_jwk(okp)


def test_keys_pyjwt_accepts_are_still_refused(rsa2048: rsa.RSAPrivateKey,
                                              rsa1024: rsa.RSAPrivateKey) -> None:
    """Each JWK below is one PyJWT turns into a key without complaint; our rules refuse it."""
    n = rsa2048.public_key().public_numbers().n
    k1 = ec.generate_private_key(ec.SECP256K1())
    p256 = ec.generate_private_key(ec.SECP256R1())
    padded = {**_ec_jwk(p256.public_key(), "P-256", 32)}
    padded["x"] += "="  # PyJWT's decoder takes padding; canonical base64url has none
    private = _rsa_jwk(rsa2048.public_key(), d=_uint(rsa2048.private_numbers().d))
    cases: list[tuple[Any, dict[str, Any], str]] = [
        (RSAAlgorithm, _rsa_jwk(rsa1024.public_key()), "RSA key of 1024 bits"),
        (RSAAlgorithm, {"kty": "RSA", "n": _uint(n), "e": _uint((1 << 64) + 1)},
         "RSA public exponent is invalid"),
        (RSAAlgorithm, private, r"private members \(d\)"),
        (RSAAlgorithm, _rsa_jwk(rsa2048.public_key(), use="enc"), "use is 'enc'"),
        (RSAAlgorithm, _rsa_jwk(rsa2048.public_key(), alg="ES256"), "does not fit a RSA key"),
        (ECAlgorithm, _ec_jwk(k1.public_key(), "secp256k1", 32), "unsupported curve"),
        (ECAlgorithm, padded, "not canonical base64url"),
    ]
    for algorithm, jwk, reason in cases:
        assert algorithm.from_jwk(dict(jwk)) is not None  # PyJWT alone would use it
        with pytest.raises(KeyRejected, match=reason):
            load_jwk(jwk)


@pytest.mark.parametrize("alg", ["RS256", "PS256", "ES256", "ES384", "EdDSA"])
def test_tokens_are_minted_with_jwt_encode(monkeypatch: pytest.MonkeyPatch, alg: str) -> None:
    calls: list[dict[str, Any]] = []
    original = jwt.encode

    def spy(payload: dict[str, Any], key: Any, **kwargs: Any) -> str:
        calls.append(kwargs)
        return original(payload, key, **kwargs)

    monkeypatch.setattr(signing.jwt, "encode", spy)
    key = SigningKey.generate(alg, kid="snk_1")
    token = key.sign({"iss": "https://issuer.example", "sub": "m2morg_1", "exp": 2**31})
    assert len(calls) == 1 and calls[0]["algorithm"] == alg
    assert b64url_decode(token.split(".")[0]) == (
        b'{"alg":"' + alg.encode() + b'","kid":"snk_1","typ":"JWT"}')  # Scalekit's order
    public = key.private_key.public_key()
    assert jwt.decode(token, public, algorithms=[alg])["sub"] == "m2morg_1"  # type: ignore[arg-type]


def test_broken_test_tokens_are_built_byte_by_byte(monkeypatch: pytest.MonkeyPatch) -> None:
    """PyJWT refuses a non-string kid or iss and rewrites b64 and an alg the key cannot sign
    with; the attack tests need exactly those tokens, so `sign` builds them itself."""
    calls: list[Any] = []
    monkeypatch.setattr(signing.jwt, "encode", lambda *a, **k: calls.append(a) or "")
    key = SigningKey.generate("ES256", kid="snk_1")
    for headers, claims in [({"kid": 7}, {}), ({"alg": "none"}, {}), ({"b64": False}, {}),
                            ({"alg": "HS256"}, {}), ({}, {"iss": ["a", "b"]})]:
        token = key.sign(claims, headers=headers)
        header = json.loads(b64url_decode(token.split(".")[0]))
        assert header == {"alg": "ES256", "kid": "snk_1", "typ": "JWT", **headers}
        assert json.loads(b64url_decode(token.split(".")[1])) == claims
    assert calls == []
    # typ=None leaves typ out, as PyJWT does when told so
    assert b'"typ"' not in b64url_decode(SigningKey.generate("RS256").sign({}, typ=None)
                                         .split(".")[0])
