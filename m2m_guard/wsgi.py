"""`M2MGuardWSGIMiddleware`: the guard for any WSGI application (PEP 3333).

Each request: a public path (matched against ``PATH_INFO``, the path as the wrapped app routes
it) or, when allowed, a CORS preflight passes through untouched; otherwise the bearer token is
extracted (RFC 6750, with repeated `Authorization` headers recognised although the server joined
them), verified with the blocking engine (`TokenVerifier.verify_sync`: sync HTTP driver, one key
set fetch per issuer across all threads), and the `AccessToken` placed in
``environ["m2m_guard.token"]`` and in `current_token()` while the app runs and while its response
body is iterated and closed. A refusal is answered per the contract with exactly the status, headers
and body the ASGI middleware sends, and reported once (log line, event).

When configured (`health_path`, `resource`), the health endpoint and the RFC 9728 metadata
document are answered before anything else, without a token, as by the ASGI middleware.

A `GuardError` raised by the app (e.g. by `require_scopes`), before it returns or while its first
body chunk is produced, is rendered the same way. If the app had already called
`start_response`, the error answer is given with ``exc_info`` as PEP 3333 prescribes: the server
replaces the pending headers, or re-raises when they were already sent.

`close()` (or using the middleware as a context manager) stops the verifier's background
refreshes; `warm_up()` loads the key sets ahead of the first request.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from http import HTTPStatus
from types import TracebackType
from typing import Any

from ._core.answers import EndpointResponse
from ._core.context import reset_current_token, set_current_token
from ._core.gate import AUTHENTICATE, PASS, Gate
from ._core.request import WsgiRequest
from ._core.storage import SETTINGS_KEY, TOKEN_KEY
from .errors import GuardError
from .settings import GuardSettings
from .token import AccessToken
from .verifier import TokenVerifier

__all__ = ["M2MGuardWSGIMiddleware", "ENVIRON_KEY", "token_from_environ"]

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
StartResponse = Callable[..., Callable[[bytes], object]]
WSGIEnvironment = dict[str, Any]
WSGIApplication = Callable[[WSGIEnvironment, StartResponse], Iterable[bytes]]

#: Where the verified `AccessToken` is stored in the WSGI environ.
ENVIRON_KEY = TOKEN_KEY


def token_from_environ(environ: WSGIEnvironment) -> AccessToken | None:
    """The `AccessToken` the middleware stored for this request, or None."""
    found = environ.get(ENVIRON_KEY)
    return found if isinstance(found, AccessToken) else None


def _status_line(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Unknown"


class M2MGuardWSGIMiddleware:
    """Wrap a WSGI app: ``app.wsgi_app = M2MGuardWSGIMiddleware(app.wsgi_app, settings)``.

    `settings` defaults to `GuardSettings.from_env()`. Pass `verifier` to share one
    `TokenVerifier` between several apps (it is then not closed by `close()`). With
    ``warm_up=True`` the key sets are loaded now (a failure is logged; requests will retry).
    """

    def __init__(self, app: WSGIApplication, settings: GuardSettings | None = None, *,
                 verifier: TokenVerifier | None = None, warm_up: bool = False) -> None:
        if verifier is not None and settings is not None and verifier.settings is not settings:
            raise ValueError("give either settings or a verifier built from them, not both")
        self.app = app
        self.verifier = verifier if verifier is not None else TokenVerifier(settings)
        self.settings = self.verifier.settings
        self._owns_verifier = verifier is None
        self.gate = Gate(self.verifier)
        if warm_up:
            self.warm_up()

    # -- lifecycle -------------------------------------------------------------------------
    def warm_up(self) -> bool:
        """Load every issuer's key set now; True on success. Failures are logged, not raised:
        the app must be able to start while the issuer is down (requests retry)."""
        return self.verifier.warm_up_at_startup_sync()

    def close(self) -> None:
        """Stop the verifier's background refreshes (unless the verifier was given)."""
        if self._owns_verifier:
            self.verifier.close()

    def __enter__(self) -> M2MGuardWSGIMiddleware:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- requests --------------------------------------------------------------------------
    def __call__(self, environ: WSGIEnvironment,
                 start_response: StartResponse) -> Iterable[bytes]:
        request = WsgiRequest(environ)
        decision = self.gate.decide(request)
        if decision is PASS:
            # The environ stays untouched; a GuardError the app raises anyway (e.g.
            # `require_scopes` under a public prefix) is still answered per the contract.
            return self._run(environ, start_response, None)
        if decision is not AUTHENTICATE:
            return _send_answer(start_response, decision,  # type: ignore[arg-type]
                                head=request.method == "HEAD")
        try:
            access = self.gate.authenticate_sync(request)
        except GuardError as exc:
            return self._refuse(start_response, exc)
        environ[ENVIRON_KEY] = access
        environ[SETTINGS_KEY] = self.settings
        return self._run(environ, start_response, access)

    def _run(self, environ: WSGIEnvironment, start_response: StartResponse,
             access: AccessToken | None) -> Iterable[bytes]:
        """Call the app with `access` as the current token; a `GuardError` it raises, or raises
        while its body is produced, is rendered (PEP 3333 `exc_info` once it started)."""
        exchange = _Exchange(start_response)
        marker = set_current_token(access)
        try:
            result = self.app(environ, exchange.start_response)
        except GuardError as exc:
            return self._refuse(start_response, exc, access, exc_info=exchange.exc_info())
        finally:
            reset_current_token(marker)
        return _GuardedBody(self, result, access, exchange)

    def _refuse(self, start_response: StartResponse, exc: GuardError,
                access: AccessToken | None = None, *, exc_info: Any = None) -> list[bytes]:
        rendered = self.gate.refuse(exc, access)
        headers = list(rendered.headers)
        headers.append(("content-length", str(len(rendered.body))))
        start_response(_status_line(rendered.status), headers, exc_info)
        return [rendered.body]


def _send_answer(start_response: StartResponse, answer: EndpointResponse, *,
                 head: bool) -> list[bytes]:
    """Send one of the guard's own answers (HEAD: the same headers, no body)."""
    start_response(_status_line(answer.status), list(answer.headers))
    return [b"" if head else answer.body]


class _Exchange:
    """The server's `start_response`, and whether the app has called it yet."""

    __slots__ = ("_start_response", "started")

    def __init__(self, start_response: StartResponse) -> None:
        self._start_response = start_response
        self.started = False

    def start_response(self, status: str, headers: list[tuple[str, str]],
                       exc_info: ExcInfo | None = None) -> Callable[[bytes], object]:
        self.started = True
        return self._start_response(status, headers, exc_info)

    def exc_info(self) -> Any:
        """What to pass to `start_response` when replacing the app's answer with a refusal.

        Headers given to `start_response` are not sent before the first body chunk, so the
        server can still replace them when told the reason (PEP 3333); when the app never
        called it, nothing needs replacing.
        """
        return sys.exc_info() if self.started else None

    def refuse(self, guard: M2MGuardWSGIMiddleware, exc: GuardError,
               access: AccessToken | None) -> list[bytes]:
        return guard._refuse(self._start_response, exc, access, exc_info=self.exc_info())


class _GuardedBody:
    """The app's response iterable, iterated and closed with the request's token current.

    A `GuardError` raised before the first non-empty chunk becomes the refusal (the server has
    sent nothing yet); later it propagates, as the response is already on its way.
    """

    __slots__ = ("_access", "_exchange", "_guard", "_iterator", "_result", "_sent")

    def __init__(self, guard: M2MGuardWSGIMiddleware, result: Iterable[bytes],
                 access: AccessToken | None, exchange: _Exchange) -> None:
        self._guard = guard
        self._result = result
        self._access = access
        self._exchange = exchange
        self._iterator: Iterator[bytes] | None = None
        self._sent = False

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        marker = set_current_token(self._access)
        try:
            if self._iterator is None:
                self._iterator = iter(self._result)
            chunk = next(self._iterator)
        except GuardError as exc:
            if self._sent:
                raise
            self._sent = True
            self._iterator = iter(())
            return self._exchange.refuse(self._guard, exc, self._access)[0]
        finally:
            reset_current_token(marker)
        self._sent = self._sent or bool(chunk)
        return chunk

    def close(self) -> None:
        close = getattr(self._result, "close", None)
        if close is not None:
            marker = set_current_token(self._access)
            try:
                close()
            finally:
                reset_current_token(marker)
