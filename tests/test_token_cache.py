"""The verified-token cache: bounds, what enters it, and that hits are still checked."""

from __future__ import annotations

import time

import pytest

from m2m_guard import GuardSettings, InvalidToken, TokenVerifier
from m2m_guard._core.token_cache import VerifiedTokenCache
from m2m_guard.local_issuer import KeySetServer, SigningKey


def test_bounded_by_entries_oldest_first() -> None:
    cache: VerifiedTokenCache[str] = VerifiedTokenCache(3)
    for i in range(5):
        cache.put(bytes([i]) * 100, f"v{i}")
    assert len(cache) == 3
    assert cache.get(b"\x00" * 100) is None and cache.get(b"\x01" * 100) is None
    assert [cache.get(bytes([i]) * 100) for i in (2, 3, 4)] == ["v2", "v3", "v4"]
    assert cache.get(b"\x04" * 99) is None  # whole keys are compared
    assert cache.bytes == 300


def test_bounded_by_bytes_and_large_tokens_not_cached() -> None:
    cache: VerifiedTokenCache[str] = VerifiedTokenCache(1000, max_bytes=1000, max_token_bytes=400)
    cache.put(b"b" * 401, "x")
    assert cache.get(b"b" * 401) is None and len(cache) == 0
    for i in range(10):
        cache.put(bytes([i]) * 300, str(i))
    assert cache.bytes <= 1000 and len(cache) == 3
    cache.put(b"\x09" * 300, "again")  # replacing an entry does not count it twice
    assert cache.bytes == 900 and cache.get(b"\x09" * 300) == "again"
    cache.discard(b"\x09" * 300)
    cache.discard(b"\x09" * 300)  # not there any more: nothing changes
    assert cache.bytes == 600
    cache.clear()
    assert cache.bytes == 0 and len(cache) == 0


def test_flood_of_distinct_valid_tokens_stays_within_bound() -> None:
    key = SigningKey.generate("ES256")
    with KeySetServer([key]) as issuer:
        verifier = TokenVerifier(GuardSettings(issuer=issuer.url, audience="deployment-api",
                                               token_cache_size=50))
        for _ in range(300):
            verifier.verify_sync(issuer.mint())
        assert verifier.token_cache is not None and len(verifier.token_cache) == 50


def test_hit_still_checks_expiry() -> None:
    key = SigningKey.generate("ES256")
    now = [time.time()]
    with KeySetServer([key]) as issuer:
        verifier = TokenVerifier(GuardSettings(issuer=issuer.url, audience="deployment-api",
                                               leeway=0), wall_clock=lambda: now[0])
        # iat and nbf on the fake clock: minted a second later (a busy machine), nbf would be
        # in its future with no leeway
        token = issuer.mint(iat=int(now[0]), nbf=int(now[0]), exp=int(now[0]) + 60)
        first = verifier.verify_sync(token)
        assert verifier.verify_sync(token) is first  # served from the cache
        now[0] += 61
        with pytest.raises(InvalidToken) as caught:
            verifier.verify_sync(token)
        assert caught.value.reason == "expired"


def test_failures_are_never_cached() -> None:
    key = SigningKey.generate("ES256")
    with KeySetServer([key]) as issuer:
        verifier = TokenVerifier(GuardSettings(issuer=issuer.url, audience="deployment-api"))
        bad = issuer.mint(aud=["someone-else"])
        for _ in range(3):
            with pytest.raises(InvalidToken):
                verifier.verify_sync(bad)
        assert verifier.token_cache is not None and len(verifier.token_cache) == 0


@pytest.mark.parametrize("send_etag", [True, False], ids=["304", "200-same-body"])
def test_refresh_keeps_cached_tokens_and_key_objects(send_etag: bool) -> None:
    """A refresh that changed nothing (304, or 200 with the same keys) keeps the key set and its
    key objects, so cached tokens stay hits; a refresh that adds a key keeps the objects of the
    keys it did not change."""
    key = SigningKey.generate("ES256")
    clock = [1000.0]
    with KeySetServer([key], max_age=None) as issuer:
        issuer.send_etag = send_etag
        verifier = TokenVerifier(GuardSettings(issuer=issuer.url, audience="deployment-api",
                                               jwks_cache_ttl=10), clock=lambda: clock[0])
        state = verifier.key_store.issuers[issuer.url].state
        token = issuer.mint()
        first = verifier.verify_sync(token)
        keys_before = state.keys
        assert keys_before is not None
        clock[0] += 11  # past the TTL: the next verification waits for a refresh
        assert verifier.verify_sync(issuer.mint()).key_id == key.kid
        assert issuer.requests["/keys"] == 2
        assert issuer.not_modified == (1 if send_etag else 0)
        assert state.keys is keys_before
        assert verifier.verify_sync(token) is first  # still a cache hit
        # A changed set is fetched in full; the unchanged key keeps its object.
        issuer.publish(key, SigningKey.generate("EdDSA", kid="snk_new"))
        clock[0] += 11
        verifier.verify_sync(issuer.mint())
        assert issuer.requests["/keys"] == 3 and issuer.not_modified == (1 if send_etag else 0)
        assert state.keys is not keys_before
        assert [k.kid for k in state.keys.keys] == [key.kid, "snk_new"]
        assert state.keys.keys[0] is keys_before.keys[0]
        assert verifier.verify_sync(token) is first


def test_claims_are_read_only_all_the_way_down() -> None:
    key = SigningKey.generate("ES256")
    with KeySetServer([key]) as issuer:
        verifier = TokenVerifier(GuardSettings(issuer=issuer.url, audience="deployment-api"))
        token = issuer.mint(custom_claims={"teams": ["a", "b"], "meta": {"tier": "gold"}})
        access = verifier.verify_sync(token)
        assert access.claims["scopes"] == ("deploy:applications", "read:deployments")
        with pytest.raises(AttributeError):
            access.claims["scopes"].append("admin:platform")  # type: ignore[attr-defined]
        with pytest.raises(TypeError):
            access.custom_claims["meta"]["tier"] = "platinum"  # type: ignore[index]
        assert access.custom_claims["teams"] == ("a", "b")
        assert access.audience == ("deployment-api",)
        again = verifier.verify_sync(token)
        assert again.custom_claims["meta"]["tier"] == "gold"


def test_header_cache_is_bounded_and_holds_only_valid_headers() -> None:
    from m2m_guard._core.encoding import b64url_encode
    from m2m_guard._core.jws import HeaderCache, parse_compact

    cache = HeaderCache(size=4)
    key = SigningKey.generate("ES256")
    claims = b'{"iss":"x"}'
    for i in range(10):
        token = key.sign_raw(f'{{"alg":"ES256","kid":"k{i}"}}'.encode(), claims)
        assert parse_compact(token, header_cache=cache).kid == f"k{i}"
        assert len(cache.entries) <= 4
    bad = key.sign_raw(b'{"alg":"ES256","crit":["exp"]}', claims)
    with pytest.raises(InvalidToken):
        parse_compact(bad, header_cache=cache)
    assert bad.split(".")[0] not in cache.entries
    # A cached header does not excuse the rest of the token.
    good = key.sign_raw(b'{"alg":"ES256","kid":"k9"}', claims)
    header = good.split(".")[0]
    assert header in cache.entries
    with pytest.raises(InvalidToken) as caught:
        parse_compact(header + "." + b64url_encode(claims) + "=.sig", header_cache=cache)
    assert caught.value.reason == "malformed"
    with pytest.raises(TypeError):
        parse_compact(good, header_cache=cache).header["alg"] = "none"  # type: ignore[index]
