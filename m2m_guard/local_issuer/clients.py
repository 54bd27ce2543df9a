"""API clients of the local issuer: validation, storage, and Scalekit's JSON shapes.

`Clients` implements the client-management operations once, for the HTTP API and the Python
API alike. Input is validated field by field; a bad request raises `ApiError` with status 400
and a `details` list naming each field and what is wrong with it, an unknown id raises 404.
Secrets are created here, returned in plain text exactly once, and stored only as scrypt hashes
(`passwords`).

A secret made here starts with a selector: its prefix and the next `SELECTOR_CHARS` random
characters (``test_`` + 16), stored in clear next to the hash. It is not secret (the 48
characters after it are, about 285 bits): it only picks the one hash to check, so a wrong secret
costs one scrypt run whatever the client and its number of secrets, as an unknown client id
does. Secrets without a stored selector (set by the operator through ``SCALEKIT_CLIENT_SECRET``,
or stored before selectors existed) are checked as before, one run per such secret.
"""

from __future__ import annotations

import hmac
import json
import re
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any

from . import ids
from .passwords import hash_secret, verify_nothing, verify_secret
from .store import Store

__all__ = ["MAX_SECRETS", "ApiError", "Clients", "ClientRecord", "rfc3339"]

MAX_SECRETS = 5
DEFAULT_EXPIRY = 3600
MIN_EXPIRY = 60
MAX_EXPIRY = 86400
MAX_NAME = 128
MAX_DESCRIPTION = 1024
MAX_SCOPES = 50
MAX_SCOPE_LENGTH = 128
MAX_AUDIENCES = 10
MAX_AUDIENCE_LENGTH = 255
MAX_CUSTOM_CLAIMS = 20
MAX_CLAIM_KEY = 64
MAX_CLAIM_VALUE = 512
DEFAULT_PAGE_SIZE = 30
MAX_PAGE_SIZE = 100
SECRET_PREFIX = "test_"  # noqa: S105 - a prefix, as Scalekit's secrets have
SELECTOR_CHARS = 16
ENV_SECRET_PREFIX = "skcs_"  # noqa: S105

# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
_AUDIENCE = re.compile(r"[\x21-\x7e]+")
_CLAIM_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_FIELDS = ("name", "description", "scopes", "audience", "custom_claims", "expiry")


class ApiError(Exception):
    """A management-API error: HTTP `status`, Scalekit-style `code`, `message`, `details`."""

    def __init__(self, status: int, code: str, message: str,
                 details: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or []

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}


def _invalid(violations: list[dict[str, str]]) -> ApiError:
    summary = "; ".join(f"{v['field']}: {v['description']}" for v in violations)
    return ApiError(400, "INVALID_ARGUMENT", f"Invalid request: {summary}.", violations)


def bad_request(field: str, description: str) -> ApiError:
    """A 400 for one field."""
    return _invalid([{"field": field, "description": description}])


def not_found(what: str, value: str) -> ApiError:
    return ApiError(404, "NOT_FOUND", f"No {what} with id {value!r}.",
                    [{"field": what.replace(" ", "_") + "_id", "description": "not found"}])


def rfc3339(timestamp: float) -> str:
    """``2025-04-16T06:56:05.360Z`` (UTC, milliseconds)."""
    moment = datetime.fromtimestamp(timestamp, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def check_id(pattern: re.Pattern[str], value: object, field: str, prefix: str) -> str:
    """`value` if it is a well-formed id, else a 400 saying what an id of this kind looks like."""
    if not ids.valid_id(pattern, value):
        raise bad_request(field, f"must be {prefix} followed by 1 to 64 letters or digits, "
                                 f"e.g. {prefix}59615193906282635")
    assert isinstance(value, str)
    return value


# -- field validation ---------------------------------------------------------------------------
# str.isdigit() also accepts superscript, fullwidth and Arabic-Indic digits; int() not all.
_ASCII_DIGITS = re.compile(r"[0-9]+")
MAX_PAGE_TOKEN = 64


def ascii_integer(text: str, max_digits: int) -> int | None:
    """`text` as an int when it is 1 to `max_digits` ASCII digits, else None (superscripts,
    fullwidth or Arabic-Indic digits, signs, spaces and longer strings are not numbers here)."""
    if len(text) > max_digits or _ASCII_DIGITS.fullmatch(text) is None:
        return None
    return int(text)


def check_text(value: Any, field: str = "body") -> None:
    """400 naming the field when any string in the decoded JSON `value`, member names included,
    is not valid Unicode (a lone surrogate such as ``"\\ud800"``, which JSON can express but
    UTF-8, SQLite and every JSON response cannot). Iterative: JSON depth is bounded by the
    parser, and no recursion is needed anyway."""
    stack: list[tuple[Any, str]] = [(value, field)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if not _valid_unicode(item):
                raise bad_request(where, "is not valid Unicode text (it holds a lone surrogate)")
        elif isinstance(item, dict):
            for name, member in item.items():
                if not _valid_unicode(name):
                    raise bad_request(where, "has a member whose name is not valid Unicode text "
                                             "(it holds a lone surrogate)")
                stack.append((member, name if where == "body" else f"{where}.{name}"))
        elif isinstance(item, list):
            stack.extend((member, f"{where}[{index}]") for index, member in enumerate(item))


def _valid_unicode(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _text(value: Any, field: str, limit: int, *, required: bool) -> str:
    if not isinstance(value, str):
        raise bad_request(field, f"must be a string, got {_kind(value)}")
    if required and not value.strip():
        raise bad_request(field, "must not be empty")
    if len(value) > limit:
        raise bad_request(field, f"must be at most {limit} characters, got {len(value)}")
    if _CONTROL.search(value.replace("\n", "").replace("\t", "") if field == "description"
                       else value):
        raise bad_request(field, "must not contain control characters")
    return value


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _string_list(value: Any, field: str, limit: int, max_items: int,
                 pattern: re.Pattern[str], what: str) -> list[str]:
    if not isinstance(value, list):
        raise bad_request(field, f"must be an array of strings, got {_kind(value)}")
    if len(value) > max_items:
        raise bad_request(field, f"must have at most {max_items} entries, got {len(value)}")
    result: list[str] = []
    for index, item in enumerate(value):
        where = f"{field}[{index}]"
        if not isinstance(item, str):
            raise bad_request(where, f"must be a string, got {_kind(item)}")
        if not item or len(item) > limit:
            raise bad_request(where, f"must be 1 to {limit} characters long")
        if pattern.fullmatch(item) is None:
            raise bad_request(where, f"{item[:40]!r} is not a valid {what}")
        if item not in result:
            result.append(item)
    return result


def _custom_claims(value: Any) -> list[dict[str, str]]:
    field = "custom_claims"
    if not isinstance(value, list):
        raise bad_request(field, f"must be an array of {{key, value}} objects, got {_kind(value)}")
    if len(value) > MAX_CUSTOM_CLAIMS:
        raise bad_request(field, f"must have at most {MAX_CUSTOM_CLAIMS} entries")
    seen: set[str] = set()
    result: list[dict[str, str]] = []
    for index, item in enumerate(value):
        where = f"{field}[{index}]"
        if not isinstance(item, dict) or set(item) != {"key", "value"}:
            raise bad_request(where, "must be an object with exactly the members key and value")
        key, text = item["key"], item["value"]
        if not isinstance(key, str) or _CLAIM_KEY.fullmatch(key) is None \
                or len(key) > MAX_CLAIM_KEY:
            raise bad_request(f"{where}.key", f"must be 1 to {MAX_CLAIM_KEY} characters: a letter "
                                              "or _ then letters, digits, _ . : -")
        if not isinstance(text, str) or len(text) > MAX_CLAIM_VALUE:
            raise bad_request(f"{where}.value",
                              f"must be a string of at most {MAX_CLAIM_VALUE} characters")
        if key in seen:
            raise bad_request(f"{where}.key", f"duplicate key {key!r}")
        seen.add(key)
        result.append({"key": key, "value": text})
    return result


def _expiry(value: Any) -> int:
    # Scalekit's JSON (proto3) also accepts 64-bit integers written as strings: ASCII digits.
    if isinstance(value, str):
        number = ascii_integer(value, 10)
        if number is None or value != str(number):  # canonical: no leading zeros
            raise bad_request("expiry", "must be an integer number of seconds (ASCII digits), "
                                        f"got {value[:20]!r}")
        value = number
    if isinstance(value, float) and value.is_integer():  # JSON Schema: 60.0 is an integer
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request("expiry", f"must be an integer number of seconds, got {_kind(value)}")
    if not MIN_EXPIRY <= value <= MAX_EXPIRY:
        raise bad_request("expiry", f"must be between {MIN_EXPIRY} and {MAX_EXPIRY} seconds, "
                                    f"got {value}")
    return value


def validate_fields(body: Any, *, creating: bool) -> dict[str, Any]:
    """The validated fields of a create (`creating`) or update request body."""
    if not isinstance(body, dict):
        raise bad_request("body", f"must be a JSON object, got {_kind(body)}")
    check_text(body)  # the Python API's edge (the HTTP API checked it on reading the body)
    unknown = sorted(set(body) - set(_FIELDS))
    if unknown:
        raise bad_request(unknown[0], "is not a field of a client that can be set; known fields: "
                                      + ", ".join(_FIELDS))
    if creating and "name" not in body:
        raise bad_request("name", "is required")
    if not creating and not body:
        raise bad_request("body", "names no field to update; give at least one of "
                                  + ", ".join(_FIELDS))
    fields: dict[str, Any] = {}
    if "name" in body:
        fields["name"] = _text(body["name"], "name", MAX_NAME, required=True).strip()
    if "description" in body:
        fields["description"] = _text(body["description"], "description", MAX_DESCRIPTION,
                                      required=False)
    if "scopes" in body:
        fields["scopes"] = _string_list(body["scopes"], "scopes", MAX_SCOPE_LENGTH, MAX_SCOPES,
                                        SCOPE_TOKEN, "scope (RFC 6749 scope-token: printable "
                                        "ASCII without space, \" or \\)")
    if "audience" in body:
        fields["audience"] = _string_list(body["audience"], "audience", MAX_AUDIENCE_LENGTH,
                                          MAX_AUDIENCES, _AUDIENCE,
                                          "audience (printable ASCII without spaces)")
    if "custom_claims" in body:
        fields["custom_claims"] = _custom_claims(body["custom_claims"])
    if "expiry" in body:
        fields["expiry"] = _expiry(body["expiry"])
    return fields


# -- records ------------------------------------------------------------------------------------
class ClientRecord:
    """A stored client as the token endpoint needs it."""

    __slots__ = ("audience", "client_id", "custom_claims", "expiry", "kind", "organization_id",
                 "scopes")

    def __init__(self, row: Mapping[str, Any]) -> None:
        self.client_id: str = row["client_id"]
        self.kind: str = row["kind"]
        self.organization_id: str | None = row["organization_id"]
        self.scopes: list[str] = json.loads(row["scopes"])
        self.audience: list[str] = json.loads(row["audience"])
        self.custom_claims: dict[str, str] = {
            item["key"]: item["value"] for item in json.loads(row["custom_claims"])}
        self.expiry: int = int(row["expiry"])


class Clients:
    """Client management over a `Store` (see the module doc). `clock` gives epoch seconds."""

    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self._clock = clock

    # -- reading -----------------------------------------------------------------------------
    def _secrets_json(self, client_id: str) -> list[dict[str, Any]]:
        rows = self.store.query(
            "SELECT id, secret_suffix, status, create_time, update_time, last_used_time "
            "FROM client_secrets WHERE client_id = ? ORDER BY seq", (client_id,))
        return [self._secret_json(row) for row in rows]

    @staticmethod
    def _secret_json(row: Any) -> dict[str, Any]:
        secret: dict[str, Any] = {
            "id": row["id"], "create_time": rfc3339(row["create_time"]),
            "update_time": rfc3339(row["update_time"]), "secret_suffix": row["secret_suffix"],
            "status": row["status"]}
        if row["last_used_time"] is not None:
            secret["last_used_time"] = rfc3339(row["last_used_time"])
        return secret

    def _client_json(self, row: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "client_id": row["client_id"],
            "secrets": self._secrets_json(row["client_id"]),
            "name": row["name"],
            "description": row["description"],
            "organization_id": row["organization_id"],
            "create_time": rfc3339(row["create_time"]),
            "update_time": rfc3339(row["update_time"]),
            "scopes": json.loads(row["scopes"]),
            "audience": json.loads(row["audience"]),
            "custom_claims": json.loads(row["custom_claims"]),
            "expiry": int(row["expiry"]),
        }

    def _row(self, organization_id: str, client_id: str) -> Mapping[str, Any]:
        check_id(ids.ORGANIZATION_ID, organization_id, "organization_id", "org_")
        check_id(ids.CLIENT_ID, client_id, "client_id", "m2morg_")
        row = self.store.query_one(
            "SELECT * FROM clients WHERE client_id = ? AND organization_id = ? AND kind = 'm2m'",
            (client_id, organization_id))
        if row is None:
            raise not_found("client", client_id)
        return dict(row)

    def get(self, organization_id: str, client_id: str) -> dict[str, Any]:
        """The client JSON; 404 when the organization has no such client."""
        return self._client_json(self._row(organization_id, client_id))

    def list(self, organization_id: str, *, page_size: Any = None,
             page_token: Any = None) -> dict[str, Any]:
        """One page of the organization's clients, oldest first:
        ``{clients, next_page_token, total_size}`` (`next_page_token` "" on the last page)."""
        check_id(ids.ORGANIZATION_ID, organization_id, "organization_id", "org_")
        size = DEFAULT_PAGE_SIZE
        if page_size is not None:
            text = str(page_size)
            number = ascii_integer(text, 3)
            if number is None or not 1 <= number <= MAX_PAGE_SIZE:
                raise bad_request("page_size", f"must be an integer from 1 to {MAX_PAGE_SIZE} "
                                               f"(ASCII digits), got {text[:20]!r}")
            size = number
        after = 0
        if page_token not in (None, ""):  # "" is the last page's next_page_token: from the start
            after = _read_page_token(str(page_token))
        rows = self.store.query(
            "SELECT * FROM clients WHERE organization_id = ? AND kind = 'm2m' AND seq > ? "
            "ORDER BY seq LIMIT ?", (organization_id, after, size + 1))
        total = self.store.query_one(
            "SELECT COUNT(*) AS n FROM clients WHERE organization_id = ? AND kind = 'm2m'",
            (organization_id,))
        page = rows[:size]
        next_token = _page_token(page[-1]["seq"]) if len(rows) > size else ""
        return {"clients": [self._client_json(dict(row)) for row in page],
                "next_page_token": next_token,
                "total_size": int(total["n"]) if total is not None else 0}

    # -- writing -----------------------------------------------------------------------------
    def create(self, organization_id: str, body: Any) -> tuple[dict[str, Any], str]:
        """Validate `body` and create a client; return (client JSON, plain secret)."""
        check_id(ids.ORGANIZATION_ID, organization_id, "organization_id", "org_")
        fields = validate_fields(body, creating=True)
        client_id = ids.new_id("m2morg")
        plain = ids.new_secret(SECRET_PREFIX)
        hashed = hash_secret(plain)  # slow: outside the store's lock
        now = self._clock()
        with self.store.transaction() as cur:
            cur.execute(
                "INSERT INTO clients (client_id, kind, organization_id, name, description, "
                "scopes, audience, custom_claims, expiry, create_time, update_time) "
                "VALUES (?, 'm2m', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (client_id, organization_id, fields["name"], fields.get("description", ""),
                 json.dumps(fields.get("scopes", [])), json.dumps(fields.get("audience", [])),
                 json.dumps(fields.get("custom_claims", [])),
                 fields.get("expiry", DEFAULT_EXPIRY), now, now))
            self._insert_secret(cur, client_id, plain, hashed, now)
        return self.get(organization_id, client_id), plain

    @staticmethod
    def _insert_secret(cur: Any, client_id: str, plain: str, hashed: str, now: float, *,
                       generated: bool = True) -> str:
        """Store a secret's hash; a `generated` one (random, made here) with its selector."""
        secret_id = ids.new_id("sks")
        cur.execute(
            "INSERT INTO client_secrets (id, client_id, secret_hash, secret_suffix, selector, "
            "status, create_time, update_time) VALUES (?, ?, ?, ?, ?, 'ACTIVE', ?, ?)",
            (secret_id, client_id, hashed, plain[-4:], _selector(plain) if generated else None,
             now, now))
        return secret_id

    def update(self, organization_id: str, client_id: str, body: Any) -> dict[str, Any]:
        """Apply the fields of `body` (all optional, at least one) and return the client."""
        self._row(organization_id, client_id)
        if isinstance(body, dict):
            fixed = sorted(set(body) & {"client_id", "organization_id", "secrets",
                                        "create_time", "update_time"})
            if fixed:
                raise bad_request(fixed[0], "cannot be changed")
        fields = validate_fields(body, creating=False)
        values = {name: json.dumps(value) if isinstance(value, list) else value
                  for name, value in fields.items()}
        assignments = ", ".join(f"{name} = ?" for name in values)  # names from _FIELDS only
        with self.store.transaction() as cur:
            cur.execute(f"UPDATE clients SET {assignments}, update_time = ? "  # noqa: S608
                        "WHERE client_id = ?", (*values.values(), self._clock(), client_id))
        return self.get(organization_id, client_id)

    def delete(self, organization_id: str, client_id: str) -> None:
        """Delete the client and its secrets (its tokens stay valid until they expire)."""
        self._row(organization_id, client_id)
        with self.store.transaction() as cur:
            cur.execute("DELETE FROM clients WHERE client_id = ?", (client_id,))

    def add_secret(self, organization_id: str, client_id: str) -> tuple[dict[str, Any], str]:
        """A new secret for the client (at most `MAX_SECRETS`); (secret JSON, plain secret)."""
        self._row(organization_id, client_id)
        plain = ids.new_secret(SECRET_PREFIX)
        hashed = hash_secret(plain)
        now = self._clock()
        with self.store.transaction() as cur:
            count = cur.execute("SELECT COUNT(*) FROM client_secrets WHERE client_id = ?",
                                (client_id,)).fetchone()[0]
            if count >= MAX_SECRETS:
                raise ApiError(409, "FAILED_PRECONDITION",
                               f"The client already has {MAX_SECRETS} secrets, the most it may "
                               "have; delete one first.",
                               [{"field": "secrets", "description": f"at most {MAX_SECRETS}"}])
            secret_id = self._insert_secret(cur, client_id, plain, hashed, now)
        row = self.store.query_one("SELECT * FROM client_secrets WHERE id = ?", (secret_id,))
        assert row is not None
        return self._secret_json(dict(row)), plain

    def delete_secret(self, organization_id: str, client_id: str, secret_id: str) -> None:
        """Delete one secret; a client keeps at least one."""
        self._row(organization_id, client_id)
        check_id(ids.SECRET_ID, secret_id, "secret_id", "sks_")
        with self.store.transaction() as cur:
            row = cur.execute("SELECT id FROM client_secrets WHERE id = ? AND client_id = ?",
                              (secret_id, client_id)).fetchone()
            if row is None:
                raise not_found("secret", secret_id)
            count = cur.execute("SELECT COUNT(*) FROM client_secrets WHERE client_id = ?",
                                (client_id,)).fetchone()[0]
            if count <= 1:
                raise ApiError(409, "FAILED_PRECONDITION",
                               "A client keeps at least one secret: add a new secret before "
                               "deleting the last one.",
                               [{"field": "secret_id", "description": "the client's only secret"}])
            cur.execute("DELETE FROM client_secrets WHERE id = ?", (secret_id,))

    # -- environment client and authentication ----------------------------------------------------
    def ensure_environment_client(self, client_id: str | None,
                                  client_secret: str | None) -> tuple[str, str | None]:
        """The environment API client: the one given (its secret stored as the only one), else
        the stored one, else a new one. Returns (client id, plain secret if created now)."""
        now = self._clock()
        if client_id is not None:
            if not ids.valid_id(ids.ENV_CLIENT_ID, client_id):
                shown = client_id[:7] + "…" if len(client_id) > 7 else client_id
                raise ValueError(
                    f"SCALEKIT_CLIENT_ID is {shown!r}, but the local issuer takes only an "
                    "environment API client from it: skc_ followed by 1 to 64 letters or digits "
                    "(e.g. skc_59615193906282635). An M2M client's id (m2morg_…) belongs to "
                    "`m2m-guard token`; unset SCALEKIT_CLIENT_ID/SECRET where you start the "
                    "issuer")
            if not client_secret or len(client_secret) < 16:
                raise ValueError("SCALEKIT_CLIENT_SECRET must be set (at least 16 characters) "
                                 "together with SCALEKIT_CLIENT_ID")
            row = self.store.query_one(
                "SELECT secret_hash FROM client_secrets WHERE client_id = ?", (client_id,))
            if row is not None and verify_secret(client_secret, row["secret_hash"]):
                return client_id, None
            hashed = hash_secret(client_secret)
            with self.store.transaction() as cur:
                cur.execute("DELETE FROM clients WHERE kind = 'environment'")
                self._insert_environment(cur, client_id, client_secret, hashed, now,
                                         generated=False)
            return client_id, None
        if client_secret is not None:
            raise ValueError("SCALEKIT_CLIENT_SECRET is set without SCALEKIT_CLIENT_ID")
        row = self.store.query_one(
            "SELECT client_id FROM clients WHERE kind = 'environment' ORDER BY seq DESC LIMIT 1")
        if row is not None:
            return str(row["client_id"]), None
        client_id = ids.new_id("skc")
        plain = ids.new_secret(ENV_SECRET_PREFIX)
        hashed = hash_secret(plain)
        with self.store.transaction() as cur:
            self._insert_environment(cur, client_id, plain, hashed, now)
        return client_id, plain

    def _insert_environment(self, cur: Any, client_id: str, plain: str, hashed: str,
                            now: float, *, generated: bool = True) -> None:
        cur.execute(
            "INSERT INTO clients (client_id, kind, organization_id, name, expiry, create_time, "
            "update_time) VALUES (?, 'environment', NULL, 'Environment API client', ?, ?, ?)",
            (client_id, DEFAULT_EXPIRY, now, now))
        self._insert_secret(cur, client_id, plain, hashed, now, generated=generated)

    def authenticate(self, client_id: str, client_secret: str) -> ClientRecord | None:
        """The client when `client_secret` matches one of its secrets, else None.

        Slow on purpose (scrypt); call it off the event loop. One scrypt run per call, for an
        unknown id, a wrong secret and a right one alike: the secret's selector picks the one
        hash to check (see the module doc); only secrets stored without a selector are each
        checked, as before.
        """
        row = self.store.query_one("SELECT * FROM clients WHERE client_id = ?", (client_id,)) \
            if len(client_id) <= 128 else None
        if row is None:
            verify_nothing(client_secret)
            return None
        stored = self.store.query(
            "SELECT id, secret_hash, selector FROM client_secrets WHERE client_id = ? "
            "ORDER BY seq", (client_id,))
        selector = _selector(client_secret).encode("utf-8", "surrogatepass")
        candidates = [secret for secret in stored if secret["selector"] is not None
                      and hmac.compare_digest(secret["selector"].encode("ascii"), selector)]
        if not candidates:
            candidates = [secret for secret in stored if secret["selector"] is None]
        if not candidates:
            verify_nothing(client_secret)
            return None
        for secret in candidates:
            if verify_secret(client_secret, secret["secret_hash"]):
                with self.store.transaction() as cur:
                    cur.execute("UPDATE client_secrets SET last_used_time = ? WHERE id = ?",
                                (self._clock(), secret["id"]))
                return ClientRecord(dict(row))
        return None

    def max_expiry(self) -> int:
        row = self.store.query_one("SELECT MAX(expiry) AS m FROM clients")
        return int(row["m"]) if row is not None and row["m"] is not None else DEFAULT_EXPIRY


def _selector(secret: str) -> str:
    """The part of a secret that picks its hash: the 5-character prefix (``test_``, ``skcs_``)
    and the next `SELECTOR_CHARS` characters."""
    return secret[:len(SECRET_PREFIX) + SELECTOR_CHARS]


PAGE_TOKEN = re.compile(r"after_[1-9][0-9]{0,17}")  # at most 10**18 - 1: inside SQLite's ints


def _page_token(seq: int) -> str:
    return f"after_{seq}"


def _read_page_token(token: str) -> int:
    """The `seq` a page token names; 400 for anything `_page_token` cannot have made (too long,
    not ``after_`` and 1 to 18 ASCII digits)."""
    if len(token) > MAX_PAGE_TOKEN or PAGE_TOKEN.fullmatch(token) is None:
        raise bad_request("page_token", "is not a token from a previous list response")
    return int(token[len("after_"):])
