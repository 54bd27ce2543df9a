"""The key-set cache policy, sans-IO: plain functions of a `KeySetState` and a clock.

The numbers and rules are listed in docs/architecture.md ("Where each rule lives").

Nothing here does I/O or reads the time; the verifier passes `now` (monotonic seconds) and
performs what a `Plan` asks for. The rules:

- A fetched set lives `ttl` seconds: the TTL the user configured, used as given, or else the
  response's `Cache-Control: max-age` clamped to [`min_ttl`, `max_ttl`], or else 600 s.
- From `ttl - min(ttl / 10, 60)` on, requests keep using the set and ask for a background refresh.
- Past `ttl`, while the issuer is believed healthy, a request waits for the refresh (bounded by
  the HTTP timeout). Once a refresh has failed, the last good set is served (stale-if-error) until
  `max_stale` seconds past its expiry, with background retries.
- After a failure, fetches back off exponentially (1 s, 2 s, 4 s, ...) up to `cooldown`, and at
  least as long as the issuer's `Retry-After` asked (also capped at `cooldown`); a cold cache
  during backoff answers "unavailable, retry after N s" at once.
- An unknown `kid` may trigger a refetch at most once per `cooldown`; kids still unknown after a
  fetch are remembered (bounded) so they are refused without waiting.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from enum import Enum

from ..settings import DEFAULT_JWKS_TTL, GuardSettings
from .keys import KeySet

__all__ = [
    "CachePolicy",
    "Fetch",
    "KeySetState",
    "Plan",
    "parse_max_age",
]

_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d{1,10})\"?\s*(?:,|$)", re.IGNORECASE)
_NO_CACHE = re.compile(r"(?:^|,)\s*(?:no-store|no-cache)\s*(?:,|$|=)", re.IGNORECASE)
_UNKNOWN_KIDS_BOUND = 1024


def parse_max_age(cache_control: str | None) -> float | None:
    """Seconds from a `Cache-Control` header: `max-age`, 0 for `no-store`/`no-cache`, else None."""
    if not cache_control:
        return None
    if _NO_CACHE.search(cache_control):
        return 0.0
    match = _MAX_AGE.search(cache_control)
    return float(match.group(1)) if match else None


class Fetch(Enum):
    """What the verifier must do about fetching before or while using a key set."""

    NONE = "none"
    BACKGROUND = "background"  # use the keys now, refresh in the background
    WAIT = "wait"  # join or start a fetch and wait for it, then plan again


@dataclass(frozen=True, slots=True)
class Plan:
    """The decision for one request: the keys to use now (or None), and what to fetch."""

    keys: KeySet | None
    fetch: Fetch
    retry_after: float = 0.0


@dataclass(slots=True)
class KeySetState:
    """What is known about one issuer's key set. Mutated only through `CachePolicy`."""

    keys: KeySet | None = None
    fetched_at: float = -math.inf
    ttl: float = 0.0
    etag: str | None = None
    last_success_wall: float | None = None
    last_error: str | None = None
    last_error_at: float = -math.inf
    last_error_wall: float | None = None
    failures: int = 0
    retry_after: float = 0.0  # what the issuer's latest failed answer asked for (Retry-After)
    last_refetch: float = -math.inf
    fetches: int = 0
    unknown_kids: OrderedDict[str, None] = field(default_factory=OrderedDict)

    @property
    def failing(self) -> bool:
        """True when the latest fetch attempt failed."""
        return self.last_error_at > self.fetched_at


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """The key-set numbers (docs/architecture.md) and the decisions made with them."""

    ttl: float | None = None
    min_ttl: float = 60.0
    max_ttl: float = 86400.0
    cooldown: float = 30.0
    max_stale: float = 86400.0

    @classmethod
    def from_settings(cls, settings: GuardSettings) -> CachePolicy:
        return cls(
            ttl=settings.jwks_cache_ttl,
            min_ttl=settings.jwks_min_ttl,
            max_ttl=settings.jwks_max_ttl,
            cooldown=settings.jwks_refetch_cooldown,
            max_stale=settings.jwks_max_stale,
        )

    # -- derived times -------------------------------------------------------------------
    def ttl_for(self, max_age: float | None) -> float:
        """The lifetime of a freshly fetched set given the response's max-age (or None)."""
        if self.ttl is not None:
            return self.ttl
        if max_age is None:
            return min(max(DEFAULT_JWKS_TTL, self.min_ttl), self.max_ttl)
        return min(max(max_age, self.min_ttl), self.max_ttl)

    def refresh_at(self, state: KeySetState) -> float:
        return state.fetched_at + state.ttl - min(state.ttl / 10.0, 60.0)

    def expires_at(self, state: KeySetState) -> float:
        return state.fetched_at + state.ttl

    def usable_until(self, state: KeySetState) -> float:
        return state.fetched_at + state.ttl + self.max_stale

    def backoff(self, state: KeySetState) -> float:
        """Seconds to wait after the latest failure before fetching again."""
        if not state.failing:
            return 0.0
        return min(self.cooldown, max(2.0 ** min(state.failures - 1, 30), state.retry_after))

    def retry_at(self, state: KeySetState) -> float:
        return state.last_error_at + self.backoff(state)

    # -- decisions -----------------------------------------------------------------------
    def plan(self, state: KeySetState, now: float) -> Plan:
        """Which keys a request may use at `now`, and whether a fetch is needed."""
        may_fetch = now >= self.retry_at(state)
        usable = state.keys is not None and now < self.usable_until(state)
        if not usable:
            if may_fetch:
                return Plan(None, Fetch.WAIT)
            return Plan(None, Fetch.NONE, retry_after=max(1.0, self.retry_at(state) - now))
        if now < self.refresh_at(state):
            return Plan(state.keys, Fetch.NONE)
        if now < self.expires_at(state) or state.failing:
            return Plan(state.keys, Fetch.BACKGROUND if may_fetch else Fetch.NONE)
        return Plan(state.keys, Fetch.WAIT)

    def may_refetch_for(self, state: KeySetState, kid: str | None, now: float) -> bool:
        """Whether an unknown `kid` may trigger a fetch now (once per cooldown, not in backoff)."""
        if kid is not None and kid in state.unknown_kids:
            return False
        return now >= state.last_refetch + self.cooldown and now >= self.retry_at(state)

    # -- state changes -------------------------------------------------------------------
    def note_refetch(self, state: KeySetState, now: float) -> None:
        state.last_refetch = now

    def note_unknown_kid(self, state: KeySetState, kid: str) -> None:
        state.unknown_kids[kid] = None
        state.unknown_kids.move_to_end(kid)
        while len(state.unknown_kids) > _UNKNOWN_KIDS_BOUND:
            state.unknown_kids.popitem(last=False)

    def on_success(self, state: KeySetState, keys: KeySet | None, now: float, wall: float,
                   *, max_age: float | None, etag: str | None) -> None:
        """Record a fetched set (`keys=None` means 304 Not Modified: keep the current one)."""
        if keys is not None:
            state.keys = keys.reusing(state.keys)
            state.unknown_kids.clear()
        state.fetched_at = now
        state.ttl = self.ttl_for(max_age)
        state.etag = etag
        state.last_success_wall = wall
        state.failures = 0
        state.fetches += 1

    def on_failure(self, state: KeySetState, error: str, now: float, wall: float,
                   *, retry_after: float | None = None) -> None:
        """Record a failed fetch; `retry_after` is the issuer's `Retry-After`, in seconds."""
        state.retry_after = retry_after or 0.0
        state.last_error = error
        state.last_error_at = now
        state.last_error_wall = wall
        state.failures += 1
        state.fetches += 1
