"""Fixtures of the attack tests: the trusted issuer (RS256, PS256, ES256, EdDSA keys pinned by
alg), an attacker's issuer and keys, the guarded app's clients, and the log-hygiene check
run after every test."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from m2m_guard import GuardSettings
from m2m_guard.local_issuer import KeySetServer, SigningKey

from ..conftest import AUDIENCE, deployment_app
from .kit import SENT


# -- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="package")
def keys(signing_keys: dict[str, SigningKey]) -> dict[str, SigningKey]:
    return signing_keys


@pytest.fixture(scope="package")
def issuer_server(signing_keys: dict[str, SigningKey]) -> Iterator[KeySetServer]:
    """The trusted issuer: publishes RS256, PS256, ES256 and EdDSA keys (each pinned by alg)."""
    with KeySetServer(list(signing_keys.values())) as server:
        yield server


@pytest.fixture(scope="package")
def attacker_key() -> SigningKey:
    return SigningKey.generate("RS256", kid="attacker-key")


@pytest.fixture(scope="package")
def attacker(attacker_key: SigningKey) -> Iterator[KeySetServer]:
    """A key-set server the attacker controls (on loopback); the guard must never call it."""
    with KeySetServer([attacker_key]) as server:
        yield server


@pytest.fixture(scope="package")
def impostors() -> dict[str, SigningKey]:
    """Keys an attacker made, with the same algorithm and kid as each of the issuer's keys."""
    return {alg: SigningKey.generate(alg, kid=f"snk_{alg.lower()}")
            for alg in ("RS256", "PS256", "ES256", "EdDSA")}


def _client(server: KeySetServer, **options: Any) -> TestClient:
    settings = GuardSettings(issuer=server.url, audience=AUDIENCE, http_timeout=2.0, **options)
    return TestClient(deployment_app(settings), raise_server_exceptions=False)


@pytest.fixture(scope="package")
def client(issuer_server: KeySetServer) -> Iterator[TestClient]:
    with _client(issuer_server) as test_client:
        yield test_client


@pytest.fixture(scope="package")
def strict_client(issuer_server: KeySetServer) -> Iterator[TestClient]:
    with _client(issuer_server, strict_typ=True) as test_client:
        yield test_client


@pytest.fixture
def rs(keys: dict[str, SigningKey]) -> SigningKey:
    return keys["RS256"]


@pytest.fixture(autouse=True)
def _raw_tokens_never_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """After each test: no token sent (nor any long segment of one) appears in the logs."""
    caplog.set_level(logging.DEBUG, logger="m2m_guard")
    SENT.clear()
    yield
    secrets = {value for value in SENT if len(value) >= 24}
    for value in SENT:
        secrets.update(part for part in value.replace(" ", ".").split(".") if len(part) >= 24)
    formatter = logging.Formatter()
    for record in caplog.records:
        text = record.getMessage()
        if record.exc_info:
            text += formatter.formatException(record.exc_info)
        for secret in secrets:
            assert secret not in text, f"a raw token reached the log: {record.getMessage()!r}"
