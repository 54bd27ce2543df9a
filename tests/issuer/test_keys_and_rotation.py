"""JWKS, discovery, key rotation (published before signing, kept while its tokens live), outages."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from m2m_guard import GuardSettings, InvalidToken, TokenVerifier
from m2m_guard.local_issuer import LocalIssuer, SigningKey

from .conftest import ADMIN_ID, ADMIN_SECRET, ORG, Rig
from .test_token_endpoint import decode


def test_key_set_publishes_public_rsa_keys_with_cache_headers(shared_rig: Rig) -> None:
    response = shared_rig.http.get("/keys")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "public, max-age=300"
    [key] = response.json()["keys"]
    assert set(key) == {"kty", "n", "e", "kid", "use", "alg"}
    assert (key["kty"], key["use"], key["alg"]) == ("RSA", "sig", "RS256")
    assert key["kid"].startswith("snk_")
    etag = response.headers["etag"]
    again = shared_rig.http.get("/keys", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""


def test_discovery_documents(shared_rig: Rig) -> None:
    for path in ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"):
        document = shared_rig.http.get(path).json()
        url = shared_rig.url
        assert document["issuer"] == url
        assert document["jwks_uri"] == url + "/keys"
        assert document["token_endpoint"] == url + "/oauth/token"
        assert document["grant_types_supported"] == ["client_credentials"]
        assert set(document["token_endpoint_auth_methods_supported"]) == {
            "client_secret_basic", "client_secret_post"}
        assert document["id_token_signing_alg_values_supported"] == ["RS256"]


def test_a_configured_issuer_url_is_used_for_iss_and_discovery() -> None:
    with LocalIssuer(issuer_url="https://issuer.example/", admin_client_id=ADMIN_ID,
                     admin_client_secret=ADMIN_SECRET) as issuer:
        client, secret = issuer.create_client(ORG, name="CI")
        with TestClient(issuer.app) as http:
            document = http.get("/.well-known/openid-configuration").json()
            token = http.post("/oauth/token", data={
                "grant_type": "client_credentials", "client_id": client["client_id"],
                "client_secret": secret}).json()["access_token"]
    assert document["issuer"] == "https://issuer.example"
    assert document["jwks_uri"] == "https://issuer.example/keys"
    assert decode(token)[1]["iss"] == "https://issuer.example"


def _verify(verifier: TokenVerifier, token: str) -> str | None:
    """The token's kid when it verifies, else the refusal reason."""
    try:
        verifier.verify_sync(token)
    except InvalidToken as exc:
        return f"refused: {exc.reason}"
    return str(decode(token)[0]["kid"])


def _exhaust_refetch(verifier: TokenVerifier, url: str) -> None:
    """Spend the verifier's unknown-kid refetch, so only its regular refreshes find new keys."""
    stranger = SigningKey.generate(kid="snk_stranger").sign(
        {"iss": url, "aud": ["deployment-api"], "exp": time.time() + 60})
    assert _verify(verifier, stranger) == "refused: unknown_kid"


def test_rotation_refuses_no_token_during_the_overlap(rig: Rig) -> None:
    client, secret = rig.create(ORG, scopes=["read:deployments"], audience=["deployment-api"])
    old_kid = rig.issuer.keys.signing_key().kid
    old_token = rig.access_token(client["client_id"], secret)
    settings = GuardSettings(issuer=rig.url, audience="deployment-api", jwks_cache_ttl=0.3,
                             jwks_refetch_cooldown=300, token_cache_size=0)
    with TokenVerifier(settings) as verifier:
        assert _verify(verifier, old_token) == old_kid
        _exhaust_refetch(verifier, rig.url)
        new_kid = rig.issuer.rotate_keys(publish_delay=1.0)  # longer than the cache TTL
        results: list[str | None] = []
        deadline = time.monotonic() + 1.8
        for _ in range(400):  # bounded; ends at the deadline
            token = rig.access_token(client["client_id"], secret)
            results += [_verify(verifier, token), _verify(verifier, old_token)]
            if time.monotonic() > deadline:
                break
            time.sleep(0.01)
    assert set(results) == {old_kid, new_kid}, set(results)  # nothing refused
    assert results[-2] == new_kid  # the new key signs by now
    published = {key["kid"] for key in rig.http.get("/keys").json()["keys"]}
    assert published == {old_kid, new_kid}  # the old key's tokens still live


def test_a_key_that_signs_before_caches_see_it_is_refused(rig: Rig) -> None:
    """Why keys are published first: without the delay, a cached verifier refuses new tokens."""
    client, secret = rig.create(ORG, audience=["deployment-api"])
    settings = GuardSettings(issuer=rig.url, audience="deployment-api", jwks_cache_ttl=60,
                             jwks_refetch_cooldown=300)
    with TokenVerifier(settings) as verifier:
        assert _verify(verifier, rig.access_token(client["client_id"], secret)) is not None
        _exhaust_refetch(verifier, rig.url)
        rig.issuer.rotate_keys(publish_delay=0)
        token = rig.access_token(client["client_id"], secret)
        assert _verify(verifier, token) == "refused: unknown_kid"


def test_retired_keys_stay_published_until_their_tokens_expire() -> None:
    now = [1_000_000.0]
    with LocalIssuer(admin_client_id=ADMIN_ID, admin_client_secret=ADMIN_SECRET,
                     clock=lambda: now[0], retire_leeway=60) as issuer:
        first = issuer.keys.signing_key().kid
        second = issuer.rotate_keys(publish_delay=300)
        assert [(s.kid, s.status) for s in issuer.key_states()] == [
            (first, "active"), (second, "pending")]
        assert {key["kid"] for key in issuer.jwks()["keys"]} == {first, second}
        now[0] += 290
        assert decode(issuer.sign({"exp": now[0] + 60}))[0]["kid"] == first  # still signing
        now[0] += 11  # the second key signs now; the first signed a token valid until +349
        assert decode(issuer.sign({"exp": now[0] + 60}))[0]["kid"] == second
        states = {s.kid: s for s in issuer.key_states()}
        assert states[first].status == "retiring" and states[second].status == "active"
        assert states[first].remove_after == 1_000_000 + 350 + 60
        now[0] = 1_000_000 + 409
        assert {key["kid"] for key in issuer.jwks()["keys"]} == {first, second}
        now[0] = 1_000_000 + 411
        assert {key["kid"] for key in issuer.jwks()["keys"]} == {second}
        stored = [row["kid"] for row in issuer.store.query("SELECT kid FROM signing_keys")]
        assert stored == [second]  # its private key is gone too
        # A key that never signed a token is dropped as soon as it is superseded.
        third = issuer.rotate_keys(publish_delay=0)
        fourth = issuer.rotate_keys(publish_delay=0)
        now[0] += 1
        kids = [s.kid for s in issuer.key_states()]
        assert third not in kids and kids[-1] == fourth


def test_rotation_through_the_management_api(rig: Rig) -> None:
    # Without a body the issuer's own delay applies (0 for this rig): the new key signs at once.
    immediate = rig.api.post("/api/v1/keys:rotate").json()["kid"]
    assert rig.issuer.keys.signing_key().kid == immediate
    before = rig.api.get("/api/v1/keys").json()["keys"]
    # the first key signed the admin token: it retires; the new one is active
    assert [(key["kid"], key["status"]) for key in before][-1] == (immediate, "active")
    response = rig.api.post("/api/v1/keys:rotate", json={"publish_delay": 600})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["kid"].startswith("snk_")
    assert [(key["kid"], key["status"]) for key in body["keys"]] == [
        *((key["kid"], key["status"]) for key in before), (body["kid"], "pending")]
    published = {key["kid"] for key in rig.http.get("/keys").json()["keys"]}
    assert published == {key["kid"] for key in before} | {body["kid"]}


@pytest.mark.parametrize(("body", "field"), [
    ({"publish_delay": -1}, "publish_delay"), ({"publish_delay": True}, "publish_delay"),
    ({"publish_delay": "5"}, "publish_delay"), ({"publish_delay": 10**6}, "publish_delay"),
    ({"delay": 5}, "body"), ([1], "body"),
])
def test_rotation_input_is_validated(shared_rig: Rig, body: Any, field: str) -> None:
    response = shared_rig.api.post("/api/v1/keys:rotate", json=body)
    assert response.status_code == 400
    assert response.json()["details"][0]["field"] == field


def test_outages(rig: Rig) -> None:
    client, secret = rig.create(ORG)
    with rig.running.outage():
        for response in (rig.http.get("/keys"), rig.http.get("/.well-known/openid-configuration"),
                         rig.token(client["client_id"], secret),
                         rig.api.get(rig.clients_path())):
            assert response.status_code == 503
            assert response.headers["retry-after"] == "1"
    assert rig.http.get("/keys").status_code == 200
    port = rig.running.port
    with rig.running.outage(refuse=True):
        with pytest.raises(httpx.ConnectError):
            httpx.get(rig.url + "/keys", timeout=2)
    assert rig.running.port == port
    assert httpx.get(rig.url + "/keys", timeout=5).status_code == 200
    assert rig.token(client["client_id"], secret).status_code == 200
