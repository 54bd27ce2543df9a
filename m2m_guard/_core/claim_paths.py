"""Claim paths: naming a claim nested in JSON objects, and reading it strictly.

A path is written as a dotted string (``"custom_claims.environment"``) or as a tuple of names
(``("https://example.com/claims", "tier")``, for a name that holds a dot, as Auth0's namespaced
claims do). Reading walks JSON objects only: a step through anything else (an array, a string, a
number) finds nothing, and nothing is coerced. The same reading serves claim rules
(`_core/requirements.py`) and nested scope claims (`_core/scopes.py`, Keycloak's
``realm_access.roles``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["ABSENT", "ClaimPath", "claim_path", "path_text", "read_path"]

ClaimPath = tuple[str, ...]
_MAX_DEPTH = 8  # tokens nest a few levels; a longer path is a mistake


class _Absent:
    __slots__ = ()

    def __repr__(self) -> str:
        return "ABSENT"


#: What `read_path` returns when the path leads nowhere (distinct from a JSON null).
ABSENT: Any = _Absent()


def claim_path(path: object, *, what: str = "a claim path") -> ClaimPath:
    """`path` (a dotted string or a tuple of names) as a tuple; `ValueError` naming the mistake
    for an empty path, an empty name, a non-string or a path deeper than 8 names."""
    if isinstance(path, str):
        names = tuple(path.split("."))
        shown = repr(path)
    elif isinstance(path, tuple) and path:
        names = path
        shown = repr(path)
    else:
        raise ValueError(f"{what} must be a dotted string such as 'custom_claims.environment' "
                         f"or a non-empty tuple of names, got {path!r}")
    for name in names:
        if not isinstance(name, str) or not name or name != name.strip():
            raise ValueError(f"{what} {shown} has an empty or invalid name {name!r} (write "
                             f"nested names with single dots, or as a tuple)")
        if not name.isprintable():
            raise ValueError(f"{what} {shown} has a name with unprintable characters")
    if len(names) > _MAX_DEPTH:
        raise ValueError(f"{what} {shown} is deeper than {_MAX_DEPTH} names")
    return names


def read_path(claims: Mapping[str, Any], path: ClaimPath) -> Any:
    """The value at `path` in `claims`, or `ABSENT` when a step is missing or is not a JSON
    object (verified claims hold plain dicts; a read-only mapping is walked the same way)."""
    value: Any = claims
    for name in path:
        if type(value) is not dict and not isinstance(value, Mapping):
            return ABSENT
        value = value.get(name, ABSENT)
        if value is ABSENT:
            return ABSENT
    return value


def path_text(path: ClaimPath) -> str:
    """`path` as users wrote it: dotted, unless a name holds a dot (then the tuple)."""
    if any("." in name for name in path):
        return repr(path)
    return ".".join(path)
