"""Scopes: reading them from verified claims, and the requirements routes place on them.

Claims are read by name (default ``scopes``, ``scope``, ``scp``), each in its own
shape: ``scopes`` an array of scope-token strings (Scalekit), ``scope`` a string of scope-tokens
separated by single spaces (RFC 6749 §3.3, RFC 8693), ``scp`` and any other configured claim
either of the two (Okta and Entra use both; Auth0's ``permissions`` is an array). Any other shape
(a tab, a double space, a number, a nested array, an array where a string belongs) makes that
claim count for nothing: it is ignored, never coerced.

A configured name with a dot is a path into nested objects (Keycloak's ``realm_access.roles``,
``resource_access.<client>.roles``), read through JSON objects only (`_core/claim_paths.py`);
a name holding ``://`` (Auth0's namespaced claims, ``https://example.com/scopes``) is one
top-level claim. A nested claim must be an array of scope-tokens (role lists are): a string
there counts for nothing, like an object.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import GuardError, InsufficientScope
from .claim_paths import ABSENT, ClaimPath, claim_path, read_path
from .requirements import Requirement

if TYPE_CHECKING:
    from ..token import AccessToken

__all__ = ["ScopeReader", "ScopeRequirement", "scope_claim_path", "scopes_from_claims",
           "validate_scopes"]

# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
_SCOPE_STRING = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+(?: [\x21\x23-\x5b\x5d-\x7e]+)*")


_STRING_ONLY = frozenset({"scope"})
_ARRAY_ONLY = frozenset({"scopes"})


def _nested(name: str) -> bool:
    return "." in name and "://" not in name


def _claim_scopes(name: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        if name in _ARRAY_ONLY or _nested(name):
            return ()
        if value == "":
            return ()
        if _SCOPE_STRING.fullmatch(value) is None:
            return ()
        return tuple(value.split(" "))
    if isinstance(value, list) and name not in _STRING_ONLY:
        if all(isinstance(item, str) and _SCOPE_TOKEN.fullmatch(item) for item in value):
            return tuple(value)
    return ()


def scope_claim_path(name: str) -> ClaimPath:
    """The path a configured scope claim names: itself, or its dotted names (module doc);
    `ValueError` for a malformed dotted name."""
    if not _nested(name):
        return (name,)
    return claim_path(name, what="the scope claim path")


def _claim_value(claims: Mapping[str, Any], name: str) -> Any:
    if not _nested(name):
        return claims.get(name)
    value = read_path(claims, scope_claim_path(name))
    return None if value is ABSENT else value


def scopes_from_claims(claims: Mapping[str, Any], names: Iterable[str]) -> frozenset[str]:
    """The union of the scopes found in the claims `names` (see the module doc for shapes)."""
    found: set[str] = set()
    for name in names:
        value = _claim_value(claims, name)
        if value is not None:
            found.update(_claim_scopes(name, value))
    return frozenset(found)


class ScopeReader:
    """`scopes_from_claims` for fixed claim names, remembering the answer per distinct set of
    claim values (a client's tokens carry the same scopes), at most `size` of them.

    The memo key is the claim values themselves (arrays as tuples), so two claim sets share an
    answer only when `scopes_from_claims` would give both the same one.
    """

    __slots__ = ("memo", "names", "read", "size")

    def __init__(self, names: Iterable[str], size: int = 1024, *,
                 read: Callable[[Mapping[str, Any], Iterable[str]], frozenset[str]] | None = None,
                 ) -> None:
        self.names = tuple(names)
        self.size = size
        self.read = read if read is not None else scopes_from_claims
        self.memo: dict[tuple[Any, ...], frozenset[str]] = {}

    def __call__(self, claims: Mapping[str, Any]) -> frozenset[str]:
        key = []
        for name in self.names:
            value = _claim_value(claims, name)
            key.append(tuple(value) if type(value) is list else value)
        memo_key = tuple(key)
        try:
            return self.memo[memo_key]
        except KeyError:
            pass
        except TypeError:  # an unhashable value (an object in an array): not memoised
            return self.read(claims, self.names)
        found = self.read(claims, self.names)
        if len(self.memo) >= self.size:
            self.memo.clear()
        self.memo[memo_key] = found
        return found


def validate_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """Check route scopes at decoration time; `ValueError` for anything but scope-tokens.

    A string with whitespace is refused rather than split, so ``"a b"`` cannot be mistaken for
    ``"a", "b"``.
    """
    result = []
    for scope in scopes:
        if not isinstance(scope, str):
            raise ValueError(f"a scope must be a string, got {scope!r}")
        if _SCOPE_TOKEN.fullmatch(scope) is None:
            raise ValueError(
                f"invalid scope {scope!r}: a scope is one RFC 6749 scope-token (no whitespace, "
                f"quotes or backslashes); pass several scopes as separate arguments"
            )
        result.append(scope)
    if not result:
        raise ValueError("name at least one scope")
    return tuple(dict.fromkeys(result))


@dataclass(frozen=True, slots=True)
class ScopeRequirement(Requirement):
    """All of `all_of` and, when `any_of` is not empty, at least one of `any_of`: the
    `Requirement` of ``require_scopes`` / ``require_any_scope`` (`_core/requirements.py`)."""

    all_of: tuple[str, ...] = ()
    any_of: tuple[str, ...] = ()

    is_scope_rule = True

    def is_met(self, scopes: frozenset[str]) -> bool:
        if not scopes.issuperset(self.all_of):
            return False
        return not self.any_of or not scopes.isdisjoint(self.any_of)

    @property
    def name(self) -> str:
        if self.any_of and not self.all_of:
            return "any_scope:" + " ".join(self.any_of)
        return "scopes:" + " ".join((*self.all_of, *self.any_of))

    def allows(self, token: AccessToken) -> bool:
        return self.is_met(token.scopes)

    def refusal(self, token: AccessToken) -> GuardError:
        """`InsufficientScope` with the scopes to announce."""
        if not token.scopes.issuperset(self.all_of):
            return InsufficientScope(self.all_of)
        return InsufficientScope(self.any_of, any_of=True)

    def check(self, token: AccessToken) -> None:
        """Raise `InsufficientScope` (with the scopes to announce) unless `token` meets this."""
        if not token.scopes.issuperset(self.all_of):
            raise InsufficientScope(self.all_of)
        if self.any_of and token.scopes.isdisjoint(self.any_of):
            raise InsufficientScope(self.any_of, any_of=True)

    def describe(self) -> str:
        if self.any_of and not self.all_of:
            return "one of the scopes " + " ".join(self.any_of)
        text = "the scopes " + " ".join(self.all_of)
        return text + (" and one of " + " ".join(self.any_of) if self.any_of else "")
