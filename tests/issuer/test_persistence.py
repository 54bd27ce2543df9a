"""The SQLite store: restarts keep clients, keys and the environment client; secrets at rest."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import pytest

from m2m_guard import GuardSettings, TokenVerifier
from m2m_guard.local_issuer import LocalIssuer, serve_issuer

from .conftest import ADMIN_ID, ADMIN_SECRET, ORG, admin_token


def _files(db: Path) -> bytes:
    """Every byte SQLite keeps for `db` (the database file and its WAL and shared-memory files)."""
    return b"".join(path.read_bytes() for path in db.parent.glob(db.name + "*"))


def test_secrets_are_stored_only_as_salted_hashes(tmp_path: Path) -> None:
    db = tmp_path / "issuer.db"
    issuer = LocalIssuer(str(db), key_publish_delay=0)
    try:
        admin_secret = issuer.new_admin_secret
        assert admin_secret is not None and admin_secret.startswith("skcs_")
        assert issuer.admin_client_id.startswith("skc_")
        with serve_issuer(issuer) as running, httpx.Client(base_url=running.url) as http:
            token = http.post("/oauth/token", auth=(issuer.admin_client_id, admin_secret),
                              data={"grant_type": "client_credentials"}).json()["access_token"]
            api = {"Authorization": "Bearer " + token}
            created = http.post(f"/api/v1/organizations/{ORG}/clients", headers=api,
                                json={"name": "CI"}).json()
            client_id, first = created["client"]["client_id"], created["plain_secret"]
            second = http.post(f"/api/v1/organizations/{ORG}/clients/{client_id}/secrets",
                               headers=api).json()["plain_secret"]
            _, third = issuer.create_client(ORG, name="python api")
        stored = _files(db)
        assert client_id.encode() in stored  # the files are readable: the check below means it
        for plain in (admin_secret, first, second, third):
            assert plain.encode() not in stored
            assert plain[5:].encode() not in stored  # not even without its prefix
        hashes = [row[0] for row in sqlite3.connect(db).execute(
            "SELECT secret_hash FROM client_secrets")]
        assert len(hashes) == 4
        assert all(value.startswith("scrypt$16384$8$1$") for value in hashes)
        salts = {value.split("$")[4] for value in hashes}
        assert len(salts) == 4  # one salt per secret
    finally:
        issuer.close()


def test_restart_keeps_clients_keys_and_tokens(tmp_path: Path) -> None:
    db = str(tmp_path / "issuer.db")
    first = LocalIssuer(db, admin_client_id=ADMIN_ID, admin_client_secret=ADMIN_SECRET,
                        key_publish_delay=0)
    try:
        client, secret = first.create_client(ORG, name="CI", scopes=["read:deployments"],
                                              audience=["deployment-api"])
        with serve_issuer(first) as running, httpx.Client(base_url=running.url) as http:
            port, url = running.port, running.url
            old_token = http.post("/oauth/token", data={
                "grant_type": "client_credentials", "client_id": client["client_id"],
                "client_secret": secret}).json()["access_token"]
            old_admin = admin_token(http)
            kid = first.keys.signing_key().kid
    finally:
        first.close()

    second = LocalIssuer(db, key_publish_delay=0, admin_client_id=ADMIN_ID,
                         admin_client_secret=ADMIN_SECRET)
    try:
        assert second.new_admin_secret is None
        assert second.keys.signing_key().kid == kid
        with serve_issuer(second, port=port) as running, \
                httpx.Client(base_url=running.url) as http:
            assert running.url == url
            settings = GuardSettings(issuer=url, audience="deployment-api")
            with TokenVerifier(settings) as verifier:  # a fresh verifier: keys fetched anew
                assert verifier.verify_sync(old_token).client_id == client["client_id"]
            listed = http.get(f"/api/v1/organizations/{ORG}/clients",
                              headers={"Authorization": "Bearer " + old_admin})
            assert listed.status_code == 200
            assert [c["client_id"] for c in listed.json()["clients"]] == [client["client_id"]]
            again = http.post("/oauth/token", data={
                "grant_type": "client_credentials", "client_id": client["client_id"],
                "client_secret": secret})
            assert again.status_code == 200
    finally:
        second.close()


def test_the_environment_client_persists_and_comes_from_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCALEKIT_CLIENT_ID", raising=False)
    monkeypatch.delenv("SCALEKIT_CLIENT_SECRET", raising=False)
    db = str(tmp_path / "issuer.db")
    with LocalIssuer(db) as created:
        generated_id, generated_secret = created.admin_client_id, created.new_admin_secret
    assert generated_secret is not None
    with LocalIssuer(db) as reopened:
        assert reopened.admin_client_id == generated_id
        assert reopened.new_admin_secret is None  # shown once, on the first start only
        assert reopened.clients.authenticate(generated_id, generated_secret) is not None
    monkeypatch.setenv("SCALEKIT_CLIENT_ID", ADMIN_ID)
    monkeypatch.setenv("SCALEKIT_CLIENT_SECRET", ADMIN_SECRET)
    with LocalIssuer(db) as from_env:
        assert from_env.admin_client_id == ADMIN_ID and from_env.new_admin_secret is None
        assert from_env.clients.authenticate(ADMIN_ID, ADMIN_SECRET) is not None
        # The environment's client replaces the generated one.
        assert from_env.clients.authenticate(generated_id, generated_secret) is None
    monkeypatch.delenv("SCALEKIT_CLIENT_SECRET")
    with pytest.raises(ValueError, match="SCALEKIT_CLIENT_SECRET"):
        LocalIssuer(db)
    monkeypatch.setenv("SCALEKIT_CLIENT_ID", "client_1")
    monkeypatch.setenv("SCALEKIT_CLIENT_SECRET", ADMIN_SECRET)
    with pytest.raises(ValueError, match="skc_"):
        LocalIssuer(db)


def test_file_databases_use_wal(tmp_path: Path) -> None:
    db = str(tmp_path / "issuer.db")
    with LocalIssuer(db, admin_client_id=ADMIN_ID, admin_client_secret=ADMIN_SECRET):
        mode = sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    db = str(tmp_path / "issuer.db")
    with LocalIssuer(db, admin_client_id=ADMIN_ID, admin_client_secret=ADMIN_SECRET):
        pass
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE name = 'schema_version'")
    with pytest.raises(RuntimeError, match="schema version 99"):
        LocalIssuer(db)


def test_a_new_database_file_is_private(tmp_path: Path) -> None:
    db = tmp_path / "issuer.db"
    with LocalIssuer(str(db), admin_client_id=ADMIN_ID, admin_client_secret=ADMIN_SECRET):
        pass
    assert db.stat().st_mode & 0o077 == 0
    assert b"PRIVATE KEY" in _files(db)  # what the mode protects


def test_an_unopenable_database_is_a_sqlite_error(tmp_path: Path) -> None:
    with pytest.raises(sqlite3.OperationalError, match="unable to open database file"):
        LocalIssuer(str(tmp_path / "missing" / "issuer.db"))


def test_concurrent_writes_and_token_requests_on_a_file_database(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    db = str(tmp_path / "issuer.db")
    with LocalIssuer(db, admin_client_id=ADMIN_ID, admin_client_secret=ADMIN_SECRET,
                     key_publish_delay=0) as issuer, serve_issuer(issuer) as running:
        client, secret = issuer.create_client(ORG, name="reader", scopes=["read:deployments"])
        with httpx.Client(base_url=running.url) as http:
            bearer = {"Authorization": "Bearer " + admin_token(http)}

        def work(index: int) -> int:
            with httpx.Client(base_url=running.url, timeout=30) as http:
                if index % 2:
                    return http.post(f"/api/v1/organizations/{ORG}/clients", headers=bearer,
                                     json={"name": f"client {index}"}).status_code
                return http.post("/oauth/token", data={
                    "grant_type": "client_credentials", "client_id": client["client_id"],
                    "client_secret": secret}).status_code

        with ThreadPoolExecutor(max_workers=8) as pool:
            statuses = list(pool.map(work, range(16)))
        assert statuses == [200, 201] * 8
        listed = issuer.clients.list(ORG, page_size=100)
        assert listed["total_size"] == 9
        assert len({c["client_id"] for c in listed["clients"]}) == 9
