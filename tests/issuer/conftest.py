"""Fixtures for the local issuer: a served `LocalIssuer` and clients that talk to it over HTTP."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from m2m_guard.local_issuer import LocalIssuer, RunningIssuer, serve_issuer

ADMIN_ID = "skc_10000000000000001"
ADMIN_SECRET = "skcs_" + "a1B2c3D4" * 8
ORG = "org_59615193906282635"
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@dataclass
class Rig:
    """A served issuer, an anonymous HTTP client and an authorized management client."""

    issuer: LocalIssuer
    running: RunningIssuer
    http: httpx.Client
    api: httpx.Client

    @property
    def url(self) -> str:
        return self.running.url

    def token(self, client_id: str, secret: str, **form: str) -> httpx.Response:
        data = {"grant_type": "client_credentials", "client_id": client_id,
                "client_secret": secret, **form}
        return self.http.post("/oauth/token", data=data)

    def access_token(self, client_id: str, secret: str, **form: str) -> str:
        response = self.token(client_id, secret, **form)
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    def clients_path(self, org: str = ORG) -> str:
        return f"/api/v1/organizations/{org}/clients"

    def create(self, org: str = ORG, **body: Any) -> tuple[dict[str, Any], str]:
        payload = {"name": "GitHub Actions Deployment Service", **body}
        response = self.api.post(self.clients_path(org), json=payload)
        assert response.status_code == 201, response.text
        data = response.json()
        return data["client"], data["plain_secret"]


def admin_token(http: httpx.Client) -> str:
    response = http.post("/oauth/token", auth=(ADMIN_ID, ADMIN_SECRET),
                         data={"grant_type": "client_credentials"})
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def make_rig(issuer: LocalIssuer, **serve: Any) -> Iterator[Rig]:
    with serve_issuer(issuer, **serve) as running, \
            httpx.Client(base_url=running.url, timeout=10) as http:
        api = httpx.Client(base_url=running.url, timeout=10,
                           headers={"Authorization": "Bearer " + admin_token(http)})
        with api:
            yield Rig(issuer, running, http, api)


@pytest.fixture(scope="module")
def shared_rig() -> Iterator[Rig]:
    """One served in-memory issuer per module (tests use their own organizations or clients)."""
    issuer = LocalIssuer(admin_client_id=ADMIN_ID, admin_client_secret=ADMIN_SECRET,
                         key_publish_delay=0)
    try:
        yield from make_rig(issuer)
    finally:
        issuer.close()


@pytest.fixture
def rig() -> Iterator[Rig]:
    """A fresh served in-memory issuer for one test."""
    issuer = LocalIssuer(admin_client_id=ADMIN_ID, admin_client_secret=ADMIN_SECRET,
                         key_publish_delay=0)
    try:
        yield from make_rig(issuer)
    finally:
        issuer.close()


_org_counter = iter(range(10**6))


@pytest.fixture
def org() -> str:
    """A fresh organization id."""
    return f"org_{next(_org_counter) + 70000000000000000}"
