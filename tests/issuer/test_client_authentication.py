"""Client authentication at the token endpoint: one password-hash run per request whatever the
client, its number of secrets or the encoding of the credentials; form credentials next to a
non-Basic Authorization header (as Scalekit's Python SDK sends them); stored secrets without a
selector keep working."""

from __future__ import annotations

import base64
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from m2m_guard.local_issuer import LocalIssuer, passwords, serve_issuer

from .conftest import ADMIN_ID, ADMIN_SECRET, ORG, Rig

GRANT = {"grant_type": "client_credentials"}


@pytest.fixture
def scrypt_runs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts the real scrypt runs (the function still runs: only counted)."""
    runs = [0]
    real = passwords._scrypt

    def counting(*args: Any) -> bytes:
        runs[0] += 1
        return real(*args)

    monkeypatch.setattr(passwords, "_scrypt", counting)
    yield runs


def basic(client_id: str, secret: str) -> dict[str, str]:
    value = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": "Basic " + value}


def runs_for(runs: list[int], send: Any) -> tuple[int, int]:
    before = runs[0]
    status = send().status_code
    return status, runs[0] - before


def test_a_wrong_secret_costs_one_run_whatever_the_client(shared_rig: Rig,
                                                          scrypt_runs: list[int]) -> None:
    client, first = shared_rig.create(ORG, name="five secrets")
    path = f"{shared_rig.clients_path()}/{client['client_id']}/secrets"
    plains = [first] + [shared_rig.api.post(path).json()["plain_secret"] for _ in range(4)]
    cid = client["client_id"]
    cases = {
        "unknown id": lambda: shared_rig.token("m2morg_99999999999999999", "test_" + "x" * 64),
        "wrong secret": lambda: shared_rig.token(cid, "test_" + "x" * 64),
        "wrong tail, right selector": lambda: shared_rig.token(cid, plains[4][:-1] + "!"),
        "short secret": lambda: shared_rig.token(cid, "x"),
        "right secret (5th)": lambda: shared_rig.token(cid, plains[4]),
        "Basic with + and %": lambda: shared_rig.http.post(
            "/oauth/token", data=GRANT, headers=basic(cid, "test_a+b%2Bc%zz")),
    }
    costs = {name: runs_for(scrypt_runs, send) for name, send in cases.items()}
    assert costs == {
        "unknown id": (401, 1), "wrong secret": (401, 1), "wrong tail, right selector": (401, 1),
        "short secret": (401, 1), "right secret (5th)": (200, 1), "Basic with + and %": (401, 1),
    }


def test_form_credentials_next_to_a_bearer_header(shared_rig: Rig) -> None:
    """curl -d grant_type=client_credentials -d client_id=… -d client_secret=…
    -H 'Authorization: Bearer x' …/oauth/token (what Scalekit's Python SDK sends)."""
    client, secret = shared_rig.create(ORG, name="sdk")
    for header in ("Bearer x", "Bearer " + "e" * 40, "Token abc", "Negotiate"):
        response = shared_rig.http.post(
            "/oauth/token", headers={"Authorization": header},
            data={**GRANT, "client_id": client["client_id"], "client_secret": secret})
        assert response.status_code == 200, (header, response.text)
    lone = shared_rig.http.post("/oauth/token", headers={"Authorization": "Bearer x"}, data=GRANT)
    assert lone.status_code == 401 and lone.json()["error"] == "invalid_client"
    both = shared_rig.http.post(
        "/oauth/token", headers=basic(client["client_id"], secret),
        data={**GRANT, "client_id": client["client_id"], "client_secret": secret})
    assert both.status_code == 400 and both.json()["error"] == "invalid_request"


def test_secrets_stored_without_a_selector_keep_working(tmp_path: Path) -> None:
    db = str(tmp_path / "old.db")
    with LocalIssuer(db, admin_client_id=ADMIN_ID, admin_client_secret=ADMIN_SECRET) as issuer:
        client, secret = issuer.create_client(ORG, name="before selectors")
    with sqlite3.connect(db) as conn:  # the database as schema version 1 left it
        conn.execute("ALTER TABLE client_secrets DROP COLUMN selector")
        conn.execute("UPDATE meta SET value = '1' WHERE name = 'schema_version'")
    conn.close()
    with LocalIssuer(db, admin_client_id=ADMIN_ID, admin_client_secret=ADMIN_SECRET) as issuer:
        assert issuer.store.get_meta("schema_version") == "2"
        with serve_issuer(issuer) as running, httpx.Client(base_url=running.url) as http:
            good = http.post("/oauth/token", data={**GRANT, "client_id": client["client_id"],
                                                   "client_secret": secret})
            assert good.status_code == 200, good.text
            bad = http.post("/oauth/token", data={**GRANT, "client_id": client["client_id"],
                                                  "client_secret": secret + "x"})
            assert bad.status_code == 401
            admin = http.post("/oauth/token", data=GRANT, headers=basic(ADMIN_ID, ADMIN_SECRET))
            assert admin.status_code == 200
