"""Where the current request's token lives, and the rule decorators that read it.

Adapters put the verified `AccessToken` in a context variable for the duration of a request, so
`current_token()` works in any framework, in sync and async code (Starlette runs sync endpoints
in a thread with the context copied).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar, Token
from typing import Any, TypeVar, cast

from ..errors import MissingToken
from ..token import AccessToken
from .requirements import (
    AllOf,
    AnyOf,
    ClaimValue,
    ClientRequirement,
    PredicateRequirement,
    Requirement,
    claim_requirements,
)
from .scopes import ScopeRequirement, validate_scopes
from .storage import REQUEST_ATTRIBUTE, TOKEN_KEY

__all__ = ["Rule", "all_of", "any_of", "current_token", "require", "require_any_scope",
           "require_claims", "require_clients", "require_scopes", "reset_current",
           "reset_current_token", "route_requirements", "scope_requirements", "set_current",
           "set_current_token"]

F = TypeVar("F", bound=Callable[..., Any])

_CURRENT: ContextVar[AccessToken | None] = ContextVar("m2m_guard_token", default=None)


def current_token() -> AccessToken | None:
    """The verified token of the request being handled, or None (public path, no guard)."""
    return _CURRENT.get()


def set_current_token(token: AccessToken | None) -> Token[AccessToken | None]:
    """For adapters: make `token` current; pass the result to `reset_current_token`."""
    return _CURRENT.set(token)


def reset_current_token(marker: Token[AccessToken | None]) -> None:
    """For adapters: undo `set_current_token`."""
    _CURRENT.reset(marker)


# The same two, without the wrapper call (adapters' hot paths).
set_current = _CURRENT.set
reset_current = _CURRENT.reset


def _token_from_arguments(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> AccessToken | None:
    """Find the token on a request object among the arguments (Starlette `Request`,
    ASGI scope, Django's and DRF's `request.m2m_token`), for code that runs outside the context
    the middleware set (e.g. DRF authentication without the Django middleware)."""
    for value in (*args, *kwargs.values()):
        found = getattr(value, REQUEST_ATTRIBUTE, None)
        if isinstance(found, AccessToken):
            return found
        scope = getattr(value, "scope", None)
        if isinstance(scope, Mapping):
            found = scope.get(TOKEN_KEY)
            if isinstance(found, AccessToken):
                return found
    return None


def _enforce(requirement: Requirement, args: tuple[Any, ...],
             kwargs: Mapping[str, Any]) -> None:
    token = _CURRENT.get() or _token_from_arguments(args, kwargs)
    if token is None:
        raise MissingToken()
    requirement.check(token)


_REQUIREMENTS = "__m2m_guard_requirements__"


def route_requirements(func: Callable[..., Any]) -> tuple[Requirement, ...]:
    """The requirements the rule decorators placed on `func` (outermost last), for adapters
    that document them (FastAPI's OpenAPI document)."""
    found = getattr(func, _REQUIREMENTS, ())
    return found if isinstance(found, tuple) else ()


def scope_requirements(func: Callable[..., Any]) -> tuple[ScopeRequirement, ...]:
    """The scope requirements among `route_requirements(func)`, those of `all_of` included."""
    return tuple(part for requirement in route_requirements(func)
                 for part in requirement.parts() if isinstance(part, ScopeRequirement))


def _decorator(requirement: Requirement) -> Callable[[F], F]:
    check = requirement.check
    current = _CURRENT.get

    def decorate(func: F) -> F:
        requirements = (*route_requirements(func), requirement)
        if inspect.iscoroutinefunction(func):
            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                token = current()
                if token is None:
                    _enforce(requirement, args, kwargs)
                else:
                    check(token)
                return await func(*args, **kwargs)

            async_wrapper.__dict__[_REQUIREMENTS] = requirements
            return cast(F, async_wrapper)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            token = current()
            if token is None:  # outside the context an adapter set: look at the arguments
                _enforce(requirement, args, kwargs)
            else:
                check(token)
            return func(*args, **kwargs)

        wrapper.__dict__[_REQUIREMENTS] = requirements
        return cast(F, wrapper)

    return decorate


class Rule:
    """A rule on the verified token, made by `require_scopes`, `require_any_scope`,
    `require_claims`, `require_clients`, `require`, `all_of` or `any_of`.

    Decorate a sync or async endpoint with it (``@require_claims(...)``) and the endpoint runs
    only for a token that satisfies it (the signature is kept); compose it with `all_of` /
    `any_of`; give it to FastAPI's ``RequireRule`` for a dependency. `requirement` is the
    validated rule (`_core/requirements.py`); `name` names it in logs and refusals.
    """

    __slots__ = ("_decorate", "requirement")

    def __init__(self, requirement: Requirement) -> None:
        self.requirement = requirement
        self._decorate = _decorator(requirement)

    @property
    def name(self) -> str:
        return self.requirement.name

    def __call__(self, func: F) -> F:
        return self._decorate(func)

    def __repr__(self) -> str:
        return f"Rule({self.requirement.name})"


def require_scopes(*scopes: str) -> Rule:
    """Decorate a sync or async endpoint so that it runs only for tokens holding all `scopes`.

    Raises `ValueError` at decoration time for an empty list or a scope with whitespace. At call
    time raises `MissingToken` without a token and `InsufficientScope` without the scopes; the
    guard renders both (401, 403 with the `scope` challenge). The signature is kept. The
    result is a `Rule`: it composes with `all_of` and `any_of`.
    """
    return Rule(ScopeRequirement(all_of=validate_scopes(scopes)))


def require_any_scope(*scopes: str) -> Rule:
    """Like `require_scopes`, but one of `scopes` is enough."""
    return Rule(ScopeRequirement(any_of=validate_scopes(scopes)))


def require_claims(claims: Mapping[str | tuple[str, ...],
                                   ClaimValue | Iterable[ClaimValue]] | None = None,
                   /, **top_level: ClaimValue | Iterable[ClaimValue]) -> Rule:
    """A rule on claim values: each claim (a dotted path such as
    ``"custom_claims.environment"``, or a tuple of names when a name holds a dot) must equal
    the value given, or one of the values of a list. Top-level claims may also be given as
    keywords (``require_claims(gty="client-credentials")``).

    Values are JSON strings, integers or booleans, compared with their type (``true`` is not
    ``1``; an array or an object in the token matches nothing). Raises `ValueError` now for an
    invalid path or value. At call time a token that fails is refused with 403
    ``access_denied`` naming the rule (``claim:custom_claims.environment``), never a value.
    """
    requirements = (*claim_requirements(claims if claims is not None else {}),
                    *claim_requirements(top_level))
    if not requirements:
        raise ValueError("require_claims() needs at least one claim and its value(s)")
    return Rule(requirements[0] if len(requirements) == 1 else AllOf(requirements))


def require_clients(*client_ids: str) -> Rule:
    """A rule on the calling client: its id (`AccessToken.client_id`) must be one of
    `client_ids`. Refused with 403 ``access_denied`` naming the rule ``clients``."""
    return Rule(ClientRequirement(client_ids))


def require(predicate: Callable[[AccessToken], bool], *, name: str) -> Rule:
    """A rule of your own: `predicate(token)` must return exactly True (any other value, or
    an exception, which is logged, refuses). `name` (1-64 printable ASCII characters, no
    quotes) names the rule in logs and in the 403 ``access_denied`` answer."""
    return Rule(PredicateRequirement(predicate, name))


def all_of(*rules: Rule | Requirement) -> Rule:
    """Every one of `rules`; a token that fails gets the first failing rule's answer (403
    ``insufficient_scope`` for a scope rule, ``access_denied`` for the others)."""
    return Rule(AllOf(rules))


def any_of(*rules: Rule | Requirement) -> Rule:
    """At least one of `rules`; a token that fails gets 403 ``access_denied`` naming this rule
    (``insufficient_scope`` with the first alternative's scopes when all are scope rules)."""
    return Rule(AnyOf(rules))
