"""Django adapter: ``"m2m_guard.django.M2MGuardMiddleware"`` in ``MIDDLEWARE``.

Configuration is ``settings.M2M_GUARD = {...}`` (keys are `GuardSettings` field names) over the
``M2M_GUARD_*`` environment; it is read and validated when Django builds its middleware chain
(at startup for WSGI and ASGI servers), and a bad value raises `ImproperlyConfigured` naming the
key and what to fix. One `TokenVerifier` serves the process for a given configuration (it is
never built per request), shared with `m2m_guard.drf`.

The middleware works in sync and async chains (``await verifier.verify`` under ASGI,
``verify_sync`` under WSGI). For a protected request it verifies the bearer token and puts the
`AccessToken` on ``request.m2m_token`` and in `current_token()`; a refusal is answered per
DESIGN §4 by the one renderer. Public paths (matched against ``request.path_info``, the path your
URLconf sees) and, when allowed, CORS preflight requests pass through untouched, with
``request.m2m_token = None``. A `GuardError` raised by a view (``@require_scopes``, the
`ScopesRequiredMixin`, your own code) is rendered the same way by ``process_exception``. Every
refusal is reported once (log line, event).

When configured (`health_path`, `resource`), the middleware answers the health endpoint and the
RFC 9728 metadata document before anything else, without a token. Without the middleware (Django
REST framework authentication only), serve them with ``urlpatterns += operational_urls()``, or
route `health_view` yourself.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, NamedTuple

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.urls import URLPattern, re_path
from django.views.decorators.csrf import csrf_exempt

from ._core.bearer import authorization_from_environ, extract_bearer, split_credentials
from ._core.context import (
    current_token,
    require_any_scope,
    require_scopes,
    reset_current_token,
    set_current_token,
)
from ._core.endpoints import OperationalEndpoints, health_answer, render_refusal
from ._core.rules import PathRules, is_cors_preflight
from ._core.scopes import ScopeRequirement, validate_scopes
from .errors import (
    ConfigurationError,
    GuardError,
    InsufficientScope,
    MissingToken,
    RenderedError,
    render_error,
)
from .health import EndpointResponse
from .settings import ENV_PREFIX, GuardSettings, _public_fields, _unknown_message
from .token import AccessToken
from .verifier import TokenVerifier

__all__ = [
    "Guard",
    "M2MGuardMiddleware",
    "ScopesRequiredMixin",
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
    "request_token",
    "require_any_scope",
    "require_scopes",
    "view_requirement",
]

SETTING = "M2M_GUARD"
WARM_UP_SETTING = "M2M_GUARD_WARM_UP"  # a Django setting, not an M2M_GUARD key
_HINT = ("Set it in settings.M2M_GUARD = {\"issuer\": ..., \"audience\": ...} (keys are "
         "GuardSettings field names) or in the M2M_GUARD_* environment.")

#: A view's scope declaration: scopes for every method, or per HTTP method.
ScopeSpec = str | Sequence[str] | Mapping[str, str | Sequence[str]] | None


class Guard(NamedTuple):
    """What the Django and DRF adapters share for one configuration."""

    settings: GuardSettings
    verifier: TokenVerifier
    paths: PathRules
    #: Health and RFC 9728 endpoints (None unless configured).
    endpoints: OperationalEndpoints | None = None

    def passes_unchecked(self, request: HttpRequest) -> bool:
        """True for a public path (``request.path_info``) or an allowed CORS preflight."""
        if self.paths.is_public(request.path_info):
            return True
        meta = request.META
        return self.settings.allow_cors_preflight and is_cors_preflight(
            request.method or "", "HTTP_ORIGIN" in meta,
            "HTTP_ACCESS_CONTROL_REQUEST_METHOD" in meta)

    def bearer(self, request: HttpRequest) -> str | None:
        """The request's bearer token, or None without credentials; raises `GuardError` for
        malformed or ambiguous ones (RFC 6750 framing, DESIGN §4)."""
        return extract_bearer(_authorization_values(request),
                              request.META.get("QUERY_STRING", ""),
                              max_token_bytes=self.settings.max_token_bytes)

    def answer(self, request: HttpRequest) -> HttpResponse | None:
        """The answer of an operational endpoint (health, RFC 9728) to `request`, or None when
        its path is not one of them (or none is configured)."""
        if self.endpoints is None:
            return None
        method = request.method or "GET"
        answer = self.endpoints.answer(request.path_info, method)
        return None if answer is None else _response(answer, head=method == "HEAD")

    def render(self, error: GuardError, access: AccessToken | None = None) -> RenderedError:
        """`error` reported once and rendered with this configuration (realm, resource
        metadata): `endpoints.render_refusal`."""
        return render_refusal(self.verifier, error, access)

    def refuse(self, error: GuardError, access: AccessToken | None = None) -> HttpResponse:
        """The response for `error` (reported once; this configuration's realm and resource
        metadata). `access` is the request's verified token, if any."""
        return _response(self.render(error, access))


logger = logging.getLogger("m2m_guard")
_lock = threading.Lock()
_verifiers: dict[GuardSettings, TokenVerifier] = {}
# The guard built from Django's settings: the per-request fast path for code that has no
# middleware instance at hand (DRF authentication). Cleared on setting_changed.
_current: Guard | None = None


def _field_of(message: str) -> str | None:
    """The option a validation message is about: it starts with the environment variable's
    name (the core words messages for the environment) or the field's."""
    for name in sorted(_public_fields(), key=len, reverse=True):
        for spelled in (ENV_PREFIX + name.upper(), name):
            if message.startswith(spelled + " "):
                return name
    return None


def _load_settings() -> GuardSettings:
    raw: Any = getattr(django_settings, SETTING, None)
    if isinstance(raw, GuardSettings):
        return raw
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ImproperlyConfigured(
            f"settings.M2M_GUARD must be a dict of m2m_guard options (or a GuardSettings), "
            f"got {type(raw).__name__}. {_HINT}")
    unknown = [str(key) for key in raw if key not in _public_fields()]
    if unknown:
        raise ImproperlyConfigured(
            _unknown_message("settings.M2M_GUARD", unknown, _public_fields())
            + " Keys are GuardSettings field names, in lower case.")
    try:
        return GuardSettings.from_env(**raw)
    except ConfigurationError as exc:
        message = str(exc)
        field = _field_of(message)
        if field is not None and field in raw:
            # The value came from settings.M2M_GUARD (it wins over the environment): name it as
            # the user wrote it, not as the environment variable.
            spelled = ENV_PREFIX + field.upper()
            rest = message[len(spelled if message.startswith(spelled) else field):]
            raise ImproperlyConfigured(
                f"m2m_guard: settings.M2M_GUARD[{field!r}]{rest}") from exc
        raise ImproperlyConfigured(f"m2m_guard: {message.rstrip('.')}. {_HINT}") from exc


def _verifier_for(settings: GuardSettings) -> TokenVerifier:
    with _lock:
        verifier = _verifiers.get(settings)
        if verifier is None:
            verifier = _verifiers[settings] = TokenVerifier(settings)
            created = True
        else:
            created = False
    if created and getattr(django_settings, WARM_UP_SETTING, False) is True:
        _warm_up(verifier)
    return verifier


def _warm_up(verifier: TokenVerifier) -> None:
    """Load the key sets now, at startup; a failure is logged, never fatal (requests retry)."""
    verifier.warm_up_at_startup_sync()


def configured_guard() -> Guard:
    """The `Guard` for Django's settings (built once; again after a settings override).

    With ``settings.M2M_GUARD_WARM_UP = True`` a new verifier loads its key sets at once, so the
    first request does not wait for discovery and the key set.
    """
    global _current
    current = _current
    if current is None:
        settings = _load_settings()
        verifier = _verifier_for(settings)
        current = _current = Guard(settings, verifier, PathRules(tuple(settings.public_paths)),
                                   OperationalEndpoints.for_verifier(verifier))
    return current


def guard_settings() -> GuardSettings:
    """The `GuardSettings` from ``settings.M2M_GUARD`` over the ``M2M_GUARD_*`` environment.

    Read once (again after ``override_settings(M2M_GUARD=...)``). Raises `ImproperlyConfigured`
    (naming the key or variable and what to fix) when they are missing or invalid.
    """
    return configured_guard().settings


def get_verifier(settings: GuardSettings | None = None) -> TokenVerifier:
    """The process's `TokenVerifier` for `settings` (default: `guard_settings()`).

    The same settings always give the same verifier, so the middleware and DRF authentication
    share one key-set cache; nothing here builds a verifier per request.
    """
    if settings is None:
        return configured_guard().verifier
    return _verifier_for(settings)


def close_verifiers() -> None:
    """Stop every verifier this module built and forget them (tests, or a clean shutdown)."""
    global _current
    with _lock:
        verifiers = list(_verifiers.values())
        _verifiers.clear()
        _current = None
    for verifier in verifiers:
        verifier.close()


def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    """``override_settings(M2M_GUARD=...)`` (tests) takes effect for new middleware chains."""
    global _current
    if setting == SETTING:
        _current = None


setting_changed.connect(_on_setting_changed, dispatch_uid="m2m_guard.django.setting_changed")


def guard_error_response(error: GuardError, realm: str = "api", *,
                         resource_metadata: str | None = None) -> HttpResponse:
    """A Django `HttpResponse` for `error`, rendered by the one renderer (DESIGN §4).

    It only renders; the middleware and `m2m_guard.drf` also report the refusal
    (`Guard.refuse`).
    """
    return _response(render_error(error, realm=realm, resource_metadata=resource_metadata))


def _response(rendered: RenderedError | EndpointResponse, *, head: bool = False) -> HttpResponse:
    """`rendered` as an `HttpResponse` (HEAD: the same headers, no body)."""
    return HttpResponse(b"" if head else rendered.body, status=rendered.status,
                        headers=dict(rendered.headers))


@csrf_exempt
def health_view(request: HttpRequest) -> HttpResponse:
    """A view answering the health document (`m2m_guard.health`) with the process's verifier:
    200 when ready, 503 when not; 405 for methods other than GET and HEAD.

    For a route of your own (``path("ready", health_view)``), served whether or not
    `health_path` is set; keep the path out of your public URL space. The middleware needs no
    route: it answers `health_path` itself.
    """
    method = request.method or "GET"
    return _response(health_answer(get_verifier(), method), head=method == "HEAD")


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
        return _response(answer, head=method == "HEAD")

    return view


def request_token(request: HttpRequest) -> AccessToken | None:
    """The verified token of `request` (``request.m2m_token``), or None."""
    token = getattr(request, "m2m_token", None)
    return token if isinstance(token, AccessToken) else None


def _authorization_values(request: HttpRequest) -> list[str]:
    scope = getattr(request, "scope", None)
    if isinstance(scope, Mapping) and "headers" in scope:
        # ASGI: the raw header list, so two Authorization headers are seen as two; each value
        # is split as under WSGI, so a request gets the same answer from both handlers.
        return [part for name, value in scope["headers"] if name == b"authorization"
                for part in split_credentials(value.decode("latin-1"))]
    return authorization_from_environ(request.META)


class _Unchecked:
    """The marker of a request that passes without a token check."""


_UNCHECKED = _Unchecked()


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
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self._async:
            return self._acall(request)
        early = self._before_token(request)
        if early is not None:
            return self.get_response(request) if isinstance(early, _Unchecked) else early
        try:
            raw = self._bearer(request)
            token = None if raw is None else self.verifier.verify_sync(raw)
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
        early = self._before_token(request)
        if early is not None:
            return await get_response(request) if isinstance(early, _Unchecked) else early
        try:
            raw = self._bearer(request)
            token = None if raw is None else await self.verifier.verify(raw)
        except GuardError as exc:
            return self.guard.refuse(exc)
        request.m2m_token = token  # type: ignore[attr-defined]
        marker = set_current_token(token)
        try:
            return await get_response(request)
        finally:
            reset_current_token(marker)

    def _before_token(self, request: HttpRequest) -> HttpResponseBase | _Unchecked | None:
        """What is decided before a token is read (the same for sync and async chains): an
        operational endpoint's answer, `_UNCHECKED` for a public path or a preflight (the view
        runs with `request.m2m_token = None`), or None: the token decides."""
        guard = self.guard
        if guard.endpoints is not None:
            answer = guard.answer(request)
            if answer is not None:
                return answer
        if guard.passes_unchecked(request):
            request.m2m_token = None  # type: ignore[attr-defined]
            return _UNCHECKED
        return None

    def process_exception(self, request: HttpRequest,
                          exception: Exception) -> HttpResponse | None:
        """Render a `GuardError` raised by a view (sync or async) per DESIGN §4."""
        if isinstance(exception, GuardError):
            return self.guard.refuse(exception, request_token(request))
        return None

    def _bearer(self, request: HttpRequest) -> str | None:
        token = self.guard.bearer(request)
        if token is None and self.settings.required:
            raise MissingToken()
        return token


# -- scope requirements declared on views --------------------------------------------------

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
