"""DPoP at the local issuer's token endpoint (RFC 9449 §5), over real HTTP: a proof binds the
token (``cnf.jkt``, ``token_type: DPoP``); a bad, foreign or reused proof is refused with 400
``invalid_dpop_proof``; without a proof nothing changes; discovery names the algorithms."""

from __future__ import annotations

import time

import httpx
import pytest

from m2m_guard.dpop import DPoPKey

from .conftest import ORG, Rig
from .test_token_endpoint import decode, oauth_error


@pytest.fixture(scope="module")
def client(shared_rig: Rig) -> tuple[str, str]:
    record, secret = shared_rig.create(ORG, scopes=["read:deployments"],
                                       audience=["deployment-api"])
    return record["client_id"], secret


@pytest.fixture(scope="module")
def key() -> DPoPKey:
    return DPoPKey.generate()


def request(rig: Rig, client: tuple[str, str], proof: str | None = None,
            *extra: tuple[str, str]) -> httpx.Response:
    headers = [("DPoP", proof)] if proof is not None else []
    headers += list(extra)
    return rig.http.post("/oauth/token", headers=headers, data={
        "grant_type": "client_credentials", "client_id": client[0], "client_secret": client[1]})


def test_a_proof_binds_the_token_to_its_key(shared_rig: Rig, client: tuple[str, str],
                                            key: DPoPKey) -> None:
    response = request(shared_rig, client, key.proof("POST", shared_rig.url + "/oauth/token"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "DPoP"
    _, claims = decode(body["access_token"])
    assert claims["cnf"] == {"jkt": key.thumbprint}
    # Another key binds to itself; an RSA or Ed25519 key works as well as ES256.
    for other in (DPoPKey.generate("EdDSA"), DPoPKey.generate("PS256")):
        bound = request(shared_rig, client, other.proof("POST", shared_rig.url + "/oauth/token"))
        assert decode(bound.json()["access_token"])[1]["cnf"] == {
            "jkt": other.thumbprint}


def test_without_a_proof_the_token_is_a_bearer_token(shared_rig: Rig,
                                                     client: tuple[str, str]) -> None:
    body = request(shared_rig, client).json()
    assert body["token_type"] == "Bearer" and "cnf" not in decode(body["access_token"])[1]


def test_a_proof_is_used_once(shared_rig: Rig, client: tuple[str, str], key: DPoPKey) -> None:
    proof = key.proof("POST", shared_rig.url + "/oauth/token")
    assert request(shared_rig, client, proof).status_code == 200
    description = oauth_error(request(shared_rig, client, proof),
                              400, "invalid_dpop_proof")
    assert "used before" in description


def _cases(url: str, key: DPoPKey) -> dict[str, tuple[str, str]]:
    token_url = url + "/oauth/token"
    now = time.time()
    return {
        "another method": (key.proof("GET", token_url), "htm"),
        "another URL": (key.proof("POST", url + "/keys"), "htu"),
        "another host": (key.proof("POST", "https://issuer.example/oauth/token"), "htu"),
        "too old": (key.proof("POST", token_url, iat=now - 600), "in the past"),
        "in the future": (key.proof("POST", token_url, iat=now + 600), "in the future"),
        "not a JWS": ("not-a-proof", "compact JWS"),
        "no jti": (key.proof("POST", token_url, claims={"jti": None}), "jti"),
        "wrong typ": (key.proof("POST", token_url, headers={"typ": "JWT"}), "typ"),
        "private key in jwk": (key.proof("POST", token_url, headers={
            "jwk": {**key.public_jwk, "d": "AAAA"}}), "private"),
        "signed by another key": (key.proof("POST", token_url, headers={
            "jwk": DPoPKey.generate().public_jwk}), "signature"),
    }


@pytest.mark.parametrize("case", sorted(_cases("http://x", DPoPKey.generate())))
def test_bad_proofs_are_refused(shared_rig: Rig, client: tuple[str, str], key: DPoPKey,
                                case: str) -> None:
    proof, words = _cases(shared_rig.url, key)[case]
    description = oauth_error(request(shared_rig, client, proof),
                              400, "invalid_dpop_proof")
    assert words in description, description


def test_two_proof_headers_are_refused(shared_rig: Rig, client: tuple[str, str],
                                       key: DPoPKey) -> None:
    url = shared_rig.url + "/oauth/token"
    response = request(shared_rig, client, key.proof("POST", url),
                       ("DPoP", key.proof("POST", url)))
    assert "more than one" in oauth_error(response, 400,
                                          "invalid_dpop_proof")


def test_a_bad_proof_with_wrong_credentials_is_an_authentication_failure_first(
        shared_rig: Rig, key: DPoPKey) -> None:
    response = request(shared_rig, ("m2morg_1", "wrong"), "not-a-proof")
    oauth_error(response, 401, "invalid_client")


def test_discovery_names_the_proof_algorithms(shared_rig: Rig) -> None:
    document = shared_rig.http.get("/.well-known/openid-configuration").json()
    assert "ES256" in document["dpop_signing_alg_values_supported"]
    assert not {"none", "HS256"} & set(document["dpop_signing_alg_values_supported"])
    openapi = shared_rig.http.get("/openapi.json").json()
    token = openapi["paths"]["/oauth/token"]["post"]
    assert [parameter["name"] for parameter in token["parameters"]] == ["DPoP"]
