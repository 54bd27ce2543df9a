"""SQLite persistence for the local issuer: clients, their hashed secrets, signing keys.

One connection shared by every thread behind a lock (SQLite serializes writers anyway, and a
``:memory:`` database exists only inside its one connection); files use WAL journaling so
readers never wait on the single writer. The schema is created on first open and versioned in
the ``meta`` table. Nothing here knows HTTP or JSON shapes: rows in, rows out.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

__all__ = ["SCHEMA_VERSION", "Store"]

SCHEMA_VERSION = 2  # 2: client_secrets.selector

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS signing_keys (
    kid TEXT PRIMARY KEY,
    alg TEXT NOT NULL,
    private_pem TEXT NOT NULL,
    created REAL NOT NULL,
    signs_from REAL NOT NULL,
    max_exp REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS clients (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    client_id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL CHECK (kind IN ('m2m', 'environment')),
    organization_id TEXT,
    name TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    scopes TEXT NOT NULL DEFAULT '[]',
    audience TEXT NOT NULL DEFAULT '[]',
    custom_claims TEXT NOT NULL DEFAULT '[]',
    expiry INTEGER NOT NULL,
    create_time REAL NOT NULL,
    update_time REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS clients_by_org ON clients (organization_id, seq);
CREATE TABLE IF NOT EXISTS client_secrets (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    client_id TEXT NOT NULL REFERENCES clients (client_id) ON DELETE CASCADE,
    secret_hash TEXT NOT NULL,
    secret_suffix TEXT NOT NULL,
    selector TEXT,
    status TEXT NOT NULL,
    create_time REAL NOT NULL,
    update_time REAL NOT NULL,
    last_used_time REAL
);
CREATE INDEX IF NOT EXISTS secrets_by_client ON client_secrets (client_id, seq);
"""


class Store:
    """A thread-safe SQLite store (`path` a file name or ``":memory:"``); a new file is created
    with mode 0600, since it holds the private signing keys.

    `transaction()` yields a cursor inside one write transaction (committed on success, rolled
    back on error); `query` / `query_one` read. All calls hold one re-entrant lock.
    """

    def __init__(self, path: str = ":memory:") -> None:
        self.path = path
        self._lock = threading.RLock()
        if path != ":memory:" and not path.startswith("file:") and not os.path.exists(path):
            # The database holds private signing keys: readable by its owner only. SQLite gives
            # its -wal and -shm files the permissions of the database file.
            try:
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
            except OSError as exc:  # the error sqlite3 itself raises for a file it cannot open
                raise sqlite3.OperationalError(
                    f"unable to open database file {path!r}: {exc.strerror}") from None
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None,
                                     timeout=10.0)
        self._conn.row_factory = sqlite3.Row
        with self._lock:
            self._conn.execute("PRAGMA foreign_keys = ON")
            if path != ":memory:":
                self._conn.execute("PRAGMA journal_mode = WAL")
                self._conn.execute("PRAGMA synchronous = NORMAL")
            with self.transaction() as cur:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        cur.execute(statement)
                row = cur.execute("SELECT value FROM meta WHERE name = 'schema_version'")\
                    .fetchone()
                if row is None:
                    cur.execute("INSERT INTO meta (name, value) VALUES ('schema_version', ?)",
                                (str(SCHEMA_VERSION),))
                elif int(row["value"]) > SCHEMA_VERSION:
                    raise RuntimeError(
                        f"the database {path!r} has schema version {row['value']}, newer than "
                        f"this m2m_guard understands ({SCHEMA_VERSION}); upgrade m2m_guard")
                elif int(row["value"]) < SCHEMA_VERSION:
                    self._migrate(cur)

    @staticmethod
    def _migrate(cur: sqlite3.Cursor) -> None:
        """Version 1 to 2: secrets gain a nullable `selector` (the secrets stored before have
        none and keep working; see `Clients.authenticate`)."""
        columns = {row["name"] for row in cur.execute("PRAGMA table_info(client_secrets)")}
        if "selector" not in columns:
            cur.execute("ALTER TABLE client_secrets ADD COLUMN selector TEXT")
        cur.execute("UPDATE meta SET value = ? WHERE name = 'schema_version'",
                    (str(SCHEMA_VERSION),))

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Cursor]:
        """One write transaction (BEGIN IMMEDIATE … COMMIT), rolled back if the block raises."""
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            else:
                cur.execute("COMMIT")
            finally:
                cur.close()

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def query_one(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        with self._lock:
            row: sqlite3.Row | None = self._conn.execute(sql, params).fetchone()
            return row

    def get_meta(self, name: str) -> str | None:
        row = self.query_one("SELECT value FROM meta WHERE name = ?", (name,))
        return None if row is None else str(row["value"])

    def close(self) -> None:
        with self._lock:
            self._conn.close()
