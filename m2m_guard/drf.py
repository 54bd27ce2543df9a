"""Django REST framework adapter: authentication, a scope permission, and an exception handler.

``M2MGuardAuthentication`` takes the token `m2m_guard.django.M2MGuardMiddleware` verified, or,
without the middleware, verifies the bearer token itself with the process's shared verifier
(`m2m_guard.django.get_verifier`, one per configuration). It sets ``request.auth`` to the
`AccessToken` and ``request.user`` to a `ClientPrincipal`. Without credentials it returns None,
as DRF expects, so other authentication classes may still run; a permission then refuses.

``HasScopes`` reads ``required_scopes`` (all of them) and ``required_any_scopes`` (one of them)
from the view, either lists or per-method mappings (``{"GET": [...], "POST": [...]}``).

Refusals are raised as `GuardAPIException`, which DRF's own exception handler already renders
with the right status, ``WWW-Authenticate`` / ``Retry-After`` header and JSON body.
``REST_FRAMEWORK["EXCEPTION_HANDLER"] = "m2m_guard.drf.exception_handler"`` makes the answers
byte-for-byte those of every other m2m_guard adapter (the behaviour contract, with ``Cache-Control:
no-store``), also for DRF's own "not authenticated" refusal and for a `GuardError` raised in a
view.

Every refusal is reported once (log line, event) and its challenge carries ``resource_metadata``
when configured, as in every adapter. DRF has no hook before authentication: to serve the health
endpoint and the RFC 9728 document without `M2MGuardMiddleware`, add
``urlpatterns += m2m_guard.django.operational_urls()`` (or route `m2m_guard.django.health_view`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from django.http import HttpRequest, HttpResponseBase
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from ._adapters.django_config import request_view
from ._core.endpoints import challenge_options
from .django import (
    Guard,
    configured_guard,
    enforce_view_scopes,
    rendered_response,
    request_token,
)
from .errors import GuardError, MissingToken, RenderedError, render_error
from .token import AccessToken

if TYPE_CHECKING:
    # Not at run time: DRF imports this module (DEFAULT_AUTHENTICATION_CLASSES) while
    # rest_framework.views is still being imported.
    from rest_framework.views import APIView

__all__ = [
    "ClientPrincipal",
    "GuardAPIException",
    "HasScopes",
    "M2MGuardAuthentication",
    "exception_handler",
]


class ClientPrincipal:
    """The calling client application, as DRF's ``request.user``.

    Authenticated, never anonymous or staff; ``str()`` and ``pk`` are the client id, so DRF's
    throttling and logging can tell clients apart.
    """

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False

    def __init__(self, token: AccessToken) -> None:
        self.token = token

    @property
    def client_id(self) -> str:
        return self.token.client_id or ""

    @property
    def pk(self) -> str:
        return self.client_id

    @property
    def organization_id(self) -> str | None:
        return self.token.organization_id

    @property
    def scopes(self) -> frozenset[str]:
        return self.token.scopes

    def get_username(self) -> str:
        return self.client_id

    def __str__(self) -> str:
        return self.client_id

    def __repr__(self) -> str:
        return f"ClientPrincipal({self.client_id!r})"


class GuardAPIException(exceptions.APIException):
    """A `GuardError` as DRF sees it: status, detail (the JSON body of the contract),
    ``auth_header`` (``WWW-Authenticate``) and ``wait`` (``Retry-After``) all from the one
    renderer, so DRF's default exception handler already answers correctly.

    `rendered` is the answer to send (the adapter passes `Guard.render`'s, which also reported
    the refusal and carries the resource metadata); without it, `error` is rendered with `realm`.
    """

    def __init__(self, error: GuardError, realm: str = "api", *,
                 rendered: RenderedError | None = None) -> None:
        self.error = error
        self.realm = realm
        if rendered is None:
            rendered = render_error(error, realm=realm)
        self.rendered = rendered
        self.status_code = rendered.status
        headers = dict(rendered.headers)
        self.auth_header = headers.get("www-authenticate")
        retry_after = headers.get("retry-after")
        self.wait = int(retry_after) if retry_after is not None else None
        super().__init__(detail=json.loads(rendered.body), code=error.body_error)


def _refused(guard: Guard, error: GuardError,
             access: AccessToken | None = None) -> GuardAPIException:
    """`error` reported once and wrapped for DRF with the configured challenge."""
    return GuardAPIException(error, guard.settings.realm, rendered=guard.render(error, access))


def _django_request(request: Request | HttpRequest) -> HttpRequest:
    inner = getattr(request, "_request", request)
    assert isinstance(inner, HttpRequest)
    return inner


class M2MGuardAuthentication(BaseAuthentication):
    """DRF authentication by m2m_guard bearer token (see the module documentation).

    Public paths and allowed CORS preflights are not authenticated (as with the middleware).
    Malformed or invalid credentials raise `GuardAPIException` (400 / 401 / 503).
    """

    def authenticate(self, request: Request) -> tuple[ClientPrincipal, AccessToken] | None:
        django_request = _django_request(request)
        token = request_token(django_request)
        if token is None:
            guard = configured_guard()
            view = request_view(django_request)
            if guard.decisions.passes(view):
                return None
            try:
                # DRF views are sync: under ASGI Django runs them in a worker thread, never on
                # the event loop, so the blocking path is the right one. Without credentials
                # other authentication classes may still run: not required here.
                token = guard.decisions.authenticate_sync(view, required=False)
            except GuardError as exc:
                raise _refused(guard, exc) from None
            if token is None:
                return None
            django_request.m2m_token = token  # type: ignore[attr-defined]
        return ClientPrincipal(token), token

    def authenticate_header(self, request: Request) -> str:
        """The bare Bearer challenge DRF sends with a 401 (RFC 6750 §3), with
        ``resource_metadata`` when configured."""
        settings = configured_guard().settings
        rendered = render_error(MissingToken(), **challenge_options(settings))
        return dict(rendered.headers)["www-authenticate"]


class HasScopes(BasePermission):
    """Allow a request whose token holds the view's ``required_scopes`` (all of them) and one
    of its ``required_any_scopes``; each a list, or a mapping per HTTP method.

    In a mapping, ``"*"`` is the default, HEAD falls back to GET and ``[]`` means "a valid
    token, no particular scope"; a method the mapping does not name is refused (403). A view
    declaring neither attribute is an `ImproperlyConfigured` error. Refusals: 401 without a
    token, 403 ``insufficient_scope`` with the ``scope`` challenge.
    """

    def has_permission(self, request: Request, view: APIView) -> bool:
        token = request.auth if isinstance(request.auth, AccessToken) else None
        if token is None:
            token = request_token(_django_request(request))
        try:
            enforce_view_scopes(view, request.method or "GET", token)
        except GuardError as exc:
            raise _refused(configured_guard(), exc, token) from None
        return True


def _guard_challenges(context: dict[str, Any]) -> bool:
    """True when DRF's 401 challenge for this request comes from `M2MGuardAuthentication`
    (DRF uses the first authentication class's header)."""
    request = context.get("request")
    authenticators: Sequence[object] = getattr(request, "authenticators", None) or ()
    return bool(authenticators) and isinstance(authenticators[0], M2MGuardAuthentication)


def exception_handler(exc: Exception, context: dict[str, Any]) -> HttpResponseBase | None:
    """``REST_FRAMEWORK["EXCEPTION_HANDLER"]``: m2m_guard refusals rendered per the contract.

    Handles `GuardAPIException`, a `GuardError` raised in a view (e.g. by ``@require_scopes``)
    and DRF's `NotAuthenticated` when m2m_guard issues the challenge; everything else goes to
    DRF's default handler. Each is reported once (log line, event).
    """
    if isinstance(exc, GuardAPIException):
        return rendered_response(exc.rendered)
    if isinstance(exc, GuardError):
        # The token the authentication verified, read without running DRF's authentication.
        inner = getattr(context.get("request"), "_request", None)
        access = request_token(inner) if isinstance(inner, HttpRequest) else None
        return configured_guard().refuse(exc, access)
    if isinstance(exc, exceptions.NotAuthenticated) and _guard_challenges(context):
        return configured_guard().refuse(MissingToken())
    from rest_framework.views import exception_handler as drf_exception_handler

    return drf_exception_handler(exc, context)
