"""The cache-hit fast path: `TokenVerifier.cached_token`, and the ASGI
middleware serving a cached token without the full path, with the same outcome as the full path
for every request it does not take."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from m2m_guard import GuardSettings, InvalidToken, TokenVerifier
from m2m_guard.asgi import M2MGuardMiddleware
from m2m_guard.local_issuer import KeySetServer
from m2m_guard.starlette import ClientUser

SEEN: list[dict[str, Any]] = []


async def record(request: Request) -> JSONResponse:
    scope = request.scope
    SEEN.append({"token": scope.get("m2m_guard.token"), "auth": scope.get("auth"),
                 "user": scope.get("user")})
    return JSONResponse({"scopes": sorted(request.auth.scopes) if "auth" in scope else None})


def _app(settings: GuardSettings) -> Starlette:
    return Starlette(routes=[Route("/", record), Route("/public", record)],
                     middleware=[Middleware(M2MGuardMiddleware, settings=settings)])


@pytest.fixture
def client(make_settings: Callable[..., GuardSettings]) -> Iterator[TestClient]:
    SEEN.clear()
    with TestClient(_app(make_settings(public_paths=["/public"]))) as c:
        yield c


# -- the engine's lookup ---------------------------------------------------------------------

def test_lookup_is_none_before_and_the_token_after_verification(
        issuer: KeySetServer, settings: GuardSettings) -> None:
    verifier = TokenVerifier(settings)
    token = issuer.mint()
    assert verifier.cached_token(token) is None
    access = verifier.verify_sync(token)
    assert verifier.cached_token(token) is access
    assert verifier.cached_token(token.encode("ascii")) is access
    cache = verifier.token_cache
    assert cache is not None and cache.get(token.encode("ascii")) is not None  # keyed by the token
    assert cache.get(hashlib.sha256(token.encode("ascii")).digest()) is None  # not its digest
    assert access.fingerprint == hashlib.sha256(token.encode("ascii")).hexdigest()[:16]
    verifier.close()


def test_lookup_declines_what_verify_must_judge(
        issuer: KeySetServer, make_settings: Callable[..., GuardSettings]) -> None:
    verifier = TokenVerifier(make_settings(max_token_bytes=4096))
    token = issuer.mint()
    verifier.verify_sync(token)
    assert verifier.cached_token(token + "é") is None  # not ASCII: never a verified token
    assert verifier.cached_token(b"x" * 4097) is None  # over the size limit: verify refuses it
    assert verifier.cached_token(12345) is None  # type: ignore[arg-type]
    events: list[Any] = []
    unsubscribe = verifier.subscribe(events.append)
    assert verifier.cached_token(token) is None  # verify reports events
    unsubscribe()
    assert verifier.cached_token(token) is not None
    verifier.close()
    uncached = TokenVerifier(make_settings(token_cache_size=0))
    uncached.verify_sync(token)
    assert uncached.cached_token(token) is None
    uncached.close()


def test_lookup_rechecks_expiry_and_drops_the_entry(
        issuer: KeySetServer, make_settings: Callable[..., GuardSettings]) -> None:
    now = [time.time()]
    verifier = TokenVerifier(make_settings(leeway=0), wall_clock=lambda: now[0])
    # iat and nbf on the fake clock: minted a second later (a busy machine), nbf would be in
    # its future with no leeway
    token = issuer.mint(iat=int(now[0]), nbf=int(now[0]), exp=int(now[0]) + 60)
    verifier.verify_sync(token)
    assert verifier.cached_token(token) is not None
    now[0] += 61
    assert verifier.cached_token(token) is None
    assert verifier.token_cache is not None and len(verifier.token_cache) == 0
    with pytest.raises(InvalidToken) as caught:
        verifier.verify_sync(token)
    assert caught.value.reason == "expired"
    verifier.close()


def test_lookup_after_key_removal_is_a_miss(
        issuer: KeySetServer, make_settings: Callable[..., GuardSettings]) -> None:
    clock = [1000.0]
    verifier = TokenVerifier(make_settings(jwks_cache_ttl=10), clock=lambda: clock[0])
    token = issuer.mint()  # signed with the first (RS256) key
    access = verifier.verify_sync(token)
    issuer.publish(*issuer.keys[1:])
    clock[0] += 5  # our copy of the set is still fresh: a hit
    assert verifier.cached_token(token) is access
    clock[0] += 6  # stale: no hit until verify has refreshed the set (which drops the key)
    assert verifier.cached_token(token) is None
    with pytest.raises(InvalidToken) as caught:
        verifier.verify_sync(token)
    assert caught.value.reason == "unknown_kid"
    assert verifier.cached_token(token) is None
    verifier.close()


# -- the middleware ----------------------------------------------------------------------------

def test_repeated_token_is_served_from_the_cache_with_shared_principal(
        client: TestClient, issuer: KeySetServer) -> None:
    token = issuer.mint()
    for _ in range(3):
        response = client.get("/", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200
        assert response.json() == {"scopes": ["deploy:applications", "read:deployments"]}
    first, second, third = SEEN
    assert first["token"] is second["token"] is third["token"]
    # Principals are memoised on hits: the second and third request share them.
    assert second["auth"] is third["auth"] and second["user"] is third["user"]
    assert isinstance(second["user"], ClientUser) and second["user"].token is first["token"]


def test_a_miss_through_the_middleware_is_a_hit_next_time(
        make_settings: Callable[..., GuardSettings], issuer: KeySetServer) -> None:
    SEEN.clear()
    verifier = TokenVerifier(make_settings())
    app = Starlette(routes=[Route("/", record)],
                    middleware=[Middleware(M2MGuardMiddleware, verifier=verifier)])
    token = issuer.mint()
    with TestClient(app) as c:
        for spaces in (" ", "   "):  # extra spaces: the full path, the same cached token
            headers = {"Authorization": f"Bearer{spaces}{token}"}
            assert c.get("/", headers=headers).status_code == 200
        assert verifier.cached_token(token) is SEEN[0]["token"] is SEEN[1]["token"]
        assert verifier.cached_token("  " + token) is None  # only the token itself is a key


@pytest.mark.parametrize(("headers", "query", "status", "error"), [
    ({"Authorization": "Bearer {t}"}, "access_token=x", 400, "invalid_request"),
    ([("Authorization", "Bearer {t}"), ("Authorization", "Bearer {t}")], "", 400,
     "invalid_request"),
    ({"Authorization": "bearer {t}"}, "", 200, None),
    ({"Authorization": "BEARER {t}"}, "", 200, None),
    ({"Authorization": "Bearer {t} "}, "", 200, None),
    ({"Authorization": "Bearer {t}x"}, "", 401, "invalid_token"),
    ({"Authorization": "Basic {t}"}, "", 401, None),
])
def test_cached_token_in_other_shapes_gets_the_full_paths_answer(
        client: TestClient, issuer: KeySetServer, headers: Any, query: str, status: int,
        error: str | None) -> None:
    token = issuer.mint()
    assert client.get("/", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    if isinstance(headers, dict):
        sent: Any = {name: value.format(t=token) for name, value in headers.items()}
    else:
        sent = [(name, value.format(t=token)) for name, value in headers]
    response = client.get("/" + ("?" + query if query else ""), headers=sent)
    assert response.status_code == status
    if error is not None:
        assert f'error="{error}"' in response.headers["www-authenticate"]
    if status == 200:
        assert SEEN[-1]["token"] is SEEN[0]["token"]  # the cached token, via the full path


def test_public_path_with_a_cached_token_passes_through_untouched(
        client: TestClient, issuer: KeySetServer) -> None:
    token = issuer.mint()
    assert client.get("/", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert client.get("/public", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert SEEN[-1] == {"token": None, "auth": None, "user": None}  # the guard stayed out


def test_hits_are_reported_while_events_are_subscribed(
        make_settings: Callable[..., GuardSettings], issuer: KeySetServer) -> None:
    events: list[Any] = []
    verifier = TokenVerifier(make_settings(), on_event=events.append)
    app = Starlette(routes=[Route("/", record)],
                    middleware=[Middleware(M2MGuardMiddleware, verifier=verifier)])
    token = issuer.mint()
    with TestClient(app) as c:
        for _ in range(2):
            assert c.get("/", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    allowed = [event for event in events if event.kind == "allowed"]
    assert [event.cached for event in allowed] == [False, True]


def test_client_user_is_read_only(issuer: KeySetServer, settings: GuardSettings) -> None:
    verifier = TokenVerifier(settings)
    user = ClientUser(verifier.verify_sync(issuer.mint()))
    with pytest.raises(AttributeError):
        user.extra = 1
    with pytest.raises(AttributeError):
        del user.token
    assert user.is_authenticated
    verifier.close()
