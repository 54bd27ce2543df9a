"""Attacks on DPoP (RFC 9449): each §4.3 rule and §11 threat, through the real middleware and
a real key-set server, with the exact status, error, description and challenge; never a 500.

Bound tokens are signed by the trusted issuer's key with ``cnf: {"jkt": <thumbprint>}``, as an
authorization server binding them at its token endpoint would."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from m2m_guard import GuardSettings
from m2m_guard._core.encoding import b64url_encode
from m2m_guard.dpop import DPoPKey
from m2m_guard.local_issuer import KeySetServer, SigningKey

from ..conftest import AUDIENCE, deployment_app
from .kit import SENT, assert_invalid_token, assert_missing_token, assert_ok, claims_of

URL = "http://testserver/deployments"
ALGS = "RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 ES512 EdDSA"


def _client(server: KeySetServer, **options: Any) -> TestClient:
    settings = GuardSettings(issuer=server.url, audience=AUDIENCE, http_timeout=2.0, **options)
    return TestClient(deployment_app(settings), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def allowed(issuer_server: KeySetServer) -> Iterator[TestClient]:
    with _client(issuer_server, dpop="allowed") as test_client:
        yield test_client


@pytest.fixture(scope="module")
def required(issuer_server: KeySetServer) -> Iterator[TestClient]:
    with _client(issuer_server, dpop="required") as test_client:
        yield test_client


@pytest.fixture(scope="module")
def dpop_key() -> DPoPKey:
    return DPoPKey.generate()


@pytest.fixture
def bound(rs: SigningKey, issuer_server: KeySetServer, dpop_key: DPoPKey) -> str:
    """A fresh token bound to `dpop_key` (a new jti each time: not yet in any cache)."""
    return rs.sign(claims_of(issuer_server, cnf={"jkt": dpop_key.thumbprint},
                             jti=f"tkn_{time.monotonic_ns()}"))


def call(client: TestClient, token: str, proofs: list[str] | None, *, method: str = "GET",
         path: str = "/deployments", scheme: str = "DPoP",
         extra: list[tuple[str, str]] | None = None) -> Any:
    headers = [("Authorization", f"{scheme} {token}")]
    headers += [("DPoP", proof) for proof in proofs or []]
    headers += extra or []
    SENT.extend(value for _, value in headers)
    SENT.append(token)
    response = client.request(method, path, headers=headers)
    assert response.status_code != 500, response.text
    return response


def assert_dpop_refused(response: Any, reason_description: str, *,
                        error: str = "invalid_dpop_proof", bearer: bool = True) -> None:
    """401 with `error` in the DPoP challenge (first) and the Bearer challenge beside it."""
    assert response.status_code == 401, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body == {"error": error, "error_description": reason_description}
    challenge = (f'DPoP realm="api", algs="{ALGS}", error="{error}", '
                 f'error_description="{reason_description}"')
    if bearer:
        challenge += ', Bearer realm="api"'
    assert response.headers.get_list("www-authenticate") == [challenge]


D_REPLAYED = "The DPoP proof was already used: make a fresh proof (a new jti) for every request."
D_URL = ("The DPoP proof's htu is not the request's URI (scheme, host, port and path; query and "
         "fragment ignored).")
D_METHOD = "The DPoP proof's htm is not the request's method."
D_OLD = "The DPoP proof's iat is more than 60 s in the past: make a fresh proof per request."
D_FUTURE = "The DPoP proof's iat is more than 60 s in the future: check the client's clock."
D_ATH = "The DPoP proof's ath is not the hash of this access token."
D_PRIVATE = "The DPoP proof's jwk holds private key members (d): send the public key only."
D_ALG = "The DPoP proof's alg is not an accepted asymmetric algorithm."
D_MISMATCH = ("The DPoP proof is signed by another key than the one the token is bound to "
              "(cnf.jkt).")
D_TWO = "The request has more than one DPoP header."
D_MISSING = "The request has no DPoP header."
D_SIGNATURE = "The DPoP proof's signature does not verify with its jwk."
D_TYP = "The DPoP proof's typ is not dpop+jwt."
D_AS_BEARER = ("The token is bound to a DPoP key (cnf.jkt): send it with Authorization: DPoP and "
               "a DPoP proof, not as Bearer.")
D_UNBOUND = ("The token is not bound to a DPoP key (no cnf.jkt): send it as Bearer, or get a "
             "DPoP-bound token.")
D_REQUIRED = ("This API accepts DPoP-bound tokens only: send Authorization: DPoP <token> with a "
              "DPoP proof.")


# -- the good case, and a replay (§11.1) ----------------------------------------------------------
def test_a_bound_token_with_its_proof_passes_once(allowed: TestClient, bound: str,
                                                  dpop_key: DPoPKey) -> None:
    proof = dpop_key.proof("GET", URL, access_token=bound)
    assert_ok(call(allowed, bound, [proof]))
    assert_dpop_refused(call(allowed, bound, [proof]), D_REPLAYED)
    # a fresh proof for the same (now cached) token passes
    assert_ok(call(allowed, bound, [dpop_key.proof("GET", URL, access_token=bound)]))


# -- §4.3 rules and §11 threats -------------------------------------------------------------------
def test_proof_for_another_url_or_method(allowed: TestClient, bound: str,
                                         dpop_key: DPoPKey) -> None:
    for other in ("http://testserver/admin", "https://testserver/deployments",
                  "http://evil.example/deployments", "http://testserver:8080/deployments"):
        assert_dpop_refused(call(allowed, bound, [dpop_key.proof("GET", other,
                                                                 access_token=bound)]), D_URL)
    assert_dpop_refused(call(allowed, bound, [dpop_key.proof("POST", URL, access_token=bound)]),
                        D_METHOD)
    # the same URL written differently is the same URL (RFC 3986 §6), query ignored
    assert_ok(call(allowed, bound, [dpop_key.proof(
        "GET", URL, access_token=bound,
        claims={"htu": "HTTP://TestServer:80/./deployments?page=2"})]))


def test_old_and_future_iat(allowed: TestClient, bound: str, dpop_key: DPoPKey) -> None:
    now = int(time.time())
    assert_dpop_refused(call(allowed, bound, [dpop_key.proof("GET", URL, access_token=bound,
                                                             iat=now - 120)]), D_OLD)
    assert_dpop_refused(call(allowed, bound, [dpop_key.proof("GET", URL, access_token=bound,
                                                             iat=now + 120)]), D_FUTURE)


def test_ath_of_another_token(allowed: TestClient, bound: str, dpop_key: DPoPKey,
                              rs: SigningKey, issuer_server: KeySetServer) -> None:
    other = rs.sign(claims_of(issuer_server, cnf={"jkt": dpop_key.thumbprint}))
    assert_dpop_refused(call(allowed, bound, [dpop_key.proof("GET", URL, access_token=other)]),
                        D_ATH)


def test_jwk_with_private_parts(allowed: TestClient, rs: SigningKey,
                                issuer_server: KeySetServer) -> None:
    signing = SigningKey.generate("ES256", kid="leaky")
    leaky = DPoPKey(signing)
    token = rs.sign(claims_of(issuer_server, cnf={"jkt": leaky.thumbprint}))
    private_jwk = dict(leaky.public_jwk, d=b64url_encode(b"\x01" * 32))
    proof = leaky.proof("GET", URL, access_token=token, headers={"jwk": private_jwk})
    assert_dpop_refused(call(allowed, token, [proof]), D_PRIVATE)


@pytest.mark.parametrize("alg", ["HS256", "none"])
def test_symmetric_and_unsigned_proofs(alg: str, allowed: TestClient, bound: str,
                                       dpop_key: DPoPKey) -> None:
    header = {"typ": "dpop+jwt", "alg": alg, "jwk": dpop_key.public_jwk}
    claims = {"jti": "forged", "htm": "GET", "htu": URL, "iat": int(time.time())}
    segments = [b64url_encode(json.dumps(part).encode()) for part in (header, claims)]
    for signature in ("", b64url_encode(b"\x00" * 32)):
        proof = ".".join((*segments, signature))
        expected = D_ALG if signature else \
            "The DPoP proof is not a compact JWS (three canonical base64url segments)."
        assert_dpop_refused(call(allowed, bound, [proof]), expected)


def test_thumbprint_mismatch(allowed: TestClient, bound: str) -> None:
    thief = DPoPKey.generate()  # a stolen bound token, proved with the thief's own key
    assert_dpop_refused(call(allowed, bound, [thief.proof("GET", URL, access_token=bound)]),
                        D_MISMATCH)


def test_proof_signed_by_another_key_than_its_jwk(allowed: TestClient, bound: str,
                                                  dpop_key: DPoPKey) -> None:
    thief = DPoPKey.generate()
    proof = thief.proof("GET", URL, access_token=bound, headers={"jwk": dpop_key.public_jwk})
    assert_dpop_refused(call(allowed, bound, [proof]), D_SIGNATURE)


def test_typ_must_be_dpop_jwt(allowed: TestClient, bound: str, dpop_key: DPoPKey) -> None:
    proof = dpop_key.proof("GET", URL, access_token=bound, headers={"typ": "JWT"})
    assert_dpop_refused(call(allowed, bound, [proof]), D_TYP)


def test_two_dpop_headers_or_none(allowed: TestClient, bound: str, dpop_key: DPoPKey) -> None:
    proofs = [dpop_key.proof("GET", URL, access_token=bound) for _ in range(2)]
    assert_dpop_refused(call(allowed, bound, proofs), D_TWO)
    assert_dpop_refused(call(allowed, bound, []), D_MISSING)


# -- no downgrade (§7.2), in every mode, fast path included ---------------------------------------
@pytest.mark.parametrize("mode", ["off", "allowed", "required"])
def test_a_bound_token_as_bearer_is_refused_in_every_mode(
        mode: str, issuer_server: KeySetServer, bound: str, dpop_key: DPoPKey) -> None:
    with _client(issuer_server, dpop=mode) as test_client:
        if mode != "off":  # first a good DPoP call: the token is now in the verified cache
            assert_ok(call(test_client, bound, [dpop_key.proof("GET", URL, access_token=bound)]))
        for _ in range(2):  # a second time: the Bearer cache-hit fast path must not answer
            response = call(test_client, bound, None, scheme="Bearer")
            assert response.status_code == 401
            assert response.json() == {"error": "invalid_token",
                                       "error_description": D_AS_BEARER}
        if mode == "off":
            assert_invalid_token(response, D_AS_BEARER)


def test_an_unbound_token_with_the_dpop_scheme(allowed: TestClient, rs: SigningKey,
                                               issuer_server: KeySetServer,
                                               dpop_key: DPoPKey) -> None:
    plain = rs.sign(claims_of(issuer_server))
    response = call(allowed, plain, [dpop_key.proof("GET", URL, access_token=plain)])
    assert_dpop_refused(response, D_UNBOUND, error="invalid_token")
    # ... and the same token as Bearer is fine in allowed mode
    response = call(allowed, plain, None, scheme="Bearer")
    assert_ok(response)


def test_required_mode_refuses_plain_bearer(required: TestClient, rs: SigningKey,
                                            issuer_server: KeySetServer) -> None:
    plain = rs.sign(claims_of(issuer_server))
    for _ in range(2):
        response = call(required, plain, None, scheme="Bearer")
        assert_dpop_refused(response, D_REQUIRED, error="invalid_token", bearer=False)
    missing = required.get("/deployments")
    assert missing.status_code == 401
    assert missing.headers.get_list("www-authenticate") == [f'DPoP realm="api", algs="{ALGS}"']


def test_challenges_beside_each_other(allowed: TestClient, client: TestClient,
                                      bound: str) -> None:
    response = allowed.get("/deployments")
    assert response.status_code == 401
    assert response.headers.get_list("www-authenticate") == [
        f'Bearer realm="api", DPoP realm="api", algs="{ALGS}"']
    # DPoP off: today's answer exactly, and the DPoP scheme is no credential at all
    assert_missing_token(call(client, bound, [], scheme="DPoP"))


def test_an_expired_bound_token_is_refused_in_the_dpop_challenge(
        allowed: TestClient, rs: SigningKey, issuer_server: KeySetServer,
        dpop_key: DPoPKey) -> None:
    expired = rs.sign(claims_of(issuer_server, cnf={"jkt": dpop_key.thumbprint},
                                exp=int(time.time()) - 3600))
    response = call(allowed, expired, [dpop_key.proof("GET", URL, access_token=expired)])
    assert_dpop_refused(response, "The token has expired.", error="invalid_token")


def test_malformed_cnf(allowed: TestClient, rs: SigningKey, issuer_server: KeySetServer,
                       dpop_key: DPoPKey) -> None:
    for cnf, description in (
            ("jkt", "The token's cnf claim is not a non-empty JSON object."),
            ({"jkt": 5}, "The token's cnf.jkt is not a string."),
            ({"jwk": {"kty": "EC"}},
             "The token is bound by a confirmation method (cnf) this API does not support.")):
        token = rs.sign(claims_of(issuer_server, cnf=cnf))
        response = call(allowed, token, [dpop_key.proof("GET", URL, access_token=token)])
        assert_dpop_refused(response, description, error="invalid_token")
    # a cnf.jkt that is no thumbprint at all (not ASCII) is another key, not a 500
    odd = rs.sign(claims_of(issuer_server, cnf={"jkt": "\u00e9" * 43}))
    assert_dpop_refused(call(allowed, odd, [dpop_key.proof("GET", URL, access_token=odd)]),
                        D_MISMATCH)


# -- server nonces (§9) ---------------------------------------------------------------------------
def test_server_nonce(issuer_server: KeySetServer, bound: str, dpop_key: DPoPKey) -> None:
    with _client(issuer_server, dpop="required", dpop_nonce=True) as test_client:
        first = call(test_client, bound, [dpop_key.proof("GET", URL, access_token=bound)])
        assert_dpop_refused(first, "Resource server requires nonce in DPoP proof.",
                            error="use_dpop_nonce", bearer=False)
        nonce = first.headers["dpop-nonce"]
        assert len(nonce) >= 22
        again = call(test_client, bound, [dpop_key.proof("GET", URL, access_token=bound,
                                                         nonce=nonce)])
        assert_ok(again)
        wrong = call(test_client, bound, [dpop_key.proof("GET", URL, access_token=bound,
                                                         nonce="made-up-nonce")])
        assert wrong.json()["error"] == "use_dpop_nonce"


# -- whatever the DPoP header holds: a 401 naming the proof, never a 500 ---------------------------
@settings(max_examples=60, deadline=None)
@given(value=st.one_of(
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=300),
    st.lists(st.sampled_from(["e30", "eyJ0eXAiOiJkcG9wK2p3dCJ9", "", "AAAA", "!!", "e30e30"]),
             min_size=1, max_size=5).map(".".join)))
def test_garbage_proofs_are_refused_never_a_500(value: str, allowed: TestClient,
                                                keys: dict[str, SigningKey],
                                                issuer_server: KeySetServer,
                                                dpop_key: DPoPKey) -> None:
    token = _fixed_bound(keys["RS256"], issuer_server, dpop_key)
    value = value.strip(" \t")
    response = allowed.get("/deployments", headers=[
        ("Authorization", f"DPoP {token}"), ("DPoP", value.encode("latin-1"))])
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "invalid_dpop_proof"
    assert value[:40] not in response.json()["error_description"] or len(value) < 8


_BOUND_TOKENS: dict[str, str] = {}


def _fixed_bound(rs: SigningKey, server: KeySetServer, key: DPoPKey) -> str:
    """One bound token for every example (so the verified-token cache answers)."""
    if key.thumbprint not in _BOUND_TOKENS:
        _BOUND_TOKENS[key.thumbprint] = rs.sign(claims_of(server, cnf={"jkt": key.thumbprint}))
    return _BOUND_TOKENS[key.thumbprint]


def test_lone_surrogates_in_claims_are_never_a_500(allowed: TestClient, bound: str,
                                                   dpop_key: DPoPKey) -> None:
    # JSON may escape a lone surrogate ("\ud800"): a jti holding one is an ordinary jti
    proof = dpop_key.proof("GET", URL, access_token=bound, jti="\ud800-jti")
    assert_ok(call(allowed, bound, [proof]))
    assert_dpop_refused(call(allowed, bound, [proof]), D_REPLAYED)
    odd_htu = dpop_key.proof("GET", URL, access_token=bound, claims={"htu": URL + "\udc80"})
    assert_dpop_refused(call(allowed, bound, [odd_htu]), D_URL)
