"""The DPoP replay stores: the bounded memory store's policy on a fake clock, and the Redis
store against a real redis-server (tests/redis_server.py), reachable and not."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis

from m2m_guard._core.replay import (
    KEY_PREFIX,
    MemoryReplayStore,
    RedisReplayStore,
    make_replay_store,
    replay_key,
    replay_ttl,
)
from m2m_guard.errors import ConfigurationError, ReplayStoreUnavailable, render_error
from m2m_guard.settings import GuardSettings

from .redis_server import MISSING, redis_server, redis_server_binary
from .servers import free_port


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_policy_key_and_ttl() -> None:
    assert replay_key("jkt-a", "1") != replay_key("jkt-b", "1")  # a jti belongs to its key
    assert replay_key("a", "b\x00c") != replay_key("a\x00b", "c")
    assert len(replay_key("k", "j" * 256)) == 64
    assert replay_ttl(iat=1000, now=1000, window=60) == 61
    assert replay_ttl(iat=940, now=1000, window=60) == 1  # the window just closed: at least 1 s
    assert replay_ttl(iat=1060, now=1000, window=60) == 121  # a proof from the near future


def test_memory_store_refuses_a_replay_until_the_window_closes() -> None:
    clock = Clock()
    store = MemoryReplayStore(10, clock=clock)
    assert store.claim("a", 61) is True
    assert store.claim("a", 61) is False
    clock.now += 60
    assert store.claim("a", 61) is False
    clock.now += 1.5
    assert store.claim("a", 61) is True  # expired, so a new proof may reuse it


def test_memory_store_is_bounded_and_fails_closed_when_full() -> None:
    clock = Clock()
    store = MemoryReplayStore(3, clock=clock)
    for key in "abc":
        assert store.claim(key, 10)
    with pytest.raises(ReplayStoreUnavailable) as full:
        store.claim("d", 10)  # never forget a live jti to make room
    assert full.value.status_code == 503 and full.value.reason == "replay_store_unavailable"
    assert len(store) == 3
    assert store.claim("a", 10) is False  # still remembered
    clock.now += 10
    assert store.claim("d", 10) is True  # expired entries make room
    assert len(store) == 1


def test_memory_store_sweeps_entries_that_expire_out_of_order() -> None:
    clock = Clock()
    store = MemoryReplayStore(2, clock=clock)
    assert store.claim("long", 100)
    assert store.claim("short", 1)
    clock.now += 2
    assert store.claim("new", 100)  # "short" expired behind a live entry
    assert store.claim("long", 100) is False


def test_the_unavailable_answer_is_a_503_with_retry_after() -> None:
    rendered = render_error(ReplayStoreUnavailable(retry_after=5), realm="api")
    assert rendered.status == 503
    headers = dict(rendered.headers)
    assert headers["retry-after"] == "5" and "www-authenticate" not in headers
    assert b'"temporarily_unavailable"' in rendered.body


def test_settings_name_the_store() -> None:
    base = {"issuer": "https://issuer.example", "audience": "api"}
    assert isinstance(make_replay_store(GuardSettings(**base).dpop_replay_store),
                      MemoryReplayStore)
    for good in ("memory", "redis://127.0.0.1:6379/0", "rediss://r.example:6380", "unix:///s"):
        GuardSettings(**base, dpop_replay_store=good)
    with pytest.raises(ConfigurationError, match="dpop_replay_store must be memory or a Redis"):
        GuardSettings(**base, dpop_replay_store="memcached://x")
    with pytest.raises(ConfigurationError, match="M2M_GUARD_DPOP_REPLAY_STORE"):
        GuardSettings.from_env({"M2M_GUARD_ISSUER": "https://issuer.example",
                                "M2M_GUARD_AUDIENCE": "api",
                                "M2M_GUARD_DPOP_REPLAY_STORE": "http://x"})


def test_the_redis_server_is_found() -> None:
    """Never a silent skip: without a redis-server the suite says what to install."""
    assert redis_server_binary() is not None, MISSING


# -- Redis, for real -------------------------------------------------------------------------------
def test_redis_store_set_nx_px(redis_url: str) -> None:
    store = RedisReplayStore(redis_url)
    try:
        key = replay_key("jkt", "sync-1")
        assert store.claim(key, 61) is True
        assert store.claim(key, 61) is False
        raw = redis.Redis.from_url(redis_url)
        ttl_ms = raw.pttl(KEY_PREFIX + key)
        assert 0 < ttl_ms <= 61_000  # SET ... PX: the key expires with the proof's window
        raw.close()
    finally:
        store.close()


def test_redis_store_async_shares_what_sync_saw(redis_url: str) -> None:
    store = RedisReplayStore(redis_url)
    key = replay_key("jkt", "async-1")

    async def twice() -> tuple[bool, bool]:
        return await store.claim_async(key, 61), await store.claim_async(key, 61)

    try:
        assert asyncio.run(twice()) == (True, False)
        assert store.claim(key, 61) is False
        # another event loop gets its own client and the same answer
        assert asyncio.run(store.claim_async(key, 61)) is False
    finally:
        store.close()


def test_redis_unreachable_fails_closed() -> None:
    store = RedisReplayStore(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
    with pytest.raises(ReplayStoreUnavailable) as sync:
        store.claim("k", 10)
    assert sync.value.retry_after >= 1
    with pytest.raises(ReplayStoreUnavailable):
        asyncio.run(store.claim_async("k", 10))
    store.close()


def test_redis_going_down_fails_closed(tmp_path: Path) -> None:
    with redis_server(tmp_path) as url:
        store = RedisReplayStore(url, timeout=0.5)
        assert store.claim("before", 10) is True
    # the server is stopped: the connection the store holds is dead, and no new one opens
    with pytest.raises(ReplayStoreUnavailable):
        store.claim("after", 10)
    with pytest.raises(ReplayStoreUnavailable):
        asyncio.run(store.claim_async("after", 10))
    store.close()
