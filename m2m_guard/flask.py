"""Flask integration: ``M2MGuard(app)`` or ``guard = M2MGuard(); guard.init_app(app)``.

Every request to the app (blueprints included) is guarded before its view runs, unless its path
is in `public_paths`, its endpoint is public (``@guard.public``, ``public_endpoints=``) or it is
an allowed CORS preflight. The verified `AccessToken` is on ``flask.g.m2m_token`` and in
`current_token()`; ``require_scopes`` / ``require_any_scope`` and the other rules
(``require_claims``, ``require_clients``, ``require``, ``all_of``, ``any_of``; re-exported
here) work on views. A
refusal, or a `GuardError` raised in a view, is answered per the contract by an error handler the
extension registers: the same status, headers and JSON body as every other adapter, and reported
once (log line, event). When configured (`health_path`, `resource`), the health endpoint and the
RFC 9728 metadata document are answered before anything else, without a token.

Settings come from, in order: the `settings` argument; ``app.config["M2M_GUARD_*"]`` (same names
and value syntax as the environment variables, or native Python values); the environment. An
unknown ``M2M_GUARD_*`` key in ``app.config`` is a `ConfigurationError`. One `TokenVerifier` per
app, made at `init_app`, closed by `close()` or when the interpreter exits.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from flask import Flask, current_app, g, request
from werkzeug.wrappers import Response

from ._core.answers import EndpointResponse
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
from ._core.gate import AUTHENTICATE, PASS, Gate
from ._core.request import WsgiRequest
from ._core.storage import REQUEST_ATTRIBUTE, TOKEN_KEY
from .errors import ConfigurationError, GuardError, RenderedError, render_error
from .settings import ENV_PREFIX, GuardSettings, unknown_names_message
from .verifier import TokenVerifier

__all__ = [
    "M2MGuard",
    "all_of",
    "any_of",
    "current_token",
    "guard_error_response",
    "public",
    "require",
    "require_any_scope",
    "require_claims",
    "require_clients",
    "require_scopes",
    "settings_from_config",
]

F = TypeVar("F", bound=Callable[..., Any])

logger = logging.getLogger("m2m_guard")
_EXTENSION = "m2m_guard"
_PUBLIC_ATTRIBUTE = "_m2m_guard_public"
_MARKER = "_m2m_guard_context_marker"


def public(view: F) -> F:
    """Mark a view as public: the guard lets requests to it through without a token."""
    setattr(view, _PUBLIC_ATTRIBUTE, True)
    return view


def settings_from_config(config: Mapping[str, Any],
                         environ: Mapping[str, str] | None = None) -> GuardSettings:
    """`GuardSettings` from ``M2M_GUARD_*`` keys of a Flask config, over the environment.

    A string value is read exactly like the environment variable of the same name (``"a,b"``
    lists, ``"true"``, ``"5m"``); other values are taken as they are (a list, a bool, a number).
    Raises `ConfigurationError` for unknown keys (with the closest valid name) and invalid values.
    """
    merged: dict[str, str] = dict(os.environ if environ is None else environ)
    native: dict[str, Any] = {}
    fields = {field.name for field in dataclasses.fields(GuardSettings)}
    unknown = []
    for key, value in config.items():
        if not isinstance(key, str) or not key.startswith(ENV_PREFIX):
            continue
        name = key[len(ENV_PREFIX):].lower()
        if name not in fields or key != ENV_PREFIX + name.upper():
            unknown.append(key)
        elif isinstance(value, str):
            merged[key] = value
        else:
            native[name] = value
    if unknown:
        raise ConfigurationError(unknown_names_message(
            "app.config", unknown, {ENV_PREFIX + name.upper() for name in fields},
            prefix=ENV_PREFIX))
    return GuardSettings.from_env(merged, **native)


def guard_error_response(error: GuardError, realm: str = "api", *,
                         resource_metadata: str | None = None) -> Response:
    """A Flask response for `error`, rendered by the one renderer (docs/architecture.md).

    It only renders; the extension's error handler also reports the refusal
    (`endpoints.render_refusal`).
    """
    return _response(render_error(error, realm=realm, resource_metadata=resource_metadata))


def _response(rendered: RenderedError | EndpointResponse, *, head: bool = False) -> Response:
    body = b"" if head else rendered.body
    response = Response(body, status=rendered.status, headers=list(rendered.headers))
    # The real length, also for HEAD (whose answer carries the GET body's length).
    response.headers["Content-Length"] = str(len(rendered.body))
    return response


class _AppGuard:
    """What the extension holds for one app: its gate and its public endpoints."""

    __slots__ = ("__weakref__", "gate", "public_endpoints", "verifier")

    def __init__(self, verifier: TokenVerifier, public_endpoints: frozenset[str]) -> None:
        self.verifier = verifier
        self.gate = Gate(verifier)
        self.public_endpoints = public_endpoints

    def is_public_endpoint(self, endpoint: str | None) -> bool:
        return endpoint is not None and (
            endpoint in self.public_endpoints
            or getattr(current_app.view_functions.get(endpoint), _PUBLIC_ATTRIBUTE, False))


class M2MGuard:
    """The Flask extension. Works with app factories (`init_app`) and blueprints.

    `settings` (for every app this guard is initialised on, unless `init_app` is given its own)
    win over ``app.config`` and the environment. `public_endpoints` names endpoints that need no
    token (``"health"``, ``"status.ping"`` for a blueprint view); ``@guard.public`` marks a view
    the same way.
    With ``warm_up=True`` the key sets are loaded at `init_app` (a failure is logged).
    """

    def __init__(self, app: Flask | None = None, settings: GuardSettings | None = None, *,
                 public_endpoints: Iterable[str] = (), warm_up: bool = False) -> None:
        self.settings = settings
        self.public_endpoints = frozenset(public_endpoints)
        self.warm_up = warm_up
        self._guards: weakref.WeakSet[_AppGuard] = weakref.WeakSet()
        self._single: _AppGuard | None = None
        if app is not None:
            self.init_app(app)

    public = staticmethod(public)
    require_scopes = staticmethod(require_scopes)
    require_any_scope = staticmethod(require_any_scope)
    require_claims = staticmethod(require_claims)
    require_clients = staticmethod(require_clients)
    require = staticmethod(require)
    all_of = staticmethod(all_of)
    any_of = staticmethod(any_of)

    def init_app(self, app: Flask, settings: GuardSettings | None = None) -> None:
        """Guard `app`: build its settings and verifier, register the hooks and error handler.

        `settings` (for this app only) win over the guard's own, ``app.config`` and the
        environment. Raises `ConfigurationError` for invalid or unknown ``M2M_GUARD_*`` config.
        """
        if _EXTENSION in app.extensions:
            raise RuntimeError("m2m_guard is already initialised on this app.")
        settings = settings if settings is not None else self.settings
        if settings is None:
            settings = settings_from_config(app.config)
        verifier = TokenVerifier(settings)
        state = _AppGuard(verifier, self.public_endpoints)
        app.extensions[_EXTENSION] = state
        app.before_request(self._before_request)
        app.teardown_request(_teardown_request)
        app.register_error_handler(GuardError, _handle_guard_error)
        # Closed when the app is garbage-collected or at interpreter exit, whichever is first.
        weakref.finalize(app, verifier.close)
        self._guards.add(state)
        self._single = state if self._single is None and len(self._guards) == 1 else None
        if self.warm_up:
            verifier.warm_up_at_startup_sync()

    def verifier_for(self, app: Flask | None = None) -> TokenVerifier:
        """The `TokenVerifier` of `app` (default: the current app)."""
        target = app if app is not None else current_app
        state = target.extensions.get(_EXTENSION)
        if not isinstance(state, _AppGuard):
            raise RuntimeError("m2m_guard is not initialised on this app: call init_app(app).")
        return state.verifier

    @property
    def verifier(self) -> TokenVerifier:
        """The verifier of the one app this guard was initialised on (else of the current app)."""
        if self._single is not None:
            return self._single.verifier
        return self.verifier_for()

    def close(self) -> None:
        """Stop the background work of every verifier this guard made."""
        for state in list(self._guards):
            state.verifier.close()

    @staticmethod
    def _before_request() -> Response | None:
        state = current_app.extensions[_EXTENSION]
        assert isinstance(state, _AppGuard)
        view = WsgiRequest(request.environ)
        decision = state.gate.decide(view)
        if decision is not AUTHENTICATE and decision is not PASS:
            g.m2m_token = None
            return _response(decision, head=view.method == "HEAD")  # type: ignore[arg-type]
        if decision is PASS or state.is_public_endpoint(request.endpoint):
            g.m2m_token = None  # untouched: no credentials are read on a public route
            return None
        access = state.gate.authenticate_sync(view)  # a GuardError goes to the error handler
        g.m2m_token = access
        request.environ[TOKEN_KEY] = access
        setattr(g, _MARKER, set_current_token(access))
        return None


def _teardown_request(exc: BaseException | None) -> None:
    marker = g.pop(_MARKER, None)
    if marker is not None:
        try:
            reset_current_token(marker)
        except ValueError:  # set in another context (should not happen): just clear it
            set_current_token(None)


def _handle_guard_error(error: GuardError) -> Response:
    state = current_app.extensions.get(_EXTENSION)
    if not isinstance(state, _AppGuard):
        return guard_error_response(error)
    return _response(state.gate.refuse(error, g.get(REQUEST_ATTRIBUTE)))
