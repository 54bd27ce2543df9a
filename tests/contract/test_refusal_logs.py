"""Refusals are logged alike in every framework: one INFO line per refused request on the
`m2m_guard` logger, with its reason, status, client id and token fingerprint, never the token.

Runs the contract drivers (`test_contract_matrix.DRIVERS`: Starlette, FastAPI, Flask, plain WSGI,
Django sync and async, DRF), so each adapter's own refusal paths are covered: credentials it
rejects itself (missing, malformed, in the query), tokens the verifier refuses, and verified
tokens a route refuses for their scopes. The guard's own endpoints and allowed requests log no
refusal.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from m2m_guard import GuardSettings
from m2m_guard.local_issuer import KeySetServer, SigningKey

from .harness import Driver, Headers
from .test_contract_matrix import CLIENT_ID, DRIVERS, EXPECTED_DRIVERS, HEALTH, OPERABLE


def _fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()[:16]


@dataclass(frozen=True)
class Refusal:
    name: str
    method: str
    path: str
    headers: Headers
    token: str | None  # the token whose fingerprint the line must carry
    reason: str
    status: int
    client_id: str | None
    sent: str | None = None  # the token in the request, when the line cannot fingerprint it
    rule: str | None = None  # the failed rule an access_denied line names


def _refusals(issuer: KeySetServer) -> list[Refusal]:
    now = int(time.time())
    expired = issuer.mint(exp=now - 3600, iat=now - 7200, nbf=now - 7200)
    impostor = issuer.mint(SigningKey.generate("RS256", kid="snk_rs256"))
    narrow = issuer.mint(scopes=["read:deployments"])
    in_query = issuer.mint()
    malformed = issuer.mint()
    return [
        Refusal("missing", "GET", "/deployments", {}, None, "missing_token", 401, None),
        Refusal("malformed", "GET", "/deployments", {"Authorization": f"Bearer {malformed} x"},
                None, "malformed_authorization", 401, None, sent=malformed),
        Refusal("in-query", "GET", f"/deployments?access_token={in_query}", {}, None,
                "token_in_query", 400, None, sent=in_query),
        Refusal("expired", "GET", "/deployments", {"Authorization": f"Bearer {expired}"},
                expired, "expired", 401, CLIENT_ID),
        Refusal("bad-signature", "GET", "/deployments", {"Authorization": f"Bearer {impostor}"},
                impostor, "bad_signature", 401, CLIENT_ID),
        Refusal("scope", "POST", "/deployments", {"Authorization": f"Bearer {narrow}"},
                narrow, "insufficient_scope", 403, CLIENT_ID),
        *_rule_refusals(issuer),
    ]


def _rule_refusals(issuer: KeySetServer) -> list[Refusal]:
    """Rules beyond scopes (examples/rules.py): the line names the failed rule, no value."""
    staging = issuer.mint(custom_claims={"environment": "staging_eu"})
    plain = issuer.mint(custom_claims={"environment": "staging_eu", "service": "billing"})
    return [
        Refusal("claim-rule", "GET", "/production/deployments",
                {"Authorization": f"Bearer {staging}"}, staging, "claim_refused", 403,
                CLIENT_ID, rule="claim:custom_claims.environment"),
        Refusal("any-of-rule", "GET", "/releases", {"Authorization": f"Bearer {plain}"}, plain,
                "rule_failed", 403, CLIENT_ID,
                rule="any_of(scopes:admin:platform, release-service)"),
    ]


def _refused(caplog: pytest.LogCaptureFixture, start: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records[start:] if getattr(r, "kind", None) == "refused"]


def _exercise(driver: Driver, issuer: KeySetServer, caplog: pytest.LogCaptureFixture,
              tokens: list[str]) -> list[str]:
    problems: list[str] = []
    good = issuer.mint()
    tokens.append(good)
    start = len(caplog.records)
    assert driver.request("GET", "/deployments",
                          headers={"Authorization": f"Bearer {good}"}).status == 200
    for path in (HEALTH, "/.well-known/oauth-protected-resource/deployments-api"):
        assert driver.request("GET", path).status == 200
        assert driver.request("POST", path).status == 405  # the guard's endpoint answers
    if _refused(caplog, start):
        problems.append(f"refusals logged for allowed requests: {_refused(caplog, start)}")
    for refusal in _refusals(issuer):
        tokens.extend(t for t in (refusal.token, refusal.sent) if t is not None)
        start = len(caplog.records)
        reply = driver.request(refusal.method, refusal.path, headers=refusal.headers,
                               json={"service": "billing"} if refusal.method == "POST" else None)
        records = _refused(caplog, start)
        if reply.status != refusal.status:
            problems.append(f"{refusal.name}: status {reply.status} != {refusal.status}")
        if len(records) != 1:
            problems.append(f"{refusal.name}: {len(records)} refusal lines, not 1: "
                            f"{[r.getMessage() for r in records]}")
            continue
        [record] = records
        seen = (record.levelno, record.name, record.reason, record.status, record.client_id,
                record.fingerprint, getattr(record, "rule", None))
        wanted = (logging.INFO, "m2m_guard", refusal.reason, refusal.status, refusal.client_id,
                  None if refusal.token is None else _fingerprint(refusal.token), refusal.rule)
        if seen != wanted:
            problems.append(f"{refusal.name}: {seen} != {wanted}")
        for value in ("production_us", "staging_eu", "billing"):  # required, or the token's
            if value in record.getMessage():
                problems.append(f"{refusal.name}: a claim value in {record.getMessage()!r}")
    return problems


def test_every_framework_logs_each_refusal_once_without_the_token(
        issuer: KeySetServer, make_settings: Callable[..., GuardSettings],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="m2m_guard")
    settings = make_settings(public_paths=("/health",), **OPERABLE)
    tokens: list[str] = []
    problems: dict[str, list[str]] = {}
    for name, factory in sorted(DRIVERS.items()):
        with factory(settings) as driver:
            found = _exercise(driver, issuer, caplog, tokens)
        if found:
            problems[name] = found
    assert set(DRIVERS) == EXPECTED_DRIVERS
    assert not problems, problems

    # Every formatted line, and everything our records carry. (Other loggers' records may hold
    # more: Django's `django.request` warning for a 400 carries the request, query included,
    # as an attribute; only a formatter that dumps attributes would print it.)
    texts = [caplog.text]
    for record in caplog.records:
        texts.append(record.getMessage())
        if record.name.startswith("m2m_guard"):
            texts.append(repr(record.__dict__))
    everything = "\n".join(texts)
    assert len(tokens) == 8 * len(DRIVERS) and all(len(token) > 100 for token in tokens)
    for token in tokens:
        for form in [token, *(part for part in token.split(".")[1:] if len(part) >= 16)]:
            assert form not in everything, "a token leaked into the logs"
