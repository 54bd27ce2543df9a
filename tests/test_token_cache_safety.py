"""The verified-token cache never answers differently from a full verification.

A hit re-checks `exp` and `nbf` (leeway included) against the clock and that the key which
verified the token is still in its issuer's current key set; the cache stays within its bounds
under a flood of distinct valid tokens; a refusal is never stored; size 0 turns it off. Real
tokens, a real key-set server; fake clocks only where time has to pass.
"""

from __future__ import annotations

import time

import pytest
from starlette.testclient import TestClient

import m2m_guard.verifier as verifier_module
from m2m_guard import GuardSettings, InvalidToken, TokenVerifier
from m2m_guard.local_issuer import KeySetServer, SigningKey

from .conftest import AUDIENCE, deployment_app


def _settings(issuer: KeySetServer, **options: object) -> GuardSettings:
    values: dict[str, object] = {"issuer": issuer.url, "audience": AUDIENCE, "http_timeout": 2.0}
    values.update(options)
    return GuardSettings(**values)  # type: ignore[arg-type]


def _refused(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(InvalidToken) as caught:
        verifier.verify_sync(token)
    return caught.value.reason


def test_hit_past_exp_plus_leeway_is_refused() -> None:
    key = SigningKey.generate("ES256")
    now = [time.time()]
    with KeySetServer([key]) as issuer:
        verifier = TokenVerifier(_settings(issuer, leeway=30), wall_clock=lambda: now[0])
        exp = int(now[0]) + 60
        token = issuer.mint(exp=exp)
        first = verifier.verify_sync(token)
        now[0] = exp + 29  # inside the leeway: still the cached result
        assert verifier.verify_sync(token) is first
        now[0] = exp + 30  # exp + leeway reached: refused, exactly as a full verification says
        assert _refused(verifier, token) == "expired"
        assert _refused(verifier, token) == "expired"
        assert verifier.token_cache is not None and len(verifier.token_cache) == 0


def test_hit_before_nbf_minus_leeway_is_refused() -> None:
    """A clock stepped back (NTP correction) must not let a cached token be used early."""
    key = SigningKey.generate("EdDSA")
    now = [time.time()]
    with KeySetServer([key]) as issuer:
        verifier = TokenVerifier(_settings(issuer, leeway=5), wall_clock=lambda: now[0])
        nbf = int(now[0])
        token = issuer.mint(nbf=nbf, iat=nbf)
        first = verifier.verify_sync(token)
        now[0] = nbf - 5  # nbf - leeway: still valid
        assert verifier.verify_sync(token) is first
        now[0] = nbf - 6
        assert _refused(verifier, token) == "not_yet_valid"
        now[0] = nbf + 1  # valid again, through a full verification (a new result)
        again = verifier.verify_sync(token)
        assert again is not first and again.client_id == first.client_id


def test_key_removed_from_the_set_invalidates_cached_tokens_at_the_next_refresh() -> None:
    old, new = SigningKey.generate("ES256", kid="snk_old"), SigningKey.generate("ES256",
                                                                             kid="snk_new")
    clock = [1000.0]
    with KeySetServer([old, new], max_age=None) as issuer:
        verifier = TokenVerifier(_settings(issuer, jwks_cache_ttl=10), clock=lambda: clock[0])
        token = issuer.mint(old)
        first = verifier.verify_sync(token)
        assert verifier.verify_sync(token) is first
        issuer.publish(new)  # the issuer drops the old key ...
        clock[0] += 5  # ... but our copy of the set is still fresh: a hit
        assert verifier.verify_sync(token) is first
        clock[0] += 6  # past the TTL: this request waits for the refresh, which drops the key
        assert _refused(verifier, token) == "unknown_kid"
        assert issuer.requests["/keys"] >= 2  # the refresh happened, and dropped the key
        assert verifier.verify_sync(issuer.mint(new)).key_id == "snk_new"
        assert _refused(verifier, token) == "unknown_kid"


def test_key_replaced_under_the_same_kid_invalidates_cached_tokens() -> None:
    """Same kid, other key material: the cached result belonged to the old key object."""
    before, after = SigningKey.generate("ES256", kid="snk_1"), SigningKey.generate("ES256",
                                                                                kid="snk_1")
    clock = [1000.0]
    with KeySetServer([before], max_age=None) as issuer:
        verifier = TokenVerifier(_settings(issuer, jwks_cache_ttl=10), clock=lambda: clock[0])
        token = issuer.mint(before)
        verifier.verify_sync(token)
        issuer.publish(after)
        clock[0] += 11
        assert _refused(verifier, token) == "bad_signature"


def test_removed_key_invalidates_through_the_middleware_too(issuer: KeySetServer) -> None:
    clock = [1000.0]
    settings = _settings(issuer, jwks_cache_ttl=10)
    verifier = TokenVerifier(settings, clock=lambda: clock[0])
    token = issuer.mint()
    with TestClient(deployment_app(settings, verifier=verifier)) as client:
        headers = {"Authorization": f"Bearer {token}"}
        assert client.get("/deployments", headers=headers).status_code == 200
        assert client.get("/deployments", headers=headers).status_code == 200
        issuer.publish(*issuer.keys[1:])  # drop the RS256 key that signed `token`
        clock[0] += 11
        response = client.get("/deployments", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"


def test_flood_of_distinct_valid_tokens_never_passes_the_entry_bound() -> None:
    key = SigningKey.generate("EdDSA")
    with KeySetServer([key]) as issuer:
        verifier = TokenVerifier(_settings(issuer, token_cache_size=25))
        cache = verifier.token_cache
        assert cache is not None
        most = 0
        for _ in range(200):
            verifier.verify_sync(issuer.mint())
            most = max(most, len(cache))
        assert most == 25 and len(cache) == 25


def test_flood_never_passes_the_byte_bound() -> None:
    key = SigningKey.generate("EdDSA")
    with KeySetServer([key]) as issuer:
        verifier = TokenVerifier(_settings(issuer, token_cache_size=1000))
        sample = issuer.mint()
        size = len(sample) - len(sample.split(".")[2]) - 1 + 64  # signing input + signature
        bound = 10 * size + size // 2
        assert verifier.token_cache is not None
        verifier.token_cache.max_bytes = bound
        most_bytes = most_entries = 0
        for _ in range(120):
            verifier.verify_sync(issuer.mint())
            most_bytes = max(most_bytes, verifier.token_cache.bytes)
            most_entries = max(most_entries, len(verifier.token_cache))
        assert 0 < most_bytes <= bound
        assert most_entries == 10  # the bytes, not the entry count, were the limit


def test_refused_tokens_are_never_cached_and_stay_refused() -> None:
    key = SigningKey.generate("ES256")
    with KeySetServer([key]) as issuer:
        verifier = TokenVerifier(_settings(issuer))
        good = issuer.mint()
        head, payload, signature = good.split(".")
        forged = f"{head}.{payload}.{signature[:-4]}AAAA"
        wrong_audience = issuer.mint(aud=["another-api"])
        for _ in range(3):
            assert _refused(verifier, forged) == "bad_signature"
            assert _refused(verifier, wrong_audience) == "wrong_audience"
        assert verifier.token_cache is not None and len(verifier.token_cache) == 0
        # The genuine token is cached; its forged twin still is not.
        verifier.verify_sync(good)
        assert _refused(verifier, forged) == "bad_signature"
        assert len(verifier.token_cache) == 1


def test_unknown_key_token_passes_only_through_a_real_verification_once_the_key_appears(
) -> None:
    known, later = SigningKey.generate("ES256", kid="snk_known"), SigningKey.generate(
        "ES256", kid="snk_later")
    clock = [1000.0]
    with KeySetServer([known], max_age=None) as issuer:
        verifier = TokenVerifier(_settings(issuer, jwks_cache_ttl=10, jwks_refetch_cooldown=5),
                                 clock=lambda: clock[0])
        token = issuer.mint(later)
        assert _refused(verifier, token) == "unknown_kid"
        assert _refused(verifier, token) == "unknown_kid"
        assert verifier.token_cache is not None and len(verifier.token_cache) == 0
        fetches = issuer.requests["/keys"]
        issuer.publish(known, later)
        assert _refused(verifier, token) == "unknown_kid"  # our set does not have it yet
        clock[0] += 11  # the next refresh brings the key; the token then passes in full
        access = verifier.verify_sync(token)
        assert access.key_id == "snk_later"
        assert issuer.requests["/keys"] > fetches
        assert len(verifier.token_cache) == 1
        assert verifier.verify_sync(token) is access  # and only now a cache hit


def test_size_zero_disables_the_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    key = SigningKey.generate("ES256")
    with KeySetServer([key]) as issuer:
        monkeypatch.setenv("M2M_GUARD_ISSUER", issuer.url)
        monkeypatch.setenv("M2M_GUARD_AUDIENCE", AUDIENCE)
        monkeypatch.setenv("M2M_GUARD_TOKEN_CACHE_SIZE", "0")
        settings = GuardSettings.from_env()
        assert settings.token_cache_size == 0
        verifier = TokenVerifier(settings)
        assert verifier.token_cache is None
        token = issuer.mint()
        first, second = verifier.verify_sync(token), verifier.verify_sync(token)
        assert first is not second  # each call verified in full
        assert first.claims == second.claims


def test_cached_claims_equal_a_full_verification() -> None:
    """Cached claim sets share repeated strings; the values must be exactly those verified."""
    key = SigningKey.generate("ES256")
    with KeySetServer([key]) as issuer:
        cached = TokenVerifier(_settings(issuer))
        uncached = TokenVerifier(_settings(issuer, token_cache_size=0))
        tokens = [issuer.mint(custom_claims={"team": f"t{i}"}, scope="a b", azp="client-x")
                  for i in range(3)]
        for token in tokens:
            hit_source = cached.verify_sync(token)
            assert cached.verify_sync(token) is hit_source
            full = uncached.verify_sync(token)
            assert hit_source.claims == full.claims
            assert hit_source.scopes == full.scopes == frozenset(
                {"a", "b", "deploy:applications", "read:deployments"})
            assert hit_source.client_id == full.client_id


def test_starlette_credentials_of_a_cached_token_are_read_only(issuer: KeySetServer) -> None:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from m2m_guard.asgi import M2MGuardMiddleware

    async def mutate(request: Request) -> JSONResponse:
        scopes = request.auth.scopes
        with pytest.raises(AttributeError):
            scopes.append("admin:platform")
        with pytest.raises(AttributeError):
            request.auth.scopes = ["admin:platform"]
        return JSONResponse({"scopes": list(request.auth.scopes)})

    app = Starlette(routes=[Route("/", mutate)],
                    middleware=[Middleware(M2MGuardMiddleware, settings=_settings(issuer))])
    token = issuer.mint()
    with TestClient(app) as client:
        answers = [client.get("/", headers={"Authorization": f"Bearer {token}"}).json()
                   for _ in range(2)]
    assert answers[0] == answers[1] == {"scopes": ["deploy:applications", "read:deployments"]}


def test_shared_claim_objects_never_change_a_value_or_its_type(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Cached tokens of one shape share equal names and values; an equal-looking value of
    another type (1 and true, "1" and 1) is never swapped in."""
    monkeypatch.setattr(verifier_module, "SHARE_FROM", 0)  # share from the first entry on
    key = SigningKey.generate("EdDSA")
    with KeySetServer([key]) as issuer:
        verifier = TokenVerifier(_settings(issuer))
        first = verifier.verify_sync(issuer.mint(ver=1, tid="tenant-1"))
        second = verifier.verify_sync(issuer.mint(ver=True, tid="tenant-1"))
        third = verifier.verify_sync(issuer.mint(ver="1", tid="tenant-2"))
        assert first.claims["ver"] == 1 and type(first.claims["ver"]) is int
        assert second.claims["ver"] is True
        assert third.claims["ver"] == "1" and third.claims["tid"] == "tenant-2"
        assert second.claims["tid"] == "tenant-1"
        # Equal strings and string arrays are one object between cached claim sets (seen
        # through the public read-only claims, which keep the strings and names they copy).
        assert second.claims["iss"] is first.claims["iss"]
        assert all(a is b for a, b in zip(second.claims["aud"], first.claims["aud"],
                                          strict=True))
        assert second.claims["tid"] is first.claims["tid"]
        assert [name for name in second.claims] == [name for name in first.claims]
        assert all(a is b for a, b in zip(second.claims, first.claims, strict=True))
        assert third.audience == ("deployment-api",) and third.scopes == first.scopes


def test_claims_are_shared_only_once_the_cache_is_large(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verifier_module, "SHARE_FROM", 2)
    key = SigningKey.generate("EdDSA")
    with KeySetServer([key]) as issuer:
        verifier = TokenVerifier(_settings(issuer))
        first, second, third, fourth = (verifier.verify_sync(issuer.mint()) for _ in range(4))
        assert second._raw["iss"] == first._raw["iss"]
        assert second._raw["iss"] is not first._raw["iss"]  # under two entries: not shared
        assert fourth._raw["iss"] is third._raw["iss"]  # the third became the template
        unique = ("jti", "iat", "nbf", "exp")
        assert {name: value for name, value in fourth.claims.items() if name not in unique} == \
            {name: value for name, value in third.claims.items() if name not in unique}
