"""Key rotation cannot lock verifiers out: no rotation while a key is pending, never more than
MAX_KEYS published keys, `force` at the bound; after 120 rotations in a loop a freshly started
middleware still accepts a new token."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

import jwt
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from m2m_guard import GuardSettings
from m2m_guard.asgi import M2MGuardMiddleware
from m2m_guard.local_issuer import LocalIssuer
from m2m_guard.local_issuer.keyring import MAX_KEYS, RotationRefused

from .conftest import ADMIN_ID, ADMIN_SECRET, ORG, RFC3339, Rig, make_rig


@pytest.fixture
def rig() -> Iterator[Rig]:
    issuer = LocalIssuer(admin_client_id=ADMIN_ID, admin_client_secret=ADMIN_SECRET,
                         key_publish_delay=0)
    try:
        yield from make_rig(issuer)
    finally:
        issuer.close()


def published(rig: Rig) -> list[str]:
    return [key["kid"] for key in rig.http.get("/keys").json()["keys"]]


def signs(rig: Rig) -> str:
    """What a token request does to the key ring (without the scrypt run of a real one); the
    kid that signed."""
    token = rig.issuer.sign({"iss": rig.url, "exp": time.time() + 120})
    return str(jwt.get_unverified_header(token)["kid"])


def fresh_middleware_accepts(rig: Rig, token: str) -> None:
    async def hello(request: Request) -> JSONResponse:
        return JSONResponse({"client": request.user.display_name})

    settings = GuardSettings(issuer=rig.url, audience="deployment-api", allow_http=True)
    app = Starlette(routes=[Route("/hello", hello)],
                    middleware=[Middleware(M2MGuardMiddleware, settings=settings)])
    with TestClient(app) as client:  # startup loads the key set
        response = client.get("/hello", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text


def test_120_rotations_without_delay_stay_within_the_bound(rig: Rig) -> None:
    client, secret = rig.create(ORG, audience=["deployment-api"])
    statuses: Counter[int] = Counter()
    for _ in range(120):
        response = rig.api.post("/api/v1/keys:rotate", json={"publish_delay": 0})
        statuses[response.status_code] += 1
        signs(rig)  # the new key signs a token: it must retire, not vanish
        assert len(published(rig)) <= MAX_KEYS
        if response.status_code == 409:
            body = response.json()
            assert body["code"] == "FAILED_PRECONDITION"
            retiring = [key for key in rig.api.get("/api/v1/keys").json()["keys"]
                        if key["status"] == "retiring"]
            oldest = min(retiring, key=lambda key: key["remove_after"])["kid"]
            assert oldest in body["message"] and "force" in body["message"]
            assert body["details"][0] == {"field": "kid", "description": oldest}
            assert body["details"][1]["field"] == "remove_after"
            assert RFC3339.match(body["details"][1]["description"])
    assert statuses == {201: MAX_KEYS - 1, 409: 120 - (MAX_KEYS - 1)}, statuses
    retiring = [key for key in rig.api.get("/api/v1/keys").json()["keys"]
                if key["status"] == "retiring"]
    first_to_go = min(retiring, key=lambda key: key["remove_after"])["kid"]
    forced = rig.api.post("/api/v1/keys:rotate", json={"publish_delay": 0, "force": True})
    assert forced.status_code == 201, forced.text
    after = published(rig)
    assert len(after) == MAX_KEYS and first_to_go not in after and forced.json()["kid"] in after
    fresh_middleware_accepts(rig, rig.access_token(client["client_id"], secret))


def test_120_rotations_with_a_delay_are_refused_while_a_key_is_pending(rig: Rig) -> None:
    client, secret = rig.create(ORG, audience=["deployment-api"])
    statuses: Counter[int] = Counter()
    first = None
    for _ in range(120):
        response = rig.api.post("/api/v1/keys:rotate", json={"publish_delay": 300})
        statuses[response.status_code] += 1
        if response.status_code == 201:
            first = response.json()["kid"]
        else:
            body = response.json()
            assert response.status_code == 409 and first is not None
            assert first in body["message"] and "pending" in body["message"]
            assert body["details"][0] == {"field": "kid", "description": first}
            assert body["details"][1]["field"] == "signs_from"
        assert len(published(rig)) <= MAX_KEYS
    assert statuses == {201: 1, 409: 119}
    # force does not skip a pending key: it only makes room at the bound
    assert rig.api.post("/api/v1/keys:rotate", json={"force": True}).status_code == 409
    fresh_middleware_accepts(rig, rig.access_token(client["client_id"], secret))


def test_120_rotations_with_a_short_real_delay(rig: Rig) -> None:
    client, secret = rig.create(ORG, audience=["deployment-api"])
    statuses: Counter[int] = Counter()
    signed: set[str] = set()
    for _ in range(120):
        response = rig.api.post("/api/v1/keys:rotate", json={"publish_delay": 0.02})
        statuses[response.status_code] += 1
        signed.add(signs(rig))
        keys = published(rig)
        assert len(keys) <= MAX_KEYS
        # No key that signed a token still inside its lifetime has been dropped. (A key that was
        # overtaken before it signed anything may go at once: on a busy machine a pending key can
        # activate and be replaced between two token requests, so more than MAX_KEYS - 1
        # rotations may succeed; the bound on what is published is what must hold.)
        assert signed <= set(keys)
        time.sleep(0.005)
    assert set(statuses) <= {201, 409} and statuses[201] >= 1 and statuses[409] >= 1
    assert len(signed) <= MAX_KEYS
    fresh_middleware_accepts(rig, rig.access_token(client["client_id"], secret))


def test_rotation_is_allowed_again_once_the_oldest_retiring_key_ages_out() -> None:
    now = [1_000_000.0]
    with LocalIssuer(admin_client_id=ADMIN_ID, admin_client_secret=ADMIN_SECRET,
                     clock=lambda: now[0], retire_leeway=60) as issuer:
        for _ in range(MAX_KEYS - 1):
            issuer.sign({"exp": now[0] + 100})
            issuer.rotate_keys(0)
            now[0] += 1
        issuer.sign({"exp": now[0] + 100})
        assert len(issuer.key_states()) == MAX_KEYS
        oldest = issuer.key_states()[0]
        with pytest.raises(RotationRefused) as caught:
            issuer.rotate_keys(0)
        assert caught.value.kid == oldest.kid and caught.value.until == oldest.remove_after
        assert oldest.remove_after is not None
        now[0] = oldest.remove_after + 0.5
        issuer.rotate_keys(0)
        kids = [state.kid for state in issuer.key_states()]
        assert oldest.kid not in kids and len(kids) <= MAX_KEYS
