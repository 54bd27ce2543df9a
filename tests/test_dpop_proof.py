"""The DPoP proof checker (RFC 9449 §4.3) on its own: each rule, with the exact reason and
description, and the client helper `DPoPKey` that makes the proofs."""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path

import pytest

from m2m_guard._core.encoding import b64url_encode
from m2m_guard._core.keys import jwk_thumbprint
from m2m_guard.dpop import DPoPKey, ProofChecker, normalize_htu
from m2m_guard.errors import InvalidDPoPProof, UseDPoPNonce
from m2m_guard.local_issuer import SigningKey

URL = "https://api.example.com/deployments"
TOKEN = "header.payload.signature"


@pytest.fixture(scope="module")
def key() -> DPoPKey:
    return DPoPKey.generate()


@pytest.fixture
def checker() -> ProofChecker:
    return ProofChecker()


def refused(checker: ProofChecker, values: list[str], *, method: str = "GET", url: str = URL,
            now: float | None = None, access_token: str | None = TOKEN) -> InvalidDPoPProof:
    with pytest.raises(InvalidDPoPProof) as caught:
        checker.check(values, method=method, url=url, now=time.time() if now is None else now,
                      access_token=access_token)
    error = caught.value
    assert error.status_code == 401 and error.error_code == "invalid_dpop_proof"
    for value in values:  # the description never repeats the proof
        for part in value.split("."):
            assert len(part) < 8 or part not in error.description
    return error


def test_a_good_proof_gives_its_thumbprint_and_jti(key: DPoPKey, checker: ProofChecker) -> None:
    proof = key.proof("GET", URL, access_token=TOKEN, jti="j-1")
    result = checker.check([proof], method="GET", url=URL, now=time.time(), access_token=TOKEN)
    assert (result.jkt, result.jti) == (key.thumbprint, "j-1")
    # the same header again is answered from the caches, with the same outcome
    again = checker.check([key.proof("GET", URL, access_token=TOKEN)], method="GET", url=URL,
                          now=time.time(), access_token=TOKEN)
    assert again.jkt == key.thumbprint


@pytest.mark.parametrize("alg", ["ES256", "ES384", "ES512", "EdDSA", "RS256", "PS256"])
def test_every_asymmetric_algorithm(alg: str, checker: ProofChecker) -> None:
    key = DPoPKey.generate(alg)
    result = checker.check([key.proof("POST", URL, access_token=TOKEN)], method="POST", url=URL,
                           now=time.time(), access_token=TOKEN)
    assert result.jkt == key.thumbprint


def test_rfc7638_thumbprint_example() -> None:
    # RFC 7638 §3.1
    jwk = {"kty": "RSA", "e": "AQAB", "alg": "RS256", "kid": "2011-04-29", "n": (
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_"
        "BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0"
        "_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWh"
        "AI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw")}
    assert jwk_thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_the_token_endpoint_checks_no_ath(key: DPoPKey, checker: ProofChecker) -> None:
    result = checker.check([key.proof("POST", URL)], method="POST", url=URL, now=time.time())
    assert result.jkt == key.thumbprint


@pytest.mark.parametrize(("values", "reason", "description"), [
    ([], "dpop_proof_missing", "The request has no DPoP header."),
    (["a.b.c", "a.b.c"], "dpop_multiple_proofs", "The request has more than one DPoP header."),
    (["a.b.c, a.b.c"], "dpop_multiple_proofs", "The request has more than one DPoP header."),
    (["x" * 9000], "dpop_proof_too_large", "The DPoP proof is larger than 8192 bytes."),
    (["not-a-jws"], "dpop_malformed",
     "The DPoP proof is not a compact JWS (three canonical base64url segments)."),
])
def test_framing(values: list[str], reason: str, description: str,
                 checker: ProofChecker) -> None:
    error = refused(checker, values)
    assert (error.reason, error.description) == (reason, description)


def test_typ_must_be_dpop_jwt(key: DPoPKey, checker: ProofChecker) -> None:
    for typ in ("JWT", "at+jwt", None):
        error = refused(checker, [key.proof("GET", URL, access_token=TOKEN,
                                            headers={"typ": typ})])
        assert (error.reason, error.description) == (
            "dpop_type_refused", "The DPoP proof's typ is not dpop+jwt.")


def _unsigned(header: dict[str, object], claims: dict[str, object], signature: bytes) -> str:
    return ".".join((b64url_encode(json.dumps(header).encode()),
                     b64url_encode(json.dumps(claims).encode()), b64url_encode(signature)))


def test_none_and_hs256_are_refused(key: DPoPKey, checker: ProofChecker) -> None:
    claims = {"jti": "x", "htm": "GET", "htu": URL, "iat": int(time.time())}
    for alg in ("none", "HS256"):
        proof = _unsigned({"typ": "dpop+jwt", "alg": alg, "jwk": key.public_jwk}, claims,
                          b"\x00" * 32)
        error = refused(checker, [proof])
        assert error.reason == "dpop_algorithm_refused"


def test_alg_outside_the_allowed_list(key: DPoPKey) -> None:
    only_eddsa = ProofChecker(algorithms=["EdDSA"])
    error = refused(only_eddsa, [key.proof("GET", URL, access_token=TOKEN)])
    assert (error.reason, error.description) == (
        "dpop_algorithm_refused", "The DPoP proof's alg is not one this server accepts.")


def test_jwk_missing_private_or_symmetric(key: DPoPKey, checker: ProofChecker) -> None:
    no_jwk = key.proof("GET", URL, access_token=TOKEN, headers={"jwk": None})
    assert refused(checker, [no_jwk]).reason == "dpop_key_refused"
    signing = SigningKey.generate("ES256")
    private = dict(signing.public_jwk(), d="AAAA")
    error = refused(checker, [DPoPKey(signing).proof("GET", URL, access_token=TOKEN,
                                                     headers={"jwk": private})])
    assert (error.reason, error.description) == (
        "dpop_private_key",
        "The DPoP proof's jwk holds private key members (d): send the public key only.")
    oct_key = {"kty": "oct", "k": "c2VjcmV0"}
    error = refused(checker, [key.proof("GET", URL, access_token=TOKEN,
                                        headers={"jwk": oct_key})])
    assert error.reason == "dpop_private_key"
    bad_curve = dict(key.public_jwk, crv="P-384")
    assert refused(checker, [key.proof("GET", URL, access_token=TOKEN,
                                       headers={"jwk": bad_curve})]).reason == "dpop_key_refused"


def test_signature_by_another_key(key: DPoPKey, checker: ProofChecker) -> None:
    other = DPoPKey.generate()
    proof = other.proof("GET", URL, access_token=TOKEN, headers={"jwk": key.public_jwk})
    error = refused(checker, [proof])
    assert (error.reason, error.description) == (
        "dpop_bad_signature", "The DPoP proof's signature does not verify with its jwk.")


def test_alg_that_does_not_fit_the_key(key: DPoPKey, checker: ProofChecker) -> None:
    rsa = DPoPKey.generate("RS256")
    proof = rsa.proof("GET", URL, access_token=TOKEN, headers={"jwk": key.public_jwk})
    assert refused(checker, [proof]).reason == "dpop_algorithm_refused"


@pytest.mark.parametrize("claims", [
    {"jti": None}, {"jti": 5}, {"jti": ""}, {"jti": "j" * 257}, {"htm": None}, {"htu": 3},
    {"iat": None}, {"iat": "1700000000"}, {"iat": True}, {"nonce": 4},
])
def test_claim_types(claims: dict[str, object], key: DPoPKey, checker: ProofChecker) -> None:
    proof = key.proof("GET", URL, access_token=TOKEN, claims=claims)  # None: left out
    assert refused(checker, [proof]).reason == "dpop_invalid_claims"


def test_method_and_url(key: DPoPKey, checker: ProofChecker) -> None:
    error = refused(checker, [key.proof("POST", URL, access_token=TOKEN)])
    assert (error.reason, error.description) == (
        "dpop_method_mismatch", "The DPoP proof's htm is not the request's method.")
    assert refused(checker, [key.proof("get", URL, access_token=TOKEN)]).reason == \
        "dpop_method_mismatch"
    for other in ("https://api.example.com/other", "http://api.example.com/deployments",
                  "https://evil.example.com/deployments", "https://api.example.com:8443/deployments",
                  "https://api.example.com/deployments/"):
        error = refused(checker, [key.proof("GET", other, access_token=TOKEN)])
        assert error.reason == "dpop_url_mismatch", other


@pytest.mark.parametrize("htu", [
    "HTTPS://API.Example.COM/deployments", "https://api.example.com:443/deployments",
    "https://api.example.com/./deployments", "https://api.example.com/x/../deployments",
    "https://api.example.com/%64eployments", "https://api.example.com/deployments?page=2",
    "https://api.example.com/deployments#top",
])
def test_equivalent_urls_are_accepted(htu: str, key: DPoPKey, checker: ProofChecker) -> None:
    # the helper strips the query and fragment; a proof may still carry them (RFC 9449 §4.3
    # says they are ignored)
    proof = key.proof("GET", URL, access_token=TOKEN, claims={"htu": htu})
    assert checker.check([proof], method="GET", url=URL, now=time.time(),
                         access_token=TOKEN).jkt == key.thumbprint


def test_normalize_htu() -> None:
    assert normalize_htu("https://A.example:443/a/%7euser/b/../c") == "https://a.example/a/~user/c"
    assert normalize_htu("http://a.example:80") == "http://a.example/"
    assert normalize_htu("http://a.example:8080/%2f") == "http://a.example:8080/%2F"
    assert normalize_htu("http://[::1]:80/x") == "http://[::1]/x"
    for bad in ("ftp://a.example/", "/relative", "https://user@a.example/", "https://a:99999/",
                "https:///x", "https://a.example/a b"):
        assert normalize_htu(bad) is None, bad


def test_iat_window(key: DPoPKey, checker: ProofChecker) -> None:
    now = time.time()
    for offset in (-59, 0, 59):
        checker.check([key.proof("GET", URL, access_token=TOKEN, iat=int(now) + offset)],
                      method="GET", url=URL, now=int(now), access_token=TOKEN)
    error = refused(checker, [key.proof("GET", URL, access_token=TOKEN, iat=int(now) - 61)],
                    now=int(now))
    assert (error.reason, error.description) == (
        "dpop_too_old",
        "The DPoP proof's iat is more than 60 s in the past: make a fresh proof per request.")
    error = refused(checker, [key.proof("GET", URL, access_token=TOKEN, iat=int(now) + 61)],
                    now=int(now))
    assert error.reason == "dpop_in_future"
    narrow = ProofChecker(iat_window=5)
    assert refused(narrow, [key.proof("GET", URL, access_token=TOKEN, iat=int(now) - 6)],
                   now=int(now)).reason == "dpop_too_old"


def test_ath(key: DPoPKey, checker: ProofChecker) -> None:
    error = refused(checker, [key.proof("GET", URL, access_token="another.token.here")])
    assert (error.reason, error.description) == (
        "dpop_ath_mismatch", "The DPoP proof's ath is not the hash of this access token.")
    error = refused(checker, [key.proof("GET", URL)])
    assert (error.reason, error.description) == (
        "dpop_ath_mismatch", "The DPoP proof has no ath (the hash of the access token).")


def test_server_nonce(key: DPoPKey, checker: ProofChecker) -> None:
    now = time.time()
    with pytest.raises(UseDPoPNonce) as caught:
        checker.check([key.proof("GET", URL, access_token=TOKEN)], method="GET", url=URL,
                      now=now, access_token=TOKEN, nonces=["n-new", "n-old"])
    assert caught.value.nonce == "n-new" and caught.value.error_code == "use_dpop_nonce"
    with pytest.raises(UseDPoPNonce):
        checker.check([key.proof("GET", URL, access_token=TOKEN, nonce="stale")], method="GET",
                      url=URL, now=now, access_token=TOKEN, nonces=["n-new", "n-old"])
    result = checker.check([key.proof("GET", URL, access_token=TOKEN, nonce="n-old")],
                           method="GET", url=URL, now=now, access_token=TOKEN,
                           nonces=["n-new", "n-old"])
    assert result.nonce == "n-old"


def test_key_files(tmp_path: Path, key: DPoPKey) -> None:
    path = tmp_path / "dpop.pem"
    key.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = DPoPKey.load(path)
    assert loaded.thumbprint == key.thumbprint and loaded.alg == "ES256"
    assert "BEGIN" not in repr(loaded)
    with pytest.raises(ValueError):
        DPoPKey.from_pem(b"not a key")


def test_checker_configuration_errors() -> None:
    with pytest.raises(ValueError):
        ProofChecker(algorithms=["HS256"])
    with pytest.raises(ValueError):
        ProofChecker(iat_window=0)


def test_the_key_cache_never_shares_an_entry_between_jwks(checker: ProofChecker) -> None:
    """Loaded keys are remembered by the proof's header segment (which holds the whole `jwk`):
    a key seen before never vouches for a proof signed by another key of the same shape and
    kid, and a second key never gets the first one's thumbprint."""
    first, second = DPoPKey.generate(), DPoPKey.generate()
    assert first.public_jwk.keys() == second.public_jwk.keys()
    for key in (first, second):
        result = checker.check([key.proof("GET", URL, access_token=TOKEN)], method="GET",
                               url=URL, now=time.time(), access_token=TOKEN)
        assert result.jkt == key.thumbprint
    forged = second.proof("GET", URL, access_token=TOKEN, headers={"jwk": first.public_jwk})
    assert refused(checker, [forged]).reason == "dpop_bad_signature"
    # the same jwk with its members in another order, or with a kid, is another header
    # segment: loaded on its own, with the same thumbprint (RFC 7638 hashes the key alone)
    reordered = dict(reversed(list(first.public_jwk.items())), kid="k-1")
    result = checker.check([first.proof("GET", URL, access_token=TOKEN,
                                        headers={"jwk": reordered})],
                           method="GET", url=URL, now=time.time(), access_token=TOKEN)
    assert result.jkt == first.thumbprint
    forged = second.proof("GET", URL, access_token=TOKEN, headers={"jwk": reordered})
    assert refused(checker, [forged]).reason == "dpop_bad_signature"


def test_the_caches_are_bounded_and_a_refused_key_is_not_kept() -> None:
    checker = ProofChecker(key_cache_size=2)
    keys = [DPoPKey.generate() for _ in range(5)]
    for round_ in range(2):
        for key in keys:
            token = f"{TOKEN}{round_}{key.thumbprint}"
            result = checker.check([key.proof("GET", URL, access_token=token)], method="GET",
                                   url=URL, now=time.time(), access_token=token)
            assert result.jkt == key.thumbprint
            assert len(checker._keys) <= 2 and len(checker._headers.entries) <= 2
            assert len(checker._ath) <= 2
    bad_curve = dict(keys[0].public_jwk, crv="P-384")
    for _ in range(2):  # refused again: a key that failed is not remembered
        proof = keys[0].proof("GET", URL, access_token=TOKEN, headers={"jwk": bad_curve})
        assert refused(checker, [proof]).reason == "dpop_key_refused"
