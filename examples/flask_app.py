"""The deployment API as a Flask app (an app factory), guarded by the `M2MGuard` extension.

Run it against your issuer (Scalekit or any JWKS-publishing authorization server):

    M2M_GUARD_ISSUER=https://yourenv.scalekit.dev M2M_GUARD_AUDIENCE=deployment-api \
        flask --app examples.flask_app run --port 8000

or under a production WSGI server:

    waitress-serve --port 8000 --call examples.flask_app:create_app

- GET  /deployments   needs read:deployments
- POST /deployments   needs deploy:applications
- GET  /admin/audit   needs admin:platform (a scope the demo client does not have)
- GET  /health        public
- GET  /production/deployments, /admin/clients, /releases: rules beyond scopes
  (`examples/rules.py`)
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, g, jsonify, request

from m2m_guard import GuardSettings
from m2m_guard.flask import M2MGuard, require_scopes

from . import rules

DEPLOYMENTS = [{"id": "dep_1", "service": "billing", "version": "1.4.2", "status": "live"}]

guard = M2MGuard()
deployments = Blueprint("deployments", __name__)
admin = Blueprint("admin", __name__, url_prefix="/admin")


@deployments.get("/deployments")
@require_scopes("read:deployments")
def list_deployments() -> Any:
    return jsonify(deployments=DEPLOYMENTS)


@deployments.post("/deployments")
@require_scopes("deploy:applications")
def deploy() -> Any:
    token = g.m2m_token  # the verified AccessToken (also current_token())
    body = request.get_json(silent=True) or {}
    deployment = {"id": f"dep_{len(DEPLOYMENTS) + 1}", "service": body.get("service"),
                  "version": body.get("version"), "status": "queued",
                  "requested_by": token.client_id, "organization": token.organization_id}
    return jsonify(deployment), 202


@admin.get("/audit")
@require_scopes("admin:platform")
def audit() -> Any:
    return jsonify(audit=[])


@deployments.get("/production/deployments")
@rules.production_deploy
def production_deployments() -> Any:
    return jsonify(deployments=DEPLOYMENTS, environment="production_us")


@admin.get("/clients")
@rules.platform_clients
def platform_clients() -> Any:
    return jsonify(clients=list(rules.PLATFORM_CLIENTS))


@deployments.get("/releases")
@rules.release_managers
def releases() -> Any:
    return jsonify(releases=[])


@deployments.get("/health")
@guard.public
def health() -> Any:
    return jsonify(status="ok")


def create_app(settings: GuardSettings | None = None) -> Flask:
    """The app. Without `settings`, the guard reads ``app.config["M2M_GUARD_*"]`` over the
    M2M_GUARD_* environment variables."""
    app = Flask(__name__)
    app.config.setdefault("M2M_GUARD_PUBLIC_PATHS", ["/health"])
    app.register_blueprint(deployments)
    app.register_blueprint(admin)
    guard.init_app(app, settings=settings)
    return app
