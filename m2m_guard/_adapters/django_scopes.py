"""Scope requirements declared on Django views (``required_scopes`` / ``required_any_scopes``),
read by `ScopesRequiredMixin` and by DRF's `HasScopes`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest

from .._core.context import current_token
from .._core.scopes import ScopeRequirement, validate_scopes
from ..errors import InsufficientScope, MissingToken
from ..token import AccessToken
from .django_config import request_token

__all__ = ["ScopeSpec", "ScopesRequiredMixin", "declares_scopes", "enforce_view_scopes",
           "view_requirement"]

#: A view's scope declaration: scopes for every method, or per HTTP method.
ScopeSpec = str | Sequence[str] | Mapping[str, str | Sequence[str]] | None


def _scopes_for(spec: ScopeSpec, method: str) -> tuple[str, ...] | None:
    """The scopes `spec` names for `method`: None when it names none for that method."""
    if spec is None:
        return None
    if isinstance(spec, str):
        return (spec,)
    if isinstance(spec, Mapping):
        for key in (method, "GET" if method == "HEAD" else None, "*"):
            if key is not None and key in spec:
                value = spec[key]
                return (value,) if isinstance(value, str) else tuple(value)
        return None
    return tuple(spec) or None


def view_requirement(view: object, method: str) -> ScopeRequirement | None:
    """The `ScopeRequirement` a view declares for `method`, or None if it declares nothing.

    Reads ``required_scopes`` (all of them) and ``required_any_scopes`` (one of them); each is a
    list of scopes for every method, or a mapping from HTTP method (``"GET"``, ``"POST"``, ...,
    ``"*"`` as the default; HEAD falls back to GET) to a list. In a mapping, an empty list means
    "a valid token, no particular scope". Raises `ImproperlyConfigured` for an invalid scope.
    """
    method = method.upper()
    all_spec: ScopeSpec = getattr(view, "required_scopes", None)
    any_spec: ScopeSpec = getattr(view, "required_any_scopes", None)
    all_of = _scopes_for(all_spec, method)
    any_of = _scopes_for(any_spec, method)
    if all_of is None and any_of is None:
        return None
    try:
        return ScopeRequirement(
            all_of=validate_scopes(all_of) if all_of else (),
            any_of=validate_scopes(any_of) if any_of else ())
    except ValueError as exc:
        raise ImproperlyConfigured(f"{type(view).__name__}: {exc}") from None


def declares_scopes(view: object) -> bool:
    """True when the view sets ``required_scopes`` or ``required_any_scopes`` to something."""
    return any(getattr(view, name, None) for name in ("required_scopes", "required_any_scopes"))


def enforce_view_scopes(view: object, method: str, token: AccessToken | None) -> None:
    """Raise `MissingToken` without a token, `InsufficientScope` when `view`'s requirement for
    `method` is not met. A method a per-method mapping leaves out is refused (403): name every
    method the view serves, with ``[]`` for "a token, no scope"."""
    requirement = view_requirement(view, method)
    if requirement is None and not declares_scopes(view):
        raise ImproperlyConfigured(
            f"{type(view).__name__} uses m2m_guard scope checks but sets neither "
            f"required_scopes nor required_any_scopes.")
    if token is None:
        raise MissingToken()
    if requirement is None:
        raise InsufficientScope(description="The access token is not accepted for this method.")
    requirement.check(token)


class ScopesRequiredMixin:
    """For class-based views: a valid token with ``required_scopes`` (all of them) and/or one
    of ``required_any_scopes`` before ``dispatch`` runs the handler (sync or async).

    Put it first among the bases::

        class DeploymentView(ScopesRequiredMixin, View):
            required_scopes = {"GET": ["read:deployments"], "POST": ["deploy:applications"]}

    Refusals are `GuardError`s that `M2MGuardMiddleware` renders (401 without a token, 403 with
    the ``scope`` challenge). Invalid scopes are an `ImproperlyConfigured` at class creation.
    """

    required_scopes: ScopeSpec = None
    required_any_scopes: ScopeSpec = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in ("required_scopes", "required_any_scopes"):
            spec = getattr(cls, name, None)
            values = spec.values() if isinstance(spec, Mapping) else [spec]
            for value in values:
                if value:
                    try:
                        validate_scopes((value,) if isinstance(value, str) else value)
                    except ValueError as exc:
                        raise ImproperlyConfigured(f"{cls.__name__}.{name}: {exc}") from None

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        token = current_token() or request_token(request)
        enforce_view_scopes(self, request.method or "GET", token)
        return super().dispatch(request, *args, **kwargs)  # type: ignore[misc]
