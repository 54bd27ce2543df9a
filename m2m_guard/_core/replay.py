"""DPoP replay stores: has this proof (`jkt`, `jti`) been used before within its window?

RFC 9449 §11.1: a resource server keeps the `jti` of every proof it accepted for as long as a
proof with that `iat` would be accepted, and refuses a proof whose `jti` it has seen. Two stores:

- `MemoryReplayStore` (the default): a bounded map in this process. Entries expire at the end of
  their proof's window (`iat` + window, wall clock); a full store that holds no expired entry
  refuses new proofs as unavailable (503: never forget a live `jti` to make room, which would
  let its proof be replayed). One process only: N workers each keep their own, so a proof can
  be used once per worker (docs/dpop.md).
- `RedisReplayStore` (``dpop_replay_store = "redis://..."``): ``SET key 1 NX PX ttl`` in Redis
  with redis-py, shared by every worker and host; the blocking client for WSGI, the asyncio one
  for ASGI (one per event loop). When Redis cannot be reached in time the request is refused
  with `ReplayStoreUnavailable` (503 and `Retry-After`): fail closed, never let a proof through
  unchecked.

`replay_key(jkt, jti)` and `replay_ttl(iat, now, window)` are the sans-IO policy both share:
the key is a SHA-256 of the key thumbprint and the `jti` (a client's `jti` cannot collide with
another key's), and the TTL lasts until the proof's window closes (at least one second).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from ..errors import ReplayStoreUnavailable

__all__ = ["MemoryReplayStore", "RedisReplayStore", "ReplayStore", "make_replay_store",
           "replay_key", "replay_ttl"]

KEY_PREFIX = "m2m_guard:dpop:"
#: Seconds a Redis round trip (connect included) may take before the store counts as down.
REDIS_TIMEOUT = 1.0
#: `Retry-After` (seconds) when the store is unavailable.
RETRY_AFTER = 5


def replay_key(jkt: str, jti: str) -> str:
    """The store key of a proof: its key's thumbprint and its `jti`, hashed (bounded size)."""
    return hashlib.sha256(f"{len(jkt)}:{jkt}{jti}".encode("utf-8", "surrogatepass")).hexdigest()


def replay_ttl(iat: float, now: float, window: float) -> float:
    """Seconds to remember a proof issued at `iat`: until `iat + window`, the last moment a
    proof with that `iat` is accepted (plus one second for rounding), at least one second."""
    return max(1.0, iat + window - now + 1.0)


class ReplayStore:
    """Where the `jti`s of accepted proofs are kept. `claim(key, ttl)` records `key` for `ttl`
    seconds and returns True when it was not there (the proof is fresh), False for a replay;
    it raises `ReplayStoreUnavailable` when it cannot tell. `claim_async` is the same for
    asyncio servers."""

    name = "replay"

    def claim(self, key: str, ttl: float) -> bool:
        raise NotImplementedError

    async def claim_async(self, key: str, ttl: float) -> bool:
        return self.claim(key, ttl)

    def close(self) -> None:
        """Release connections (a no-op in memory)."""


class MemoryReplayStore(ReplayStore):
    """The bounded in-process store (see the module doc). `clock` is the wall clock (the
    proofs' `iat` is wall-clock time); tests pass a fake one."""

    name = "memory"

    def __init__(self, max_entries: int = 100_000, *,
                 clock: Callable[[], float] = time.time) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._clock = clock
        # key -> expiry; insertion order is nearly expiry order (one window for all proofs),
        # so expired entries are found at the front.
        self._entries: dict[str, float] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def _purge(self, now: float) -> None:
        """Drop expired entries from the front; bounded by the map's size."""
        entries = self._entries
        expired = []
        for key, expiry in entries.items():
            if expiry > now:
                break
            expired.append(key)
        for key in expired:
            del entries[key]

    def claim(self, key: str, ttl: float) -> bool:
        now = self._clock()
        with self._lock:
            entries = self._entries
            expiry = entries.get(key)
            if expiry is not None:
                if expiry > now:
                    return False
                del entries[key]
            if len(entries) >= self.max_entries:
                self._purge(now)
                if len(entries) >= self.max_entries:
                    # Entries expire nearly in order, but a later entry may expire first (a
                    # shorter ttl): one full sweep before giving up.
                    for stale in [k for k, e in entries.items() if e <= now]:
                        del entries[stale]
                    if len(entries) >= self.max_entries:
                        raise ReplayStoreUnavailable(
                            "The DPoP replay store is full; retry shortly.",
                            retry_after=RETRY_AFTER)
            entries[key] = now + ttl
            return True


def _unavailable() -> ReplayStoreUnavailable:
    return ReplayStoreUnavailable("The DPoP replay store cannot be reached; retry shortly.",
                                  retry_after=RETRY_AFTER)


class RedisReplayStore(ReplayStore):
    """The Redis store (see the module doc). `url` is a redis-py URL (``redis://``,
    ``rediss://``, ``unix://``); redis-py is the ``[redis]`` extra."""

    name = "redis"

    def __init__(self, url: str, *, timeout: float = REDIS_TIMEOUT) -> None:
        try:
            import redis
            import redis.asyncio
        except ImportError:  # pragma: no cover - the extra is part of the test set-up
            from ..errors import ConfigurationError
            raise ConfigurationError(
                "dpop_replay_store is a Redis URL but redis-py is not installed: "
                "pip install 'm2m-guard[redis]'") from None
        self.url = url
        self._timeout = timeout
        self._redis = redis
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self._async_errors: tuple[type[BaseException], ...] = (
            asyncio.TimeoutError, redis.RedisError, OSError)
        self._sync: Any = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout,
            retry_on_timeout=False)
        # One asyncio client per event loop: redis-py's connections belong to the loop that
        # opened them (a test client may run each request on a loop of its own).
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = \
            weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    @staticmethod
    def _px(ttl: float) -> int:
        return max(1, math.ceil(ttl * 1000))

    def claim(self, key: str, ttl: float) -> bool:
        try:
            return bool(self._sync.set(KEY_PREFIX + key, b"1", nx=True, px=self._px(ttl)))
        except self._errors:
            raise _unavailable() from None

    def _async_client(self) -> Any:
        loop = asyncio.get_running_loop()
        client = self._async.get(loop)
        if client is None:
            with self._lock:
                client = self._async.get(loop)
                if client is None:
                    client = self._redis.asyncio.Redis.from_url(
                        self.url, socket_timeout=self._timeout,
                        socket_connect_timeout=self._timeout, retry_on_timeout=False)
                    self._async[loop] = client
        return client

    async def claim_async(self, key: str, ttl: float) -> bool:
        try:
            client = self._async_client()
            # The client's own timeouts bound each socket operation; this bounds the whole.
            result = await asyncio.wait_for(
                client.set(KEY_PREFIX + key, b"1", nx=True, px=self._px(ttl)),
                timeout=self._timeout * 2)
        except self._async_errors:
            raise _unavailable() from None
        return bool(result)

    def close(self) -> None:
        self._sync.close()


def make_replay_store(url: str | None, *, max_entries: int = 100_000) -> ReplayStore:
    """The store `dpop_replay_store` names: None or ``memory`` for the in-process store,
    a ``redis://`` / ``rediss://`` / ``unix://`` URL for Redis."""
    if url is None or url == "memory":
        return MemoryReplayStore(max_entries)
    return RedisReplayStore(url)
