"""Starlette helpers: the authenticated client principal and a `GuardError` exception handler.

`M2MGuardMiddleware` (in `m2m_guard.asgi`) sets `request.user` to a `ClientUser` and
`request.auth` to the token's scopes, so Starlette's own `requires("scope")` works.
`require_scopes`, `require_any_scope`, the other rules (`require_claims`, `require_clients`,
`require`, `all_of`, `any_of`) and `current_token` are re-exported here (the same objects as
`m2m_guard.require_scopes` and friends), so a Starlette app imports everything from one
module. Use
`exception_handlers` when the middleware wraps the app from outside (``M2MGuardMiddleware(app)``)
rather than being listed in ``middleware=[...]``: Starlette's error middleware would otherwise see
a `GuardError` raised by an endpoint first.
"""

from __future__ import annotations

from typing import Any

from starlette.authentication import AuthCredentials, BaseUser, UnauthenticatedUser
from starlette.requests import Request
from starlette.responses import Response

from ._core.context import (
    all_of,
    any_of,
    current_token,
    require,
    require_any_scope,
    require_claims,
    require_clients,
    require_scopes,
)
from ._core.endpoints import render_refusal
from ._core.storage import SETTINGS_KEY, TOKEN_KEY, VERIFIER_KEY
from .errors import GuardError, RenderedError, render_error
from .token import AccessToken
from .verifier import TokenVerifier

__all__ = ["UNAUTHENTICATED", "ClientUser", "Principals", "TokenCredentials", "all_of", "any_of",
           "current_token", "exception_handlers", "guard_error_response", "principal",
           "rendered_response", "require", "require_any_scope", "require_claims",
           "require_clients", "require_scopes"]


class TokenCredentials(AuthCredentials):
    """`AuthCredentials` whose `scopes` (sorted) cannot be changed: one instance is shared by
    every request that presents the same cached token."""

    def __init__(self, scopes: frozenset[str]) -> None:
        # The base class would store a list; a tuple behind a read-only property is the same
        # to `requires()` and to `request.auth.scopes` readers, and cannot be changed.
        self._scopes = tuple(sorted(scopes))

    @property
    def scopes(self) -> tuple[str, ...]:  # type: ignore[override]
        return self._scopes


class ClientUser(BaseUser):
    """The calling client application, as Starlette's `request.user`.

    Read-only: the middleware shares one instance between the requests of one cached token.
    """

    def __init__(self, token: AccessToken) -> None:
        object.__setattr__(self, "token", token)

    token: AccessToken

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("ClientUser is read-only (shared by the requests of one token)")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("ClientUser is read-only (shared by the requests of one token)")

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        return self.token.client_id or ""

    @property
    def identity(self) -> str:
        return self.token.client_id or ""

    def __repr__(self) -> str:
        return f"ClientUser({self.token.client_id!r})"


def principal(access: AccessToken) -> tuple[TokenCredentials, ClientUser]:
    """Starlette's `request.auth` and `request.user` for `access` (read-only, shareable)."""
    return TokenCredentials(access.scopes), ClientUser(access)


#: `request.auth` and `request.user` of a request without a token.
UNAUTHENTICATED = (AuthCredentials(), UnauthenticatedUser())
# Principals are shared per cached token; the memo keeps its tokens alive, so it stays small
# (machine clients are few, and each presents one token for its lifetime).
_MEMO_SIZE = 256


class Principals:
    """`request.auth` and `request.user` for the ASGI middleware. Both are read-only, so those
    of a cached token are shared by its requests (memoised on cache hits only, by the token
    object's id and holding that object, so the id cannot be reused meanwhile: a flood of new
    tokens would otherwise keep hundreds of principals alive for nothing)."""

    __slots__ = ("_memo",)

    def __init__(self) -> None:
        self._memo: dict[int, tuple[AccessToken, tuple[TokenCredentials, ClientUser]]] = {}

    def __call__(self, access: AccessToken | None, hit: bool) -> tuple[Any, Any]:
        if access is None:
            return UNAUTHENTICATED
        if not hit:
            return principal(access)
        memo = self._memo
        found = memo.get(id(access))
        if found is None or found[0] is not access:
            if len(memo) >= _MEMO_SIZE:
                memo.clear()
            found = memo[id(access)] = (access, principal(access))
        return found[1]


def guard_error_response(error: GuardError, realm: str = "api", *,
                         resource_metadata: str | None = None) -> Response:
    """A Starlette `Response` for `error`, rendered by the one renderer (docs/architecture.md).

    It only renders; the middleware and `exception_handlers` also report the refusal
    (`endpoints.render_refusal`).
    """
    return rendered_response(render_error(error, realm=realm,
                                          resource_metadata=resource_metadata))


def rendered_response(rendered: RenderedError) -> Response:
    """A Starlette `Response` sending `rendered` as is."""
    return Response(rendered.body, status_code=rendered.status, headers=dict(rendered.headers),
                    media_type=None)


def _realm_of(request: Request) -> str:
    settings = request.scope.get(SETTINGS_KEY)
    return getattr(settings, "realm", "api")


async def _handle(request: Request, exc: Any) -> Response:
    # Inside an app the middleware guards, its verifier is in the scope: report the refusal
    # there and announce the resource metadata, as the middleware itself would.
    verifier = request.scope.get(VERIFIER_KEY)
    if isinstance(verifier, TokenVerifier):
        return rendered_response(
            render_refusal(verifier, exc, request.scope.get(TOKEN_KEY)))
    return guard_error_response(exc, _realm_of(request))


exception_handlers: dict[Any, Any] = {GuardError: _handle}
