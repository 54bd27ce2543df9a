"""Edges of claim and key checking not reached through the attack table: NumericDate range,
the configured algorithm list, tokens without kid, string-typed claims, unusual key types."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ed448, rsa

from m2m_guard import GuardSettings, InvalidToken, TokenVerifier
from m2m_guard._core.encoding import b64url_encode
from m2m_guard._core.jws import verify_compact
from m2m_guard._core.keys import KeyRejected, load_jwk
from m2m_guard.local_issuer import KeySetServer, SigningKey


@pytest.fixture(scope="module")
def keys() -> dict[str, SigningKey]:
    return {"es": SigningKey.generate("ES256", kid="snk_es"),
            "ed": SigningKey.generate("EdDSA", kid="snk_ed")}


def refused(verifier: TokenVerifier, token: object) -> InvalidToken:
    with pytest.raises(InvalidToken) as caught:
        verifier.verify_sync(token)  # type: ignore[arg-type]
    return caught.value


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("value", [1e308, 253402300800, -1])
def test_numeric_dates_out_of_range_are_refused(keys: dict[str, SigningKey], claim: str,
                                                value: float) -> None:
    with KeySetServer([keys["es"]]) as issuer:
        verifier = TokenVerifier(GuardSettings(issuer=issuer.url, audience="deployment-api"))
        error = refused(verifier, issuer.mint(**{claim: value}))
        assert error.reason == f"invalid_{claim}"
        assert error.description == f"The {claim} claim is out of range."


def test_largest_numeric_date_is_accepted(keys: dict[str, SigningKey]) -> None:
    with KeySetServer([keys["es"]]) as issuer:
        verifier = TokenVerifier(GuardSettings(issuer=issuer.url, audience="deployment-api"))
        token = verifier.verify_sync(issuer.mint(exp=253402300799))
        assert token.expires_at.year == 9999


def test_algorithms_setting_narrows_what_is_accepted(keys: dict[str, SigningKey]) -> None:
    with KeySetServer([keys["es"], keys["ed"]]) as issuer:
        verifier = TokenVerifier(GuardSettings(issuer=issuer.url, audience="deployment-api",
                                               algorithms=["EdDSA"]))
        assert verifier.verify_sync(issuer.mint(keys["ed"])).algorithm == "EdDSA"
        error = refused(verifier, issuer.mint(keys["es"]))
        assert error.reason == "algorithm_refused"


def test_token_without_kid(keys: dict[str, SigningKey]) -> None:
    with KeySetServer([keys["es"]]) as one, KeySetServer([keys["es"], keys["ed"]]) as two, \
            KeySetServer([SigningKey.generate("ES256", kid="a"),
                          SigningKey.generate("ES256", kid="b")]) as same_alg:
        # One key fits the algorithm: used.
        verifier = TokenVerifier(GuardSettings(issuer=[one.url, two.url, same_alg.url],
                                               audience="deployment-api"))
        assert verifier.verify_sync(one.mint(headers={"kid": None})).key_id is None
        assert verifier.verify_sync(two.mint(keys["ed"], headers={"kid": None})).algorithm == \
            "EdDSA"
        # Several keys fit: ambiguous, never tried one by one.
        error = refused(verifier, same_alg.mint(headers={"kid": None}))
        assert error.reason == "ambiguous_key"
        # No key fits the algorithm: refused without a kid to look for.
        error = refused(verifier, one.mint(keys["ed"], headers={"kid": None}))
        assert error.reason == "unknown_kid"
        assert error.description == \
            "The token has no kid and no single key of its issuer fits it."


@pytest.mark.parametrize("claim", ["sub", "jti", "client_id", "azp", "oid"])
def test_string_claims_must_be_strings(keys: dict[str, SigningKey], claim: str) -> None:
    with KeySetServer([keys["es"]]) as issuer:
        verifier = TokenVerifier(GuardSettings(issuer=issuer.url, audience="deployment-api"))
        error = refused(verifier, issuer.mint(**{claim: 12345}))
        assert error.reason == f"invalid_{claim}"


@pytest.mark.parametrize("token", [None, 42, b"a.b.c"])
def test_non_string_tokens_are_refused(keys: dict[str, SigningKey], token: object) -> None:
    with KeySetServer([keys["es"]]) as issuer:
        verifier = TokenVerifier(GuardSettings(issuer=issuer.url, audience="deployment-api"))
        assert refused(verifier, token).reason == "malformed"
        assert issuer.requests["/keys"] == 0


def test_ed448_keys_verify() -> None:
    private = ed448.Ed448PrivateKey.generate()
    jwk = {"kty": "OKP", "crv": "Ed448", "kid": "ed448",
           "x": b64url_encode(private.public_key().public_bytes_raw())}
    header = b64url_encode(b'{"alg":"EdDSA","kid":"ed448"}')
    payload = b64url_encode(b'{"hello":"world"}')
    signature = b64url_encode(private.sign(f"{header}.{payload}".encode()))
    assert verify_compact(f"{header}.{payload}.{signature}", jwk) == b'{"hello":"world"}'


@pytest.mark.parametrize(("jwk", "reason"), [
    ({"kty": "OKP", "crv": "X25519", "x": b64url_encode(bytes(32))}, "unsupported OKP curve"),
    ({"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(bytes(31))}, "invalid Ed25519"),
    ({"kty": "EC", "crv": "secp256k1", "x": "AA", "y": "AA"}, "unsupported curve"),
    ({"kty": "RSA", "n": "", "e": "AQAB"}, "member 'n' is missing"),
])
def test_unusual_keys_are_rejected(jwk: dict[str, str], reason: str) -> None:
    with pytest.raises(KeyRejected, match=reason):
        load_jwk(jwk)


def test_rsa_keys_over_8192_bits_are_rejected() -> None:
    # A fake 8200-bit modulus: the size check comes before any arithmetic.
    modulus = (1 << 8199) | 1
    jwk = {"kty": "RSA", "n": b64url_encode(modulus.to_bytes(1025, "big")), "e": "AQAB"}
    with pytest.raises(KeyRejected, match="at most 8192"):
        load_jwk(jwk)
    real = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    numbers = real.public_numbers()
    ok = {"kty": "RSA", "n": b64url_encode(numbers.n.to_bytes(256, "big")), "e": "AQAB"}
    assert load_jwk(ok).size == 2048


@pytest.mark.parametrize("opener, closer", [(b"[", b"]"), (b'{"a":', b"}")])
def test_json_nesting_limit_is_the_same_on_every_python(opener: bytes, closer: bytes) -> None:
    """A fixed depth (MAX_JSON_DEPTH), not the interpreter's recursion limit, decides: 3.11
    refused ~1,000 levels by RecursionError while 3.13 parses 8,000."""
    from m2m_guard._core.encoding import MAX_JSON_DEPTH, loads_json

    def nested(levels: int) -> bytes:
        inner = b"1" if opener != b"[" else b""
        return opener * levels + inner + closer * levels

    assert loads_json(nested(MAX_JSON_DEPTH)) is not None
    for levels in (MAX_JSON_DEPTH + 1, 900, 5000):
        with pytest.raises(ValueError, match="nested"):
            loads_json(nested(levels))
    # Brackets inside strings are not nesting.
    assert loads_json(b'{"a": "' + b"{[" * 100 + b'"}') == {"a": "{[" * 100}
