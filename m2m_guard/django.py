"""Django adapter: ``"m2m_guard.django.M2MGuardMiddleware"`` in ``MIDDLEWARE``.

Configuration is ``settings.M2M_GUARD = {...}`` (keys are `GuardSettings` field names) over the
``M2M_GUARD_*`` environment; it is read and validated when Django builds its middleware chain
(at startup for WSGI and ASGI servers), and a bad value raises `ImproperlyConfigured` naming the
key and what to fix. One `TokenVerifier` serves the process for a given configuration (it is
never built per request), shared with `m2m_guard.drf`.

The middleware works in sync and async chains (``await verifier.verify`` under ASGI,
``verify_sync`` under WSGI). For a protected request it verifies the bearer token and puts the
`AccessToken` on ``request.m2m_token`` and in `current_token()`; a refusal is answered per
the contract by the one renderer. Public paths (matched against ``request.path_info``, the path your
URLconf sees) and, when allowed, CORS preflight requests pass through untouched, with
``request.m2m_token = None``. A `GuardError` raised by a view (``@require_scopes`` or any other
rule decorator such as ``@require_claims``, the
`ScopesRequiredMixin`, your own code) is rendered the same way by ``process_exception``. Every
refusal is reported once (log line, event).

When configured (`health_path`, `resource`), the middleware answers the health endpoint and the
RFC 9728 metadata document before anything else, without a token. Without the middleware (Django
REST framework authentication only), serve them with ``urlpatterns += operational_urls()``, or
route `health_view` yourself.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.urls import URLPattern, re_path
from django.views.decorators.csrf import csrf_exempt

from ._adapters.django_config import (
    SETTING,
    WARM_UP_SETTING,
    Guard,
    close_verifiers,
    configured_guard,
    get_verifier,
    guard_settings,
    request_token,
    request_view,
    response,
)
from ._adapters.django_scopes import (
    ScopeSpec,
    ScopesRequiredMixin,
    declares_scopes,
    enforce_view_scopes,
    view_requirement,
)
from ._core.context import (
    all_of,
    any_of,
    current_token,
    require,
    require_any_scope,
    require_claims,
    require_clients,
    require_scopes,
    reset_current_token,
    set_current_token,
)
from ._core.endpoints import OperationalEndpoints, health_answer
from ._core.gate import AUTHENTICATE, PASS
from ._core.request import RequestView
from .errors import GuardError, render_error
from .settings import GuardSettings

__all__ = [
    "SETTING",
    "WARM_UP_SETTING",
    "Guard",
    "M2MGuardMiddleware",
    "ScopeSpec",
    "ScopesRequiredMixin",
    "all_of",
    "any_of",
    "close_verifiers",
    "configured_guard",
    "current_token",
    "declares_scopes",
    "enforce_view_scopes",
    "get_verifier",
    "guard_error_response",
    "guard_settings",
    "health_view",
    "operational_urls",
    "rendered_response",
    "request_token",
    "require",
    "require_any_scope",
    "require_claims",
    "require_clients",
    "require_scopes",
    "view_requirement",
]

#: `rendered` (a refusal or one of the guard's answers) as an `HttpResponse`.
rendered_response = response


def guard_error_response(error: GuardError, realm: str = "api", *,
                         resource_metadata: str | None = None) -> HttpResponse:
    """A Django `HttpResponse` for `error`, rendered by the one renderer (docs/architecture.md).

    It only renders; the middleware and `m2m_guard.drf` also report the refusal
    (`Guard.refuse`).
    """
    return response(render_error(error, realm=realm, resource_metadata=resource_metadata))


@csrf_exempt
def health_view(request: HttpRequest) -> HttpResponse:
    """A view answering the health document (`m2m_guard.health`) with the process's verifier:
    200 when ready, 503 when not; 405 for methods other than GET and HEAD.

    For a route of your own (``path("ready", health_view)``), served whether or not
    `health_path` is set; keep the path out of your public URL space. The middleware needs no
    route: it answers `health_path` itself.
    """
    method = request.method or "GET"
    return response(health_answer(get_verifier(), method), head=method == "HEAD")


def operational_urls(settings: GuardSettings | None = None) -> list[URLPattern]:
    """URL patterns for the configured health endpoint (`health_path`) and RFC 9728 metadata
    document (`resource`), at their exact paths; empty when neither is configured.

    For projects without `M2MGuardMiddleware` (Django REST framework authentication only):
    ``urlpatterns += operational_urls()`` in the root URLconf. With the middleware they are not
    needed (it answers first), and harmless. `settings` default to `guard_settings()`.
    """
    endpoints = OperationalEndpoints.for_verifier(get_verifier(settings))
    if endpoints is None:
        return []
    return [re_path("^" + re.escape(path.lstrip("/")) + "$", _operational_view(path, settings))
            for path in sorted(endpoints.paths)]


def _operational_view(path: str, settings: GuardSettings | None) -> Callable[..., HttpResponse]:
    @csrf_exempt
    def view(request: HttpRequest) -> HttpResponse:
        # Resolved per request: the verifier may have been replaced (settings override, tests).
        if settings is None:
            endpoints = configured_guard().endpoints
        else:
            endpoints = OperationalEndpoints.for_verifier(get_verifier(settings))
        method = request.method or "GET"
        answer = None if endpoints is None else endpoints.answer(path, method)
        if answer is None:
            raise Http404()
        return response(answer, head=method == "HEAD")

    return view


class M2MGuardMiddleware:
    """Django middleware (sync and async capable); see the module documentation.

    Built once per middleware chain; the settings and verifier come from `configured_guard()`,
    so a misconfiguration fails at startup, not on the first request.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.guard = configured_guard()
        self.settings = self.guard.settings
        self.verifier = self.guard.verifier
        self.gate = self.guard.decisions
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self._async:
            return self._acall(request)
        view = request_view(request)
        decision = self._decide(request, view)
        if decision is not AUTHENTICATE:
            return self.get_response(request) if decision is PASS else decision
        try:
            token = self.gate.authenticate_sync(view)
        except GuardError as exc:
            return self.guard.refuse(exc)
        request.m2m_token = token  # type: ignore[attr-defined]
        marker = set_current_token(token)
        try:
            return self.get_response(request)
        finally:
            reset_current_token(marker)

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        get_response: Callable[[HttpRequest], Awaitable[HttpResponseBase]] = self.get_response
        view = request_view(request)
        decision = self._decide(request, view)
        if decision is not AUTHENTICATE:
            return await get_response(request) if decision is PASS else decision
        try:
            token = await self.gate.authenticate(view)
        except GuardError as exc:
            return self.guard.refuse(exc)
        request.m2m_token = token  # type: ignore[attr-defined]
        marker = set_current_token(token)
        try:
            return await get_response(request)
        finally:
            reset_current_token(marker)

    def _decide(self, request: HttpRequest, view: RequestView) -> Any:
        """The gate's decision before a token is read: an operational endpoint's response,
        `PASS` (the view runs with ``request.m2m_token = None``) or `AUTHENTICATE`."""
        decision = self.gate.decide(view)
        if decision is PASS:
            request.m2m_token = None  # type: ignore[attr-defined]
        elif decision is not AUTHENTICATE:
            return response(decision, head=view.method == "HEAD")  # type: ignore[arg-type]
        return decision

    def process_exception(self, request: HttpRequest,
                          exception: Exception) -> HttpResponse | None:
        """Render a `GuardError` raised by a view (sync or async) per the behaviour contract."""
        if isinstance(exception, GuardError):
            return self.guard.refuse(exception, request_token(request))
        return None
