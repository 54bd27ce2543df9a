"""A first end-to-end pass through a real Starlette app (the full table lives in test_contract)."""

from __future__ import annotations

from starlette.testclient import TestClient

from m2m_guard.local_issuer import KeySetServer

from .conftest import deployment_app


def test_valid_token_reaches_endpoint(issuer: KeySetServer, settings) -> None:
    with TestClient(deployment_app(settings)) as client:
        response = client.get("/deployments", headers={"Authorization": f"Bearer {issuer.mint()}"})
    assert response.status_code == 200
    body = response.json()
    assert body["client_id"] == "m2morg_68315758685323697"
    assert body["user"] == "m2morg_68315758685323697"
    assert "read:deployments" in body["auth_scopes"]


def test_missing_scope_is_403(issuer: KeySetServer, settings) -> None:
    with TestClient(deployment_app(settings)) as client:
        response = client.get("/admin", headers={"Authorization": f"Bearer {issuer.mint()}"})
    assert response.status_code == 403
    assert response.headers["www-authenticate"] == (
        'Bearer realm="api", error="insufficient_scope", '
        'error_description="The access token lacks the scope: admin:platform", '
        'scope="admin:platform"')
