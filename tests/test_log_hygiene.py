"""Logs carry structured fields and never a raw token or secret.

Drives many kinds of refusal and every kind of key-set activity through the ASGI middleware
and the verifier (real key-set servers on loopback), captures the `m2m_guard` logger at DEBUG,
and scans every record (message, extra fields, traceback) for each token used, its payload and
signature segments, private key material and a secret carried in a claim.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.testclient import TestClient

from m2m_guard import GuardError, GuardSettings, TokenVerifier
from m2m_guard._core.encoding import b64url_encode
from m2m_guard._core.logs import format_fields
from m2m_guard.local_issuer import KeySetServer, SigningKey

from .conftest import deployment_app

SECRET = "cs_live_9f8e7d6c5b4a39281706f5e4d3c2b1a0"
REFUSAL_FIELDS = ("kind", "reason", "status", "issuer", "kid", "client_id", "fingerprint")


def _private_d(key: SigningKey) -> str:
    private = key.private_key
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    return b64url_encode(private.private_numbers().private_value.to_bytes(32, "big"))


def _forms(token: str) -> list[str]:
    """The token and the parts of it that would betray it (payload, signature)."""
    parts = token.split(".")
    return [token] + [p for p in parts[1:] if len(p) >= 16]


def test_logs_never_hold_tokens_or_secrets(
        issuer: KeySetServer, make_settings: Callable[..., GuardSettings],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="m2m_guard")
    old = SigningKey.generate("ES256", kid="snk_old")
    new = SigningKey.generate("ES256", kid="snk_new")
    leaked = SigningKey.generate("ES256", kid="snk_leaked")  # published with its private half
    secrets = [SECRET, _private_d(old), _private_d(new), _private_d(leaked)]
    tokens: list[str] = []

    def use(token: str) -> str:
        tokens.append(token)
        return token

    with KeySetServer([old]) as server:
        server.extra_jwks.append(leaked.public_jwk(d=_private_d(leaked)))  # dropped on load
        settings = make_settings(issuer=server.url, jwks_cache_ttl=1, jwks_refetch_cooldown=1,
                                 health_path="/ready")
        verifier = TokenVerifier(settings)
        app = deployment_app(settings, verifier=verifier)
        now = int(time.time())
        with TestClient(app) as client:
            def call(token: str | None, *, path: str = "/deployments", query: str = "",
                     header: str | None = None) -> int:
                headers = {}
                if header is not None:
                    headers["Authorization"] = header
                elif token is not None:
                    headers["Authorization"] = f"Bearer {token}"
                return client.get(path + query, headers=headers).status_code

            good = use(server.mint(old, client_secret=SECRET))
            assert call(good) == 200
            assert call(good) == 200  # cached
            # Key-set activity: a rotation (unknown kid, refetch, change) ...
            server.publish(old, new)
            assert call(use(server.mint(new, client_secret=SECRET))) == 200
            header, payload, signature = good.split(".")
            forged = use(f"{header}.{payload}.{signature[:-4]}AAAA")
            assert call(forged) == 401
            assert call(use(server.mint(old, exp=now - 3600, client_secret=SECRET))) == 401
            assert call(use(server.mint(old, aud=["other-api"]))) == 401
            assert call(use(server.mint(old, iss="https://elsewhere.example"))) == 401
            assert call(use(server.mint(old, nbf=now + 3600))) == 401
            assert call(use(server.mint(old, headers={"alg": "none"}))) == 401
            assert call(use(server.mint(old, headers={"kid": 'snk "x" y=z\r\n'}))) == 401
            assert call(use(server.mint(old, typ="dpop+jwt"))) == 401
            assert call(use("x" * 20000)) == 401
            assert call(None, query=f"?access_token={use(server.mint(old))}") == 400
            assert call(None, header=f"Bearer {use(server.mint(old))} extra") == 400
            assert call(None, header=f"Basic {SECRET}") == 401
            assert call(use(server.mint(old, scopes=["audit:read"])), path="/admin") == 403
            assert call(None) == 401
            assert client.get("/ready").status_code == 200

            # ... a 304, a failure, a removal.
            verifier.warm_up_sync()  # 304 Not Modified
            server.set_fault("500")
            verifier.warm_up_sync()  # fails; the last good set stays
            server.set_fault(None)
            server.publish(new)
            verifier.warm_up_sync()

        # The verifier on its own (sync front), including the internal-error safety net.
        with pytest.raises(GuardError):
            verifier.verify_sync(use(server.mint(old)))  # key left the set
        server.stop()
        cold = TokenVerifier(make_settings(issuer=server.url))
        with pytest.raises(GuardError):
            cold.verify_sync(use(server.mint(new)))  # issuer down: 503

    records = caplog.records
    kinds = {getattr(r, "kind", None) for r in records}
    assert {"refused", "keys_changed", "key_dropped", "keys_fetch_failed",
            "keys_unchanged"} <= kinds
    reasons = {r.reason for r in records if getattr(r, "kind", None) == "refused"}
    assert {"bad_signature", "expired", "wrong_audience", "untrusted_issuer", "not_yet_valid",
            "algorithm_refused", "unknown_kid", "type_refused", "token_too_large",
            "token_in_query", "malformed_authorization", "missing_token", "insufficient_scope",
            "issuer_unavailable"} <= reasons

    texts = [caplog.text]
    for record in records:
        texts.append(record.getMessage())
        texts.append(repr(record.__dict__))
        if record.exc_info:
            texts.append(logging.Formatter().formatException(record.exc_info))
    everything = "\n".join(texts)
    for token in tokens:
        for form in _forms(token):
            assert form not in everything, "a token leaked into the logs"
    for secret in secrets:
        assert secret not in everything, "a secret leaked into the logs"
    assert not any("\n" in r.getMessage() or "\r" in r.getMessage() for r in records)


def test_refusal_records_are_structured(issuer: KeySetServer, settings: GuardSettings,
                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="m2m_guard")
    verifier = TokenVerifier(settings)
    token = issuer.mint(exp=int(time.time()) - 3600, client_id="m2morg_1")
    with pytest.raises(GuardError):
        verifier.verify_sync(token)
    [record] = [r for r in caplog.records if getattr(r, "kind", None) == "refused"]
    assert record.levelno == logging.INFO and record.name == "m2m_guard"
    fields = {name: getattr(record, name) for name in REFUSAL_FIELDS}
    assert fields == {"kind": "refused", "reason": "expired", "status": 401,
                      "issuer": issuer.url, "kid": "snk_rs256", "client_id": "m2morg_1",
                      "fingerprint": hashlib.sha256(token.encode()).hexdigest()[:16]}
    assert record.getMessage() == (
        f"m2m_guard refused kind=refused reason=expired status=401 issuer={issuer.url} "
        f"kid=snk_rs256 client_id=m2morg_1 fingerprint={fields['fingerprint']}")
    # A JSON formatter sees the same fields as attributes.
    dumped = json.loads(json.dumps({k: getattr(record, k) for k in REFUSAL_FIELDS}))
    assert dumped["reason"] == "expired"


def test_key_set_change_records(issuer: KeySetServer, settings: GuardSettings,
                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="m2m_guard")
    TokenVerifier(settings).warm_up_sync()
    [record] = [r for r in caplog.records if getattr(r, "kind", None) == "keys_changed"]
    assert record.levelno == logging.INFO
    assert record.added == "snk_eddsa,snk_es256,snk_ps256,snk_rs256"
    assert record.removed is None and record.keys == 4 and record.issuer == issuer.url
    assert record.getMessage().startswith(f"m2m_guard key set loaded kind=keys_changed "
                                          f"issuer={issuer.url} keys=4 added=snk_eddsa,")


_PAIR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


def _parse(line: str) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in _PAIR.findall(line):
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        result[key] = None if value == "-" else value
    return result


@pytest.mark.parametrize("value", ['a "quoted" value', "back\\slash", "k=v", "", "tab\there",
                                   "line\nbreak", "plain_value-1.2:3/4"])
def test_format_fields_round_trips(value: str) -> None:
    line = format_fields({"first": value, "second": "x", "absent": None})
    parsed = _parse(line)
    expected = value.replace("\t", "?").replace("\n", "?")
    assert parsed == {"first": expected, "second": "x", "absent": None}
    assert "\n" not in line
