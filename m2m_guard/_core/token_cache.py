"""The verified-token cache's storage: bounded by entries and by the bytes of the tokens held.

Only the policy-free part lives here: a map from a token (its bytes) to what the verifier
stored, evicting oldest-first. Whether a hit may be used (time claims, key still in the
set) is the verifier's decision. Reads take no lock; writes do.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["MAX_CACHED_TOKEN_BYTES", "MAX_TOTAL_BYTES", "SHARE_FROM", "SharedStrings",
           "VerifiedTokenCache"]

T = TypeVar("T")

# A parsed claim set takes a few times its token's size; these two bounds keep the whole cache
# within tens of MiB whatever tokens arrive, while typical M2M tokens (0.5-2 KiB) all fit.
MAX_CACHED_TOKEN_BYTES = 8192
MAX_TOTAL_BYTES = 16 * 1024 * 1024
# Cached claim sets share strings (`SharedStrings`) once the cache holds this many entries:
# below it the saving is at most ~1.3 MB, not worth ~1.3 µs on every insertion.
SHARE_FROM = 1024


class VerifiedTokenCache(Generic[T]):
    """At most `max_entries` entries and `max_bytes` of token bytes; oldest evicted first.

    Keyed by the token bytes themselves: a lookup hashes the key and then compares whole keys,
    so one token is never served another's entry, and no digest is computed per request. The
    bytes held are the keys' (a key's size is its length); tokens over `max_token_bytes` are not
    cached at all. `get` is the plain dictionary lookup (no lock: a dict read is atomic), since it
    runs on every request.
    """

    __slots__ = ("_bytes", "_entries", "_lock", "get", "max_bytes", "max_entries",
                 "max_token_bytes")

    def __init__(self, max_entries: int, *, max_bytes: int = MAX_TOTAL_BYTES,
                 max_token_bytes: int = MAX_CACHED_TOKEN_BYTES) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_token_bytes = max_token_bytes
        self._entries: dict[bytes, T] = {}
        self._bytes = 0
        self._lock = threading.Lock()
        self.get: Callable[[bytes], T | None] = self._entries.get

    def put(self, token: bytes, value: T) -> None:
        size = len(token)
        if size > self.max_token_bytes or self.max_entries <= 0:
            return
        with self._lock:
            entries = self._entries
            if token in entries:
                del entries[token]
                self._bytes -= size
            while entries and (len(entries) >= self.max_entries
                               or self._bytes + size > self.max_bytes):
                oldest = next(iter(entries))
                del entries[oldest]
                self._bytes -= len(oldest)
            entries[token] = value
            self._bytes += size

    def discard(self, token: bytes) -> None:
        with self._lock:
            if self._entries.pop(token, _MISSING) is not _MISSING:
                self._bytes -= len(token)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    @property
    def bytes(self) -> int:
        """The summed size of the tokens whose results are held."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)


_MISSING: Any = object()


class SharedStrings:
    """Claim names, and the claim values that repeat from token to token (issuer, client,
    organization, audience, scopes), shared between cached claim sets, so that 10,000 cached
    tokens do not hold 10,000 copies of "client_id" or of the issuer URL.

    The claim set of the latest token whose names (in order) differ from the template's becomes
    the template; a later claim set with the same names gets the template's name objects, and at
    each sharing position a value equal to the template's is replaced by the template's object.
    Only strings and arrays of strings are shared (an equal value is then the same value of the
    same type), and the raw claims are never mutated after verification, so sharing cannot change
    what a token says. Safe across threads: the template is one tuple, replaced at once.
    """

    __slots__ = ("template",)

    VALUES = frozenset({"iss", "sub", "client_id", "azp", "cid", "appid", "oid", "org_id", "aud",
                        "scope", "scopes", "scp", "typ", "tid", "ver"})

    def __init__(self) -> None:
        self.template: tuple[tuple[str, ...], tuple[int, ...], list[Any]] | None = None

    def share(self, claims: dict[str, Any]) -> dict[str, Any]:
        """`claims` with shared objects where possible (equal values, same names)."""
        names = tuple(claims)
        template = self.template
        if template is None or names != template[0]:
            positions = tuple(i for i, name in enumerate(names) if name in self.VALUES)
            models = [value if _shareable(value) else None for value in claims.values()]
            self.template = (names, positions, models)
            return claims
        shared_names, positions, models = template
        values = list(claims.values())
        for i in positions:
            value, model = values[i], models[i]
            if model is not None and value == model:
                values[i] = model
            elif _shareable(value):
                models[i] = value  # a new client or audience: share this one from now on
        return dict(zip(shared_names, values, strict=True))


def _shareable(value: Any) -> bool:
    kind = type(value)
    if kind is str:
        return len(value) <= 512
    return (kind is list and len(value) <= 64
            and all(type(item) is str and len(item) <= 512 for item in value))
