"""The verified-token cache's storage: bounded by entries and by the bytes of the tokens held.

Only the policy-free part lives here: a map from a token digest (never the token) to what the
verifier stored, evicting oldest-first. Whether a hit may be used (time claims, key still in the
set) is the verifier's decision. Reads take no lock; writes do.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["MAX_CACHED_TOKEN_BYTES", "MAX_TOTAL_BYTES", "VerifiedTokenCache"]

T = TypeVar("T")

# A parsed claim set takes a few times its token's size; these two bounds keep the whole cache
# within tens of MiB whatever tokens arrive, while typical M2M tokens (0.5-2 KiB) all fit.
MAX_CACHED_TOKEN_BYTES = 8192
MAX_TOTAL_BYTES = 16 * 1024 * 1024


class VerifiedTokenCache(Generic[T]):
    """At most `max_entries` entries and `max_bytes` of token bytes; oldest evicted first.

    Tokens over `max_token_bytes` are not cached at all. `get` is the plain dictionary lookup
    (no lock: a dict read is atomic), since it runs on every request.
    """

    __slots__ = ("_bytes", "_entries", "_lock", "_sizes", "get", "max_bytes", "max_entries",
                 "max_token_bytes")

    def __init__(self, max_entries: int, *, max_bytes: int = MAX_TOTAL_BYTES,
                 max_token_bytes: int = MAX_CACHED_TOKEN_BYTES) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_token_bytes = max_token_bytes
        self._entries: dict[bytes, T] = {}
        self._sizes: dict[bytes, int] = {}
        self._bytes = 0
        self._lock = threading.Lock()
        self.get: Callable[[bytes], T | None] = self._entries.get

    def put(self, digest: bytes, value: T, size: int) -> None:
        if size > self.max_token_bytes or self.max_entries <= 0:
            return
        with self._lock:
            entries, sizes = self._entries, self._sizes
            if digest in sizes:
                del entries[digest]
                self._bytes -= sizes.pop(digest)
            while sizes and (len(sizes) >= self.max_entries
                             or self._bytes + size > self.max_bytes):
                oldest = next(iter(sizes))  # both dicts hold the same keys in the same order
                del entries[oldest]
                self._bytes -= sizes.pop(oldest)
            entries[digest] = value
            sizes[digest] = size
            self._bytes += size

    def discard(self, digest: bytes) -> None:
        with self._lock:
            if digest in self._sizes:
                del self._entries[digest]
                self._bytes -= self._sizes.pop(digest)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._sizes.clear()
            self._bytes = 0

    @property
    def bytes(self) -> int:
        """The summed size of the tokens whose results are held."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._sizes)
