"""The deployment API of the README, guarded by m2m_guard (FastAPI, dependency form).

Run it against your issuer (Scalekit or any JWKS-publishing authorization server):

    M2M_GUARD_ISSUER=https://yourenv.scalekit.dev M2M_GUARD_AUDIENCE=deployment-api \
        uvicorn examples.fastapi_app:app --port 8000

then open http://127.0.0.1:8000/docs: each guarded operation shows a lock with its scopes, and
"Authorize" offers the client-credentials flow against the issuer's token endpoint.

- GET  /deployments   needs read:deployments
- POST /deployments   needs deploy:applications (202)
- GET  /admin/audit   needs admin:platform (a scope the demo client does not have)
- GET  /health        public
- GET  /production/deployments, /admin/clients, /releases: rules beyond scopes
  (`examples/rules.py`), as `RequireRule` dependencies
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, FastAPI
from pydantic import BaseModel

from m2m_guard import AccessToken, GuardSettings
from m2m_guard.fastapi import M2MGuard, RequireRule, RequireScopes

from . import rules

DEPLOYMENTS = [{"id": "dep_1", "service": "billing", "version": "1.4.2", "status": "live"}]

SCOPES = {
    "read:deployments": "List deployments",
    "deploy:applications": "Start a deployment",
    "admin:platform": "Read the platform audit log",
}

router = APIRouter()


class DeploymentRequest(BaseModel):
    service: str
    version: str


@router.get("/deployments")
async def list_deployments(
    token: Annotated[AccessToken, RequireScopes("read:deployments")],
) -> dict[str, Any]:
    return {"deployments": DEPLOYMENTS, "client_id": token.client_id}


@router.post("/deployments", status_code=202)
async def deploy(
    deployment: DeploymentRequest,
    token: Annotated[AccessToken, RequireScopes("deploy:applications")],
) -> dict[str, Any]:
    return {"id": f"dep_{len(DEPLOYMENTS) + 1}", "service": deployment.service,
            "version": deployment.version, "status": "queued",
            "requested_by": token.client_id, "organization": token.organization_id}


@router.get("/admin/audit", dependencies=[RequireScopes("admin:platform")])
def admin_audit() -> dict[str, Any]:  # a sync path operation: FastAPI runs it in a thread
    return {"audit": []}


@router.get("/production/deployments")
async def production_deployments(
    token: Annotated[AccessToken, RequireRule(rules.production_deploy)],
) -> dict[str, Any]:
    return {"deployments": DEPLOYMENTS, "environment": "production_us"}


@router.get("/admin/clients", dependencies=[RequireRule(rules.platform_clients)])
async def platform_clients() -> dict[str, Any]:
    return {"clients": list(rules.PLATFORM_CLIENTS)}


@router.get("/releases", dependencies=[RequireRule(rules.release_managers)])
def releases() -> dict[str, Any]:
    return {"releases": []}


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


def create_app(settings: GuardSettings | None = None) -> FastAPI:
    """The app; `settings` default to the M2M_GUARD_* environment variables."""
    app = FastAPI(title="Deployment API", version="1.0.0")
    app.include_router(router)
    M2MGuard(app, settings, scopes=SCOPES)
    return app


def __getattr__(name: str) -> FastAPI:
    # `uvicorn examples.fastapi_app:app` builds the app on first access, so importing this
    # module needs no environment variables.
    if name == "app":
        return create_app()
    raise AttributeError(name)
