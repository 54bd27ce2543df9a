"""`AccessToken`: the typed, read-only view of a verified token's claims (docs/architecture.md)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any

__all__ = ["AccessToken"]

_EMPTY: Mapping[str, Any] = MappingProxyType({})
_CLIENT_ID_CLAIMS = ("client_id", "azp", "cid", "appid", "sub")
_ORGANIZATION_CLAIMS = ("oid", "org_id")


def _freeze(value: Any) -> Any:
    """JSON containers made read-only all the way down (objects to mappings, arrays to tuples):
    a cached token is shared between requests, so nothing in it may be mutable."""
    if isinstance(value, dict):
        return MappingProxyType({name: _freeze(item) for name, item in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(item) for item in value)
    return value


def _first_string(claims: Mapping[str, Any], names: tuple[str, ...]) -> str | None:
    for name in names:
        value = claims.get(name)
        if isinstance(value, str) and value:
            return value
    return None


def _time(value: Any) -> datetime | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, tz=timezone.utc)
    return None


@dataclass(frozen=True, slots=True, eq=False)
class AccessToken:
    """A verified access token. Build it only through `TokenVerifier`.

    `claims` is the whole verified claim set, read-only all the way down (JSON arrays become
    tuples, objects read-only mappings). The other attributes are the claims
    users look for, already typed: `client_id` is `client_id`, else `azp`, `cid`, `appid`, `sub`;
    `organization_id` is `oid` (Scalekit) else `org_id`; `custom_claims` is Scalekit's object.
    The raw token is never held; `fingerprint` (16 hex digits of its SHA-256) is safe to log.
    """

    # The parsed claims as verified. Private and never handed out: `claims` gives a read-only
    # copy, made on first use (most requests only read scopes and client_id).
    _raw: dict[str, Any] = field(repr=False)
    scopes: frozenset[str]
    algorithm: str = field(repr=False)
    key_id: str | None = field(repr=False)
    fingerprint: str
    _frozen: Mapping[str, Any] | None = field(default=None, repr=False)

    @classmethod
    def from_claims(cls, claims: dict[str, Any], scopes: frozenset[str], *, algorithm: str,
                    key_id: str | None, fingerprint: str) -> AccessToken:
        """For the verifier: `claims` must be a fresh dict nobody else keeps a reference to."""
        # Filled through the slot descriptors: the same result as `cls(...)`, without the
        # frozen dataclass's per-field `object.__setattr__` (this runs once per verification).
        token = _new(cls)
        _SET_RAW(token, claims)
        _SET_SCOPES(token, scopes)
        _SET_ALGORITHM(token, algorithm)
        _SET_KEY_ID(token, key_id)
        _SET_FINGERPRINT(token, fingerprint)
        _SET_FROZEN(token, None)
        return token

    @property
    def claims(self) -> Mapping[str, Any]:
        frozen = self._frozen
        if frozen is None:
            frozen = _freeze(self._raw)
            object.__setattr__(self, "_frozen", frozen)  # same value whoever computes it first
        return frozen

    @property
    def cnf(self) -> Any:
        """The `cnf` (confirmation, RFC 7800) claim of a sender-constrained token, read-only
        (a mapping such as ``{"jkt": ...}`` for DPoP, ``{"x5t#S256": ...}`` for mTLS); None for
        a plain bearer token. Looked up without copying the other claims."""
        if "cnf" not in self._raw:
            return None
        return self.claims["cnf"]

    @property
    def issuer(self) -> str:
        return str(self._raw["iss"])

    @property
    def subject(self) -> str | None:
        value = self._raw.get("sub")
        return value if isinstance(value, str) else None

    @property
    def client_id(self) -> str | None:
        return _first_string(self._raw, _CLIENT_ID_CLAIMS)

    @property
    def audience(self) -> tuple[str, ...]:
        aud = self._raw.get("aud")
        if isinstance(aud, str):
            return (aud,)
        if isinstance(aud, list):
            return tuple(item for item in aud if isinstance(item, str))
        return ()

    @property
    def expires_at(self) -> datetime:
        value = _time(self._raw.get("exp"))
        assert value is not None  # exp is required and checked before an AccessToken exists
        return value

    @property
    def issued_at(self) -> datetime | None:
        return _time(self._raw.get("iat"))

    @property
    def not_before(self) -> datetime | None:
        return _time(self._raw.get("nbf"))

    @property
    def token_id(self) -> str | None:
        value = self._raw.get("jti")
        return value if isinstance(value, str) else None

    @property
    def organization_id(self) -> str | None:
        return _first_string(self._raw, _ORGANIZATION_CLAIMS)

    @property
    def custom_claims(self) -> Mapping[str, Any]:
        value = self.claims.get("custom_claims")
        return value if isinstance(value, Mapping) else _EMPTY

    def has_scopes(self, *scopes: str) -> bool:
        """True when the token holds every one of `scopes`."""
        return self.scopes.issuperset(scopes)

    def has_any_scope(self, *scopes: str) -> bool:
        """True when the token holds at least one of `scopes`."""
        return not self.scopes.isdisjoint(scopes)

    def __repr__(self) -> str:
        return (f"AccessToken(client_id={self.client_id!r}, issuer={self.issuer!r}, "
                f"scopes={sorted(self.scopes)!r}, fingerprint={self.fingerprint!r})")



def _slot_setter(name: str) -> Callable[[Any, Any], None]:
    setter: Callable[[Any, Any], None] = vars(AccessToken)[name].__set__
    return setter


_new = object.__new__
_SET_RAW = _slot_setter("_raw")
_SET_SCOPES = _slot_setter("scopes")
_SET_ALGORITHM = _slot_setter("algorithm")
_SET_KEY_ID = _slot_setter("key_id")
_SET_FINGERPRINT = _slot_setter("fingerprint")
_SET_FROZEN = _slot_setter("_frozen")
