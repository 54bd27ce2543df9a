"""Shared fixtures: real signing keys, a real key-set server on loopback, a Starlette app."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from m2m_guard import GuardSettings, current_token, require_any_scope, require_scopes
from m2m_guard.asgi import M2MGuardMiddleware
from m2m_guard.local_issuer import KeySetServer, SigningKey

AUDIENCE = "deployment-api"
ALGORITHMS = ("RS256", "PS256", "ES256", "EdDSA")


@pytest.fixture
def anyio_backend() -> str:
    """`@pytest.mark.anyio` tests run on asyncio. Named here because anyio 4.0 (the declared
    minimum) runs them on asyncio and on trio by default; later releases on asyncio only."""
    return "asyncio"


@pytest.fixture(scope="session")
def signing_keys() -> dict[str, SigningKey]:
    """One key per algorithm family we test with, made once per session."""
    return {alg: SigningKey.generate(alg, kid=f"snk_{alg.lower()}") for alg in ALGORITHMS}


@pytest.fixture
def issuer(signing_keys: dict[str, SigningKey]) -> Iterator[KeySetServer]:
    """A real key-set server on 127.0.0.1 publishing all `signing_keys` (RS256 first)."""
    with KeySetServer(list(signing_keys.values())) as server:
        yield server


@pytest.fixture
def make_settings(issuer: KeySetServer) -> Callable[..., GuardSettings]:
    def make(**overrides: Any) -> GuardSettings:
        values: dict[str, Any] = {"issuer": issuer.url, "audience": AUDIENCE,
                                  "http_timeout": 2.0}
        values.update(overrides)
        return GuardSettings(**values)

    return make


@pytest.fixture
def settings(make_settings: Callable[..., GuardSettings]) -> GuardSettings:
    return make_settings()


def deployment_app(settings: GuardSettings, **middleware_options: Any) -> Starlette:
    """The seed's deployment API as a Starlette app guarded by `M2MGuardMiddleware`."""

    @require_scopes("read:deployments")
    async def list_deployments(request: Request) -> JSONResponse:
        token = current_token()
        assert token is not None
        return JSONResponse({"deployments": ["api-v1"], "client_id": token.client_id,
                             "user": request.user.display_name,
                             "auth_scopes": sorted(request.auth.scopes)})

    @require_scopes("deploy:applications")
    def deploy(request: Request) -> JSONResponse:  # sync endpoint: runs in a thread
        token = current_token()
        assert token is not None
        return JSONResponse({"deployed": True, "organization_id": token.organization_id})

    @require_scopes("admin:platform")
    async def admin(request: Request) -> JSONResponse:
        return JSONResponse({"admin": True})

    @require_any_scope("read:deployments", "audit:read")
    async def audit(request: Request) -> JSONResponse:
        return JSONResponse({"audit": True})

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True, "token": request.scope.get("m2m_guard.token")})

    routes = [
        Route("/deployments", list_deployments),
        Route("/deployments", deploy, methods=["POST"]),
        Route("/admin", admin),
        Route("/audit", audit),
        Route("/health", health),
        Route("/docs/index", health),
    ]
    return Starlette(routes=routes, middleware=[
        Middleware(M2MGuardMiddleware, settings=settings, **middleware_options)])


# -- Hypothesis profiles: "ci" (the default, bounded, part of `make test`) and "fuzz" (`make fuzz`,
# a long run: `pytest tests/fuzz --hypothesis-profile=fuzz`).
from hypothesis import HealthCheck  # noqa: E402
from hypothesis import settings as hypothesis_settings  # noqa: E402

hypothesis_settings.register_profile(
    "ci", max_examples=200, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow])
hypothesis_settings.register_profile(
    "fuzz", max_examples=20_000, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
hypothesis_settings.load_profile("ci")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a real redis-server on 127.0.0.1 (tests/redis_server.py), one per session;
    the test fails, saying what to install, when no redis-server can be found."""
    from .redis_server import RedisUnavailable, redis_server

    try:
        server = redis_server(tmp_path_factory.mktemp("redis"))
        url = server.__enter__()
    except RedisUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield url
    finally:
        server.__exit__(None, None, None)
