"""The deployment API of the README, guarded by m2m_guard (Starlette).

Run it against your issuer (Scalekit or any JWKS-publishing authorization server):

    M2M_GUARD_ISSUER=https://yourenv.scalekit.dev M2M_GUARD_AUDIENCE=deployment-api \
        uvicorn examples.starlette_app:app --port 8000

- GET  /deployments   needs read:deployments
- POST /deployments   needs deploy:applications
- GET  /admin/audit   needs admin:platform (a scope the demo client does not have)
- GET  /health        public
- GET  /production/deployments, /admin/clients, /releases: rules beyond scopes
  (`examples/rules.py`)
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from m2m_guard import GuardSettings, current_token, require_scopes
from m2m_guard.asgi import M2MGuardMiddleware

try:  # as examples.starlette_app (uvicorn, the tests), or as a file of its own (the demo)
    from . import rules
except ImportError:
    import rules  # type: ignore[no-redef]

DEPLOYMENTS = [{"id": "dep_1", "service": "billing", "version": "1.4.2", "status": "live"}]


@require_scopes("read:deployments")
async def list_deployments(request: Request) -> JSONResponse:
    return JSONResponse({"deployments": DEPLOYMENTS})


@require_scopes("deploy:applications")
async def deploy(request: Request) -> JSONResponse:
    token = current_token()
    assert token is not None  # require_scopes guarantees it
    body = await request.json()
    deployment = {"id": f"dep_{len(DEPLOYMENTS) + 1}", "service": body.get("service"),
                  "version": body.get("version"), "status": "queued",
                  "requested_by": token.client_id, "organization": token.organization_id}
    return JSONResponse(deployment, status_code=202)


@require_scopes("admin:platform")
async def admin_audit(request: Request) -> JSONResponse:
    return JSONResponse({"audit": []})


@rules.production_deploy
async def production_deployments(request: Request) -> JSONResponse:
    return JSONResponse({"deployments": DEPLOYMENTS, "environment": "production_us"})


@rules.platform_clients
async def platform_clients(request: Request) -> JSONResponse:
    return JSONResponse({"clients": list(rules.PLATFORM_CLIENTS)})


@rules.release_managers
def releases(request: Request) -> JSONResponse:  # a sync endpoint: Starlette runs it in a thread
    return JSONResponse({"releases": []})


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


def create_app(settings: GuardSettings | None = None) -> Starlette:
    """The app; `settings` default to the M2M_GUARD_* environment variables."""
    settings = settings if settings is not None else GuardSettings.from_env(
        public_paths=("/health",))
    return Starlette(
        routes=[
            Route("/deployments", list_deployments, methods=["GET"]),
            Route("/deployments", deploy, methods=["POST"]),
            Route("/admin/audit", admin_audit),
            Route("/production/deployments", production_deployments),
            Route("/admin/clients", platform_clients),
            Route("/releases", releases),
            Route("/health", health),
        ],
        middleware=[Middleware(M2MGuardMiddleware, settings=settings)],
    )


def __getattr__(name: str) -> Starlette:
    # `uvicorn examples.starlette_app:app` builds the app on first access, so importing this
    # module (as the demo does) needs no environment variables.
    if name == "app":
        return create_app()
    raise AttributeError(name)
