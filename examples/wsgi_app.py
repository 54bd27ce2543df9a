"""The deployment API as a plain WSGI application, guarded by `M2MGuardWSGIMiddleware`.

Run it with any WSGI server, e.g. waitress:

    M2M_GUARD_ISSUER=https://yourenv.scalekit.dev M2M_GUARD_AUDIENCE=deployment-api \
        waitress-serve --port 8000 --call examples.wsgi_app:create_app

- GET  /deployments   needs read:deployments
- POST /deployments   needs deploy:applications
- GET  /admin/audit   needs admin:platform (a scope the demo client does not have)
- GET  /health        public
- GET  /production/deployments, /admin/clients, /releases: rules beyond scopes
  (`examples/rules.py`)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from m2m_guard import GuardSettings, current_token, require_scopes
from m2m_guard.wsgi import M2MGuardWSGIMiddleware

from . import rules

DEPLOYMENTS = [{"id": "dep_1", "service": "billing", "version": "1.4.2", "status": "live"}]

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
Handler = Callable[[Environ], tuple[int, Any]]
_REASONS = {200: "OK", 202: "Accepted", 400: "Bad Request", 404: "Not Found",
            405: "Method Not Allowed"}


def _read_json(environ: Environ) -> dict[str, Any]:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    raw = environ["wsgi.input"].read(min(length, 65536)) if length > 0 else b""
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


@require_scopes("read:deployments")
def list_deployments(environ: Environ) -> tuple[int, Any]:
    return 200, {"deployments": DEPLOYMENTS}


@require_scopes("deploy:applications")
def deploy(environ: Environ) -> tuple[int, Any]:
    token = current_token()
    assert token is not None  # require_scopes guarantees it
    body = _read_json(environ)
    return 202, {"id": f"dep_{len(DEPLOYMENTS) + 1}", "service": body.get("service"),
                 "version": body.get("version"), "status": "queued",
                 "requested_by": token.client_id, "organization": token.organization_id}


@require_scopes("admin:platform")
def admin_audit(environ: Environ) -> tuple[int, Any]:
    return 200, {"audit": []}


@rules.production_deploy
def production_deployments(environ: Environ) -> tuple[int, Any]:
    return 200, {"deployments": DEPLOYMENTS, "environment": "production_us"}


@rules.platform_clients
def platform_clients(environ: Environ) -> tuple[int, Any]:
    return 200, {"clients": list(rules.PLATFORM_CLIENTS)}


@rules.release_managers
def releases(environ: Environ) -> tuple[int, Any]:
    return 200, {"releases": []}


def health(environ: Environ) -> tuple[int, Any]:
    return 200, {"status": "ok"}


ROUTES: dict[str, dict[str, Handler]] = {
    "/deployments": {"GET": list_deployments, "POST": deploy},
    "/admin/audit": {"GET": admin_audit},
    "/production/deployments": {"GET": production_deployments},
    "/admin/clients": {"GET": platform_clients},
    "/releases": {"GET": releases},
    "/health": {"GET": health},
}


def deployment_api(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """The bare WSGI app: a tiny router over `ROUTES`, JSON in and out."""
    methods = ROUTES.get(environ.get("PATH_INFO") or "/")
    handler = None if methods is None else methods.get(environ.get("REQUEST_METHOD", "GET"))
    if methods is None:
        status, payload = 404, {"error": "not_found"}
    elif handler is None:
        status, payload = 405, {"error": "method_not_allowed"}
    else:
        # A GuardError raised here (by require_scopes) is answered by the middleware.
        status, payload = handler(environ)
    body = json.dumps(payload).encode()
    start_response(f"{status} {_REASONS[status]}", [
        ("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def create_app(settings: GuardSettings | None = None) -> M2MGuardWSGIMiddleware:
    """The guarded app; `settings` default to the M2M_GUARD_* environment variables."""
    settings = settings if settings is not None else GuardSettings.from_env(
        public_paths=("/health",))
    return M2MGuardWSGIMiddleware(deployment_api, settings)
