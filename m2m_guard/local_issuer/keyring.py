"""Signing keys of the local issuer: persisted, published before they sign, retired after use.

Each key row holds the private key (PKCS#8 PEM), the time it starts signing (`signs_from`) and
the latest `exp` of any token it signed (`max_exp`). From those, at any time `now`:

- the **signing key** is the key with the latest `signs_from` <= now;
- a key is **published** in the JWKS while it is pending (`signs_from` > now: verifiers see it
  before the first token it signs), while it is the signing key, and, once superseded, while a
  token it signed may still be accepted (`max_exp + retire_leeway` > now);
- a superseded key past that point is deleted (private key included).

`rotate(publish_delay)` adds a key that starts signing `publish_delay` seconds later; choose a
delay of at least the JWKS `max-age`, so that every verifier has refreshed its cached key set
before the first token with the new `kid` arrives.

Rotation is bounded, so that no loop of rotations can grow the key set past what verifiers
accept (they refuse a key set over their key limit, and every client then gets a 503):

- while a key is pending, a rotation is refused (`RotationRefused`, naming the pending key and
  when it starts signing);
- the set never holds more than `MAX_KEYS` keys (the active one, at most one pending, retiring
  ones inside their grace period); at the bound a rotation is refused until the first retiring
  key to go (the earliest `remove_after`) is removed, unless `force=True`, which removes that
  key at once (tokens it signed are then refused by verifiers that refresh their key set).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .ids import new_id
from .signing import SigningKey
from .store import Store

__all__ = ["MAX_KEYS", "KeyRing", "KeyState", "RotationRefused"]

MAX_KEYS = 10

_MAX_EXP = 253402300799  # 9999-12-31T23:59:59Z


@dataclass(frozen=True)
class KeyState:
    """One key as the management API reports it (`status`: pending, active or retiring)."""

    kid: str
    alg: str
    status: str
    created: float
    signs_from: float
    max_exp: float
    remove_after: float | None


class RotationRefused(Exception):
    """A rotation that would not be safe now: `kid` is the key in the way (the pending one, or
    the first retiring key to go at the bound) and `until` the epoch time when it no longer is."""

    def __init__(self, message: str, *, kid: str, until: float, reason: str) -> None:
        super().__init__(message)
        self.message = message
        self.kid = kid
        self.until = until
        self.reason = reason  # "pending" or "limit"


class KeyRing:
    """The issuer's keys over a `Store`; thread-safe. Creates the first key when there is none."""

    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time,
                 alg: str = "RS256", rsa_bits: int = 2048, retire_leeway: float = 60.0) -> None:
        self.store = store
        self.alg = alg
        self.rsa_bits = rsa_bits
        self.retire_leeway = retire_leeway
        self._clock = clock
        self._lock = threading.RLock()
        self._loaded: dict[str, SigningKey] = {}
        with self._lock:
            if self.store.query_one("SELECT kid FROM signing_keys LIMIT 1") is None:
                self._add(0.0)

    # -- state -------------------------------------------------------------------------------
    def _rows(self) -> list[Any]:
        return self.store.query(
            "SELECT kid, alg, private_pem, created, signs_from, max_exp FROM signing_keys "
            "ORDER BY signs_from, created")

    def _key(self, row: Any) -> SigningKey:
        key = self._loaded.get(row["kid"])
        if key is None:
            private = serialization.load_pem_private_key(row["private_pem"].encode("ascii"),
                                                         password=None)
            if not isinstance(private, rsa.RSAPrivateKey):  # only RSA keys are ever stored
                raise RuntimeError(f"signing key {row['kid']} is not an RSA key")
            key = self._loaded[row["kid"]] = SigningKey(row["alg"], row["kid"], private)
        return key

    def states(self) -> list[KeyState]:
        """Every key still kept, oldest first, pruning the ones no token needs any more."""
        with self._lock:
            now = self._clock()
            rows = self._rows()
            live = [row for row in rows if row["signs_from"] <= now]
            signer = live[-1]["kid"] if live else None
            result: list[KeyState] = []
            for row in rows:
                if row["signs_from"] > now:
                    status, remove_after = "pending", None
                elif row["kid"] == signer:
                    status, remove_after = "active", None
                else:
                    remove_after = float(row["max_exp"]) + self.retire_leeway
                    if remove_after <= now:
                        self._remove(row["kid"])
                        continue
                    status = "retiring"
                result.append(KeyState(row["kid"], row["alg"], status, row["created"],
                                       row["signs_from"], row["max_exp"], remove_after))
            return result

    def published(self) -> list[SigningKey]:
        """The keys the JWKS shows now (pending, active and retiring)."""
        with self._lock:
            kids = {state.kid for state in self.states()}
            return [self._key(row) for row in self._rows() if row["kid"] in kids]

    def signing_key(self) -> SigningKey:
        """The key that signs now."""
        with self._lock:
            now = self._clock()
            rows = [row for row in self._rows() if row["signs_from"] <= now]
            if not rows:  # only pending keys (the clock went back): sign with the oldest
                rows = self._rows()[:1]
            return self._key(rows[-1])

    # -- changes -----------------------------------------------------------------------------
    def sign(self, claims: dict[str, Any]) -> str:
        """Sign `claims` with the signing key, remembering its `exp` for the key's retirement."""
        with self._lock:
            key = self.signing_key()
            exp = claims.get("exp")
            # Only a NumericDate a verifier could accept extends the key's life (a test may sign
            # `exp: 10**400` on purpose, which no float holds).
            if (isinstance(exp, (int, float)) and not isinstance(exp, bool)
                    and 0 <= exp <= _MAX_EXP):
                with self.store.transaction() as cur:
                    cur.execute("UPDATE signing_keys SET max_exp = MAX(max_exp, ?) WHERE kid = ?",
                                (float(exp), key.kid))
        return key.sign(claims)

    def rotate(self, publish_delay: float, *, force: bool = False) -> KeyState:
        """Add a key that is published now and signs after `publish_delay` seconds.

        Raises `RotationRefused` while a key is pending, and when the set holds `MAX_KEYS` keys
        (unless `force`: the first retiring key to go is then removed to make room).
        """
        if publish_delay < 0:
            raise ValueError("publish_delay must not be negative")
        with self._lock:
            states = self.states()
            pending = [state for state in states if state.status == "pending"]
            if pending:
                when = pending[0].signs_from
                raise RotationRefused(
                    f"Key {pending[0].kid} is pending: it is published and starts signing at "
                    f"{_moment(when)}; rotate again after that.",
                    kid=pending[0].kid, until=when, reason="pending")
            retiring = [state for state in states if state.status == "retiring"]
            while len(states) >= MAX_KEYS and retiring:
                oldest = min(retiring, key=lambda state: state.remove_after or 0.0)
                if not force:
                    until = oldest.remove_after or 0.0
                    raise RotationRefused(
                        f"The key set holds {len(states)} keys, the most it may hold "
                        f"({MAX_KEYS}); the first retiring key to go, {oldest.kid}, is removed "
                        f"at {_moment(until)} (when the last token it signed has expired). Rotate "
                        "after that, or with force=true to remove it now (tokens it signed are "
                        "then refused).", kid=oldest.kid, until=until, reason="limit")
                self._remove(oldest.kid)
                retiring.remove(oldest)
                states = [state for state in states if state.kid != oldest.kid]
            kid = self._add(publish_delay)
            return next(state for state in self.states() if state.kid == kid)

    def _add(self, publish_delay: float) -> str:
        now = self._clock()
        key = SigningKey.generate(self.alg, kid=new_id("snk"), rsa_bits=self.rsa_bits)
        pem = key.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()).decode("ascii")
        with self.store.transaction() as cur:
            cur.execute("INSERT INTO signing_keys (kid, alg, private_pem, created, signs_from) "
                        "VALUES (?, ?, ?, ?, ?)", (key.kid, key.alg, pem, now,
                                                    now + publish_delay))
        self._loaded[key.kid] = key
        return key.kid

    def _remove(self, kid: str) -> None:
        with self.store.transaction() as cur:
            cur.execute("DELETE FROM signing_keys WHERE kid = ?", (kid,))
        self._loaded.pop(kid, None)


def _moment(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
