"""Django's configuration of the guard: ``settings.M2M_GUARD`` read and validated, one
`TokenVerifier` per configuration for the process, and the `Guard` the middleware and DRF share.

Errors are `ImproperlyConfigured`, naming the key as the user wrote it and what to fix.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any, NamedTuple

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.http import HttpRequest, HttpResponse

from .._core.answers import EndpointResponse
from .._core.endpoints import OperationalEndpoints
from .._core.gate import Gate
from .._core.request import AsgiSplitRequest, RequestView, WsgiRequest
from .._core.rules import PathRules
from .._core.storage import REQUEST_ATTRIBUTE
from ..errors import ConfigurationError, GuardError, RenderedError
from ..settings import ENV_PREFIX, GuardSettings, public_fields, unknown_names_message
from ..token import AccessToken
from ..verifier import TokenVerifier

__all__ = ["SETTING", "WARM_UP_SETTING", "Guard", "close_verifiers", "configured_guard",
           "get_verifier", "guard_settings", "request_token", "request_view", "response"]

SETTING = "M2M_GUARD"
WARM_UP_SETTING = "M2M_GUARD_WARM_UP"  # a Django setting, not an M2M_GUARD key
_HINT = ("Set it in settings.M2M_GUARD = {\"issuer\": ..., \"audience\": ...} (keys are "
         "GuardSettings field names) or in the M2M_GUARD_* environment.")


class Guard(NamedTuple):
    """What the Django and DRF adapters share for one configuration (its `gate` decides)."""

    settings: GuardSettings
    verifier: TokenVerifier
    paths: PathRules
    #: Health and RFC 9728 endpoints (None unless configured).
    endpoints: OperationalEndpoints | None = None
    gate: Gate | None = None

    @property
    def decisions(self) -> Gate:
        return self.gate if self.gate is not None else Gate(self.verifier)

    def passes_unchecked(self, request: HttpRequest) -> bool:
        """True for a public path (``request.path_info``) or an allowed CORS preflight."""
        return self.decisions.passes(request_view(request))

    def bearer(self, request: HttpRequest) -> str | None:
        """The request's bearer token, or None without credentials; raises `GuardError` for
        malformed or ambiguous ones (RFC 6750 framing)."""
        return self.decisions.credentials(request_view(request))

    def answer(self, request: HttpRequest) -> HttpResponse | None:
        """The answer of an operational endpoint (health, RFC 9728) to `request`, or None when
        its path is not one of them (or none is configured)."""
        view = request_view(request)
        answer = self.decisions.answer(view)
        return None if answer is None else response(answer, head=view.method == "HEAD")

    def render(self, error: GuardError, access: AccessToken | None = None) -> RenderedError:
        """`error` reported once and rendered with this configuration (realm, resource
        metadata)."""
        return self.decisions.refuse(error, access)

    def refuse(self, error: GuardError, access: AccessToken | None = None) -> HttpResponse:
        """The response for `error` (reported once; this configuration's realm and resource
        metadata). `access` is the request's verified token, if any."""
        return response(self.render(error, access))


def request_view(request: HttpRequest) -> RequestView:
    """The gate's view of a Django request: the path as the URLconf sees it (`path_info`);
    under ASGI the raw header list, so two Authorization headers are seen as two (each value
    split as under WSGI, so a request gets the same answer from both handlers)."""
    scope = getattr(request, "scope", None)
    if isinstance(scope, Mapping) and "headers" in scope:
        return AsgiSplitRequest(scope, path=request.path_info)  # type: ignore[arg-type]
    return WsgiRequest(request.META, path=request.path_info)


def response(rendered: RenderedError | EndpointResponse, *, head: bool = False) -> HttpResponse:
    """`rendered` as an `HttpResponse` (HEAD: the same headers, no body)."""
    return HttpResponse(b"" if head else rendered.body, status=rendered.status,
                        headers=dict(rendered.headers))


def request_token(request: HttpRequest) -> AccessToken | None:
    """The verified token of `request` (``request.m2m_token``), or None."""
    token = getattr(request, REQUEST_ATTRIBUTE, None)
    return token if isinstance(token, AccessToken) else None



logger = logging.getLogger("m2m_guard")
_lock = threading.Lock()
_verifiers: dict[GuardSettings, TokenVerifier] = {}
# The guard built from Django's settings: the per-request fast path for code that has no
# middleware instance at hand (DRF authentication). Cleared on setting_changed.
_current: Guard | None = None


def _field_of(message: str) -> str | None:
    """The option a validation message is about: it starts with the environment variable's
    name (the core words messages for the environment) or the field's."""
    for name in sorted(public_fields(), key=len, reverse=True):
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
    unknown = [str(key) for key in raw if key not in public_fields()]
    if unknown:
        raise ImproperlyConfigured(
            unknown_names_message("settings.M2M_GUARD", unknown, public_fields())
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
        gate = Gate(verifier)
        current = _current = Guard(settings, verifier, gate.paths, gate.endpoints, gate)
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
