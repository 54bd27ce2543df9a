"""The applications measured: a hello-world (Starlette and plain WSGI) bare or behind a guard.

Contenders besides m2m_guard are written the way such middleware is commonly written:

- `NaivePyJWTMiddleware`: a pure ASGI middleware calling PyJWT's `jwt.decode` with a prepared key
  on every request (no verified-token cache);
- `BaseHTTPPyJWTMiddleware`: Starlette's `BaseHTTPMiddleware` around the same `jwt.decode` (the
  shape of fastapi-azure-auth and many tutorials);
- `NaivePyJWTWSGIMiddleware`: the WSGI twin of the first.

`make_asgi()` / `make_wsgi()` build a variant from environment variables, for the HTTP servers
started by `benchmarks.http_bench` (``BENCH_VARIANT``, ``BENCH_ISSUER``, ``BENCH_JWKS``,
``BENCH_CACHE_SIZE``).
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Callable, Iterable
from typing import Any

import jwt
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from m2m_guard import GuardSettings, TokenVerifier
from m2m_guard.asgi import M2MGuardMiddleware

AUDIENCE = "deployment-api"
ASGI_VARIANTS = ("no-auth", "m2m-unique", "m2m-repeated", "naive-pyjwt", "basehttp-pyjwt")
WSGI_VARIANTS = ("no-auth", "m2m-unique", "m2m-repeated", "naive-pyjwt")

Scope = dict[str, Any]
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


async def hello(request: Request) -> Response:
    return PlainTextResponse("hello")


def starlette_app(middleware: list[Middleware] | None = None) -> Starlette:
    return Starlette(routes=[Route("/", hello)], middleware=middleware or [])


def _unauthorized() -> Response:
    return PlainTextResponse("unauthorized", status_code=401,
                             headers={"WWW-Authenticate": 'Bearer realm="api"'})


class NaivePyJWTMiddleware:
    """Pure ASGI, `jwt.decode` with a prepared key per request, claims in the scope."""

    def __init__(self, app: Any, key: Any, algorithms: list[str], issuer: str) -> None:
        self.app, self.key, self.algorithms, self.issuer = app, key, algorithms, issuer

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        scheme, _, token = header.partition(" ")
        try:
            if scheme.lower() != "bearer":
                raise jwt.InvalidTokenError("no bearer token")
            scope["user"] = jwt.decode(token, self.key, algorithms=self.algorithms,
                                       audience=AUDIENCE, issuer=self.issuer)
        except jwt.InvalidTokenError:
            await _unauthorized()(scope, receive, send)
            return
        await self.app(scope, receive, send)


class BaseHTTPPyJWTMiddleware(BaseHTTPMiddleware):
    """`BaseHTTPMiddleware` + `jwt.decode` (the fastapi-azure-auth style)."""

    def __init__(self, app: Any, key: Any, algorithms: list[str], issuer: str) -> None:
        super().__init__(app)
        self.key, self.algorithms, self.issuer = key, algorithms, issuer

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        try:
            if scheme.lower() != "bearer":
                raise jwt.InvalidTokenError("no bearer token")
            request.state.claims = jwt.decode(token, self.key, algorithms=self.algorithms,
                                              audience=AUDIENCE, issuer=self.issuer)
        except jwt.InvalidTokenError:
            return _unauthorized()
        return await call_next(request)


def hello_wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"hello"]


class NaivePyJWTWSGIMiddleware:
    """WSGI, `jwt.decode` with a prepared key per request, claims in the environ."""

    def __init__(self, app: WSGIApp, key: Any, algorithms: list[str], issuer: str) -> None:
        self.app, self.key, self.algorithms, self.issuer = app, key, algorithms, issuer

    def __call__(self, environ: dict[str, Any],
                 start_response: Callable[..., Any]) -> Iterable[bytes]:
        scheme, _, token = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        try:
            if scheme.lower() != "bearer":
                raise jwt.InvalidTokenError("no bearer token")
            environ["jwt.claims"] = jwt.decode(token, self.key, algorithms=self.algorithms,
                                               audience=AUDIENCE, issuer=self.issuer)
        except jwt.InvalidTokenError:
            start_response("401 Unauthorized", [("Content-Type", "text/plain"),
                                                ("WWW-Authenticate", 'Bearer realm="api"')])
            return [b"unauthorized"]
        return self.app(environ, start_response)


def guard_settings(issuer: str, cache_size: int | None = None) -> GuardSettings:
    options: dict[str, Any] = {"jwks_url": issuer + "/keys"}
    if cache_size is not None:
        options["token_cache_size"] = cache_size
    return GuardSettings(issuer=issuer, audience=AUDIENCE, **options)


def build_asgi(variant: str, *, issuer: str, key: Any, alg: str,
               cache_size: int | None = None, verifier: TokenVerifier | None = None) -> Any:
    """One ASGI variant (`ASGI_VARIANTS`); `key` is the prepared public key for PyJWT."""
    if variant == "no-auth":
        return starlette_app()
    if variant in ("m2m-unique", "m2m-repeated"):
        if verifier is not None:
            return starlette_app([Middleware(M2MGuardMiddleware, verifier=verifier)])
        return starlette_app([Middleware(M2MGuardMiddleware,
                                         settings=guard_settings(issuer, cache_size))])
    if variant == "naive-pyjwt":
        return starlette_app([Middleware(NaivePyJWTMiddleware, key=key, algorithms=[alg],
                                         issuer=issuer)])
    if variant == "basehttp-pyjwt":
        return starlette_app([Middleware(BaseHTTPPyJWTMiddleware, key=key, algorithms=[alg],
                                         issuer=issuer)])
    raise ValueError(f"unknown ASGI variant {variant!r}")


def wsgi_guard_class() -> Any | None:
    """`m2m_guard.wsgi.M2MGuardWSGIMiddleware` when this build has it, else None."""
    try:
        from m2m_guard.wsgi import M2MGuardWSGIMiddleware  # type: ignore[import-not-found]
    except ImportError:
        return None
    return M2MGuardWSGIMiddleware


def build_wsgi(variant: str, *, issuer: str, key: Any, alg: str,
               cache_size: int | None = None) -> WSGIApp:
    """One WSGI variant (`WSGI_VARIANTS`); raises LookupError when m2m_guard has no WSGI yet."""
    if variant == "no-auth":
        return hello_wsgi
    if variant in ("m2m-unique", "m2m-repeated"):
        guard = wsgi_guard_class()
        if guard is None:
            raise LookupError("m2m_guard WSGI: not available in this build")
        app: WSGIApp = guard(hello_wsgi, settings=guard_settings(issuer, cache_size))
        return app
    if variant == "naive-pyjwt":
        return NaivePyJWTWSGIMiddleware(hello_wsgi, key=key, algorithms=[alg], issuer=issuer)
    raise ValueError(f"unknown WSGI variant {variant!r}")


def _key_from_env() -> tuple[str, Any, str, int | None]:
    issuer = os.environ["BENCH_ISSUER"]
    size = os.environ.get("BENCH_CACHE_SIZE")
    if os.environ["BENCH_VARIANT"].startswith("m2m"):
        # The guard fetches its own key set (once per worker, at startup); fetching it here as
        # well would blur the count of fetches the benchmark checks.
        return issuer, None, "RS256", int(size) if size else None
    with urllib.request.urlopen(issuer + "/keys", timeout=5) as response:  # loopback only
        jwk = json.loads(response.read())["keys"][0]
    key = jwt.PyJWK(jwk).key
    return issuer, key, jwk["alg"], int(size) if size else None


def make_asgi() -> Any:
    """uvicorn ``--factory`` entry point."""
    issuer, key, alg, size = _key_from_env()
    return build_asgi(os.environ["BENCH_VARIANT"], issuer=issuer, key=key, alg=alg,
                      cache_size=size)


def make_wsgi() -> WSGIApp:
    """waitress ``--call`` entry point."""
    issuer, key, alg, size = _key_from_env()
    return build_wsgi(os.environ["BENCH_VARIANT"], issuer=issuer, key=key, alg=alg,
                      cache_size=size)
