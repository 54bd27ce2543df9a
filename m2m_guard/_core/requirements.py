"""Requirements on a verified token: the one rule language of every adapter.

A `Requirement` says whether a verified `AccessToken` may proceed (`allows`) and, when not, the
refusal to answer with (`refusal`). The kinds:

- `ScopeRequirement` (`_core/scopes.py`): ``require_scopes`` / ``require_any_scope``; refused
  with `InsufficientScope` (403 ``insufficient_scope``, the ``scope`` challenge);
- `ClaimRequirement`: a claim, at a path (``custom_claims.environment``), equal to one of the
  allowed values; the value read strictly (`_core/claim_paths.py`): a JSON string matches only a
  string, a number only a number (``true`` is not ``1``), an array or an object matches nothing;
- `ClientRequirement`: the token's client id (`AccessToken.client_id`) in an allow-list;
- `PredicateRequirement`: a named function of the token that returns exactly True;
- `AllOf` / `AnyOf`: every one / at least one of other requirements.

All of them are built, and validated, when the rule is written (at import time for a decorated
route): a typo or an ill-typed value is a `ValueError` naming it, never a 500 later. Any
refusal that is not about scopes is `AccessDenied` (403 with a bare challenge) naming the rule
that failed, and never a claim value. `AllOf` refuses with its first failing member's refusal,
so ``all_of(require_scopes("a"), require_claims(...))`` without ``a`` is still
``insufficient_scope``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, cast

from ..errors import AccessDenied, GuardError
from .claim_paths import ABSENT, ClaimPath, claim_path, path_text, read_path
from .providers import preset

if TYPE_CHECKING:
    from ..settings import GuardSettings
    from ..token import AccessToken

__all__ = ["AllOf", "AnyOf", "ClaimRequirement", "ClaimValue", "ClientRequirement",
           "MachineTokenRequirement", "PredicateRequirement", "Requirement", "claim_requirements",
           "settings_requirement", "validate_rule_name"]

logger = logging.getLogger("m2m_guard")

#: A value a claim may be required to have: a JSON string, integer or boolean.
ClaimValue = str | int | bool
# Printable ASCII without quotes and backslashes: safe in logs and descriptions as is.
_RULE_NAME = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]{1,64}")


class Requirement:
    """A rule a verified token must satisfy (see the module doc). Subclasses implement
    `allows`, `refusal` and `name`; `check` raises the refusal when `allows` is False."""

    __slots__ = ()

    @property
    def name(self) -> str:
        raise NotImplementedError

    def allows(self, token: AccessToken) -> bool:
        raise NotImplementedError

    def refusal(self, token: AccessToken) -> GuardError:
        """The refusal of a token `allows` refused."""
        return AccessDenied(self.name, reason="rule_failed")

    def check(self, token: AccessToken) -> None:
        """Raise the refusal unless `token` satisfies this requirement."""
        if not self.allows(token):
            raise self.refusal(token)

    def describe(self) -> str:
        """What a client needs, for documentation (FastAPI's OpenAPI): the rule in words,
        expected values included (they are the API's configuration, not a token's claims)."""
        return self.name

    def parts(self) -> tuple[Requirement, ...]:
        """The requirements that must all hold for this one to hold (itself, or an `AllOf`'s
        members, flattened): for documentation."""
        return (self,)

    #: True for scope requirements (refused with `InsufficientScope`).
    is_scope_rule = False


def validate_rule_name(name: object) -> str:
    """A rule's name for logs and answers: 1-64 printable ASCII characters, no quotes."""
    if not isinstance(name, str) or _RULE_NAME.fullmatch(name) is None:
        raise ValueError(f"a rule name must be 1-64 printable ASCII characters without quotes "
                         f"or backslashes, got {name!r}")
    return name


def _claim_value(path: str, value: object) -> ClaimValue:
    if isinstance(value, (str, int)):
        return value  # bool is an int: kept, and told apart by type when compared
    raise ValueError(f"claim {path} may be required to equal a string, an integer or a "
                     f"boolean, got {value!r} ({type(value).__name__})")


class ClaimRequirement(Requirement):
    """The claim at `path` equals one of `values` (same JSON type and value)."""

    __slots__ = ("_bools", "_ints", "_name", "_strings", "path", "values")

    def __init__(self, path: str | ClaimPath, values: ClaimValue | Iterable[ClaimValue]) -> None:
        self.path = claim_path(path, what="claim path")
        text = path_text(self.path)
        if isinstance(values, (str, int)):
            items: tuple[ClaimValue, ...] = (_claim_value(text, values),)
        elif isinstance(values, Iterable) and not isinstance(values, (Mapping, bytes)):
            items = tuple(_claim_value(text, value) for value in values)
        else:
            raise ValueError(f"claim {text} needs a value or a list of values, got {values!r}")
        if not items:
            raise ValueError(f"claim {text} needs at least one allowed value, got none")
        self.values = tuple(dict.fromkeys((type(v), v) for v in items))
        self._strings = frozenset(v for t, v in self.values if t is str)
        self._ints = frozenset(v for t, v in self.values if t is int)
        self._bools = frozenset(v for t, v in self.values if t is bool)
        self._name = "claim:" + text

    @property
    def name(self) -> str:
        return self._name

    def allows(self, token: AccessToken) -> bool:
        value: Any = token._raw  # the verified claims, as parsed: plain dicts
        for name in self.path:  # `read_path`, inlined: this runs on every request
            if type(value) is not dict and not isinstance(value, Mapping):
                return False
            value = value.get(name, ABSENT)
        kind = type(value)  # exact JSON types: a bool is not an int, ABSENT matches nothing
        if kind is str:
            return value in self._strings
        if kind is int:
            return value in self._ints
        if kind is bool:
            return value in self._bools
        return False

    def check(self, token: AccessToken) -> None:
        if not self.allows(token):
            raise AccessDenied(self._name, reason="claim_refused")

    def refusal(self, token: AccessToken) -> GuardError:
        return AccessDenied(self._name, reason="claim_refused")

    def describe(self) -> str:
        shown = ", ".join(_json_text(value) for _, value in self.values)
        which = "equal to" if len(self.values) == 1 else "one of"
        return f"claim {path_text(self.path)} {which} {shown}"


def _json_text(value: ClaimValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return '"' + value + '"' if value.isprintable() else repr(value)


class ClientRequirement(Requirement):
    """The token's client id (`AccessToken.client_id`) is one of `clients`."""

    __slots__ = ("_name", "clients")

    def __init__(self, clients: Iterable[str], *, name: str = "clients") -> None:
        self._name = name
        if isinstance(clients, str):
            clients = (clients,)
        items = tuple(clients)
        for client in items:
            if not isinstance(client, str) or not client or client != client.strip():
                raise ValueError(f"a client id must be a non-empty string without surrounding "
                                 f"spaces, got {client!r}")
        if not items:
            raise ValueError("name at least one client id")
        self.clients = frozenset(items)

    @property
    def name(self) -> str:
        return self._name

    def allows(self, token: AccessToken) -> bool:
        return token.client_id in self.clients

    def refusal(self, token: AccessToken) -> GuardError:
        return AccessDenied(self._name, reason="client_refused")

    def describe(self) -> str:
        return "client id one of " + ", ".join(sorted(self.clients))


class PredicateRequirement(Requirement):
    """`predicate(token)` returns exactly True. An exception in it is a refusal, logged with
    its traceback (a bug in a rule must not become a 500, nor let a request through)."""

    __slots__ = ("_name", "predicate")

    def __init__(self, predicate: Callable[[AccessToken], bool], name: str) -> None:
        if not callable(predicate):
            raise ValueError(f"require() needs a callable taking the AccessToken, "
                             f"got {predicate!r}")
        self.predicate = predicate
        self._name = validate_rule_name(name)

    @property
    def name(self) -> str:
        return self._name

    def allows(self, token: AccessToken) -> bool:
        try:
            return self.predicate(token) is True
        except Exception:
            logger.exception("m2m_guard rule %s raised; the request is refused", self._name)
            return False


def _members(what: str, rules: Iterable[Any]) -> tuple[Requirement, ...]:
    members = []
    for rule in rules:
        requirement = getattr(rule, "requirement", rule)  # a decorator made by require_*()
        if not isinstance(requirement, Requirement):
            raise ValueError(f"{what}() takes rules (require_scopes, require_claims, "
                             f"require_clients, require, all_of, any_of), got {rule!r}")
        members.append(requirement)
    if not members:
        raise ValueError(f"{what}() needs at least one rule")
    return tuple(members)


class AllOf(Requirement):
    """Every one of `members`; refused with the first failing member's refusal."""

    __slots__ = ("_name", "members")

    def __init__(self, members: Iterable[Any]) -> None:
        self.members = _members("all_of", members)
        self._name = "all_of(" + ", ".join(m.name for m in self.members) + ")"

    @property
    def name(self) -> str:
        return self._name

    def allows(self, token: AccessToken) -> bool:
        return all(member.allows(token) for member in self.members)

    def check(self, token: AccessToken) -> None:
        for member in self.members:
            member.check(token)

    def refusal(self, token: AccessToken) -> GuardError:
        for member in self.members:
            if not member.allows(token):
                return member.refusal(token)
        return AccessDenied(self._name)  # pragma: no cover - only asked after a refusal

    def describe(self) -> str:
        return " and ".join(m.describe() for m in self.members)

    def parts(self) -> tuple[Requirement, ...]:
        return tuple(part for member in self.members for part in member.parts())


class AnyOf(Requirement):
    """At least one of `members`. Refused with `AccessDenied` naming this rule; when every
    member is a scope requirement, with `InsufficientScope` announcing the first
    alternative's scopes (a client that gets them is let in)."""

    __slots__ = ("_name", "members")

    def __init__(self, members: Iterable[Any]) -> None:
        self.members = _members("any_of", members)
        self._name = "any_of(" + ", ".join(m.name for m in self.members) + ")"

    @property
    def name(self) -> str:
        return self._name

    def allows(self, token: AccessToken) -> bool:
        return any(member.allows(token) for member in self.members)

    def refusal(self, token: AccessToken) -> GuardError:
        if all(member.is_scope_rule for member in self.members):
            return self.members[0].refusal(token)
        return AccessDenied(self._name, reason="rule_failed")

    def describe(self) -> str:
        return "any of: " + "; or ".join(m.describe() for m in self.members)


def claim_requirements(claims: Mapping[Any, Any]) -> tuple[ClaimRequirement, ...]:
    """One `ClaimRequirement` per entry of `claims` (path: value or list of values)."""
    if not isinstance(claims, Mapping):
        raise ValueError(f"claims must be a mapping of claim paths to values, got {claims!r}")
    return tuple(ClaimRequirement(path, values) for path, values in claims.items())


class MachineTokenRequirement(Requirement):
    """The token is a client-credentials (machine) token, as its provider tells
    (`_core/providers.py`: Auth0 ``gty``, Entra ``idtyp``, Cognito ``token_use``, Okta
    ``sub`` = ``cid``)."""

    __slots__ = ("absent", "same", "values")

    def __init__(self, provider: str) -> None:
        chosen = preset(provider)
        self.values = tuple((claim_path(path), value)
                            for path, value in (chosen.machine or {}).items())
        self.absent = tuple(claim_path(path) for path in chosen.machine_absent)
        self.same = chosen.machine_same
        if not self.values and self.same is None:
            raise ValueError(f"provider {provider!r} does not tell machine tokens apart")

    @property
    def name(self) -> str:
        return "machine_token"

    def allows(self, token: AccessToken) -> bool:
        claims = token._raw
        for path, value in self.values:
            found = read_path(claims, path)
            if type(found) is not str or found != value:
                return False
        if any(read_path(claims, path) is not ABSENT for path in self.absent):
            return False
        if self.same is not None:
            first, second = (claims.get(name) for name in self.same)
            return type(first) is str and first != "" and first == second
        return True

    def refusal(self, token: AccessToken) -> GuardError:
        return AccessDenied("machine_token", reason="not_machine_token")


def settings_requirement(settings: GuardSettings) -> Requirement | None:
    """The app-wide rules `settings` turn on (`machine_tokens_only`, `allowed_clients`,
    `required_claim_values`, in that order), as one requirement; None without any. The
    verifier applies it before a token enters the verified-token cache."""
    members: list[Requirement] = []
    if settings.machine_tokens_only:
        members.append(MachineTokenRequirement(settings.provider))
    if settings.allowed_clients:
        members.append(ClientRequirement(settings.allowed_clients, name="allowed_clients"))
    entries = cast("tuple[tuple[Any, tuple[ClaimValue, ...]], ...]",
                   settings.required_claim_values)  # normalised by the settings
    for path, values in entries:
        members.append(ClaimRequirement(path, values))
    if not members:
        return None
    return members[0] if len(members) == 1 else AllOf(members)
