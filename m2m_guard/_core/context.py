"""Where the current request's token lives, and the scope decorators that read it.

Adapters put the verified `AccessToken` in a context variable for the duration of a request, so
`current_token()` works in any framework, in sync and async code (Starlette runs sync endpoints
in a thread with the context copied).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from contextvars import ContextVar, Token
from typing import Any, TypeVar, cast

from ..errors import MissingToken
from ..token import AccessToken
from .scopes import ScopeRequirement, validate_scopes
from .storage import REQUEST_ATTRIBUTE, TOKEN_KEY

__all__ = ["current_token", "require_any_scope", "require_scopes", "reset_current",
           "reset_current_token", "scope_requirements", "set_current", "set_current_token"]

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


def _enforce(requirement: ScopeRequirement, args: tuple[Any, ...],
             kwargs: Mapping[str, Any]) -> None:
    token = _CURRENT.get() or _token_from_arguments(args, kwargs)
    if token is None:
        raise MissingToken()
    requirement.check(token)


_REQUIREMENTS = "__m2m_guard_requirements__"


def scope_requirements(func: Callable[..., Any]) -> tuple[ScopeRequirement, ...]:
    """The requirements `require_scopes` / `require_any_scope` placed on `func` (outermost
    last), for adapters that document them (FastAPI's OpenAPI security requirements)."""
    found = getattr(func, _REQUIREMENTS, ())
    return found if isinstance(found, tuple) else ()


def _decorator(requirement: ScopeRequirement) -> Callable[[F], F]:
    def decorate(func: F) -> F:
        requirements = (*scope_requirements(func), requirement)
        if inspect.iscoroutinefunction(func):
            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                _enforce(requirement, args, kwargs)
                return await func(*args, **kwargs)

            async_wrapper.__dict__[_REQUIREMENTS] = requirements
            return cast(F, async_wrapper)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            _enforce(requirement, args, kwargs)
            return func(*args, **kwargs)

        wrapper.__dict__[_REQUIREMENTS] = requirements
        return cast(F, wrapper)

    return decorate


def require_scopes(*scopes: str) -> Callable[[F], F]:
    """Decorate a sync or async endpoint so that it runs only for tokens holding all `scopes`.

    Raises `ValueError` at decoration time for an empty list or a scope with whitespace. At call
    time raises `MissingToken` without a token and `InsufficientScope` without the scopes; the
    guard renders both (401, 403 with the `scope` challenge). The signature is kept.
    """
    return _decorator(ScopeRequirement(all_of=validate_scopes(scopes)))


def require_any_scope(*scopes: str) -> Callable[[F], F]:
    """Like `require_scopes`, but one of `scopes` is enough."""
    return _decorator(ScopeRequirement(any_of=validate_scopes(scopes)))
