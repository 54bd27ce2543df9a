"""Signature tampering, random single mutations of a valid token, and log hygiene.

See tests/attacks/kit.py for how attacks are sent and checked."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import random
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from starlette.testclient import TestClient

from m2m_guard._core.encoding import b64url_encode
from m2m_guard.local_issuer import KeySetServer, SigningKey

from .kit import (
    D_EMPTY,
    D_SIG,
    R_ILLEGAL,
    URLSAFE,
    assert_invalid_request,
    assert_invalid_token,
    assert_ok,
    claims_of,
    dumps,
    header_of,
    payload_with_raw,
    send,
    split,
    token,
)


# == 13. signature tampering ===================================================================
def replace_char(segment: str, index: int) -> str:
    old = segment[index]
    new = "B" if old == "A" else "A"
    return segment[:index] + new + segment[index + 1:]


@pytest.mark.parametrize("alg", ["RS256", "PS256", "ES256", "EdDSA"])
@pytest.mark.parametrize("position", [0, 1, 7, "middle", -2])
@pytest.mark.parametrize("segment", [0, 1, 2])
def test_flip_one_character(client: TestClient, issuer_server: KeySetServer,
                            keys: dict[str, SigningKey], alg: str, position: Any,
                            segment: int) -> None:
    """Any single changed character in any segment is a 401 (the reason varies with where)."""
    good = issuer_server.mint(keys[alg])
    parts = split(good)
    index = len(parts[segment]) // 2 if position == "middle" else position
    parts[segment] = replace_char(parts[segment], index % len(parts[segment]))
    description = assert_invalid_token(send(client, ".".join(parts)))
    if segment == 2 and position in ("middle", 1, 7, 0):
        assert description == D_SIG


@pytest.mark.parametrize("alg", ["RS256", "PS256", "ES256", "EdDSA"])
@pytest.mark.parametrize("change", ["scopes", "exp", "sub", "header-typ", "header-whitespace"])
def test_re_encoded_parts_without_re_signing(client: TestClient, issuer_server: KeySetServer,
                                             keys: dict[str, SigningKey], alg: str,
                                             change: str) -> None:
    key = keys[alg]
    good = token(key, header_of(key), claims_of(issuer_server))
    h, p, s = split(good)
    claims = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
    if change == "scopes":
        p = b64url_encode(dumps({**claims, "scopes": [*claims["scopes"], "admin:platform"]}))
    elif change == "exp":
        p = b64url_encode(dumps({**claims, "exp": claims["exp"] + 86400}))
    elif change == "sub":
        p = b64url_encode(dumps({**claims, "sub": "m2morg_other", "client_id": "m2morg_other"}))
    elif change == "header-typ":
        h = b64url_encode(dumps(header_of(key, typ="at+jwt")))
    else:
        h = b64url_encode(json.dumps(header_of(key)).encode())  # spaces after ':' and ','
    assert_ok(send(client, good))
    assert_invalid_token(send(client, f"{h}.{p}.{s}"), D_SIG)


@pytest.mark.parametrize("alg", ["RS256", "PS256", "ES256", "EdDSA"])
@pytest.mark.parametrize("cut", ["half", "one-byte-short", "one-byte-long", "leading-zero",
                                 "empty", "doubled", "zeros", "ones"])
def test_wrong_signature_bytes(client: TestClient, issuer_server: KeySetServer,
                               keys: dict[str, SigningKey], alg: str, cut: str) -> None:
    good = issuer_server.mint(keys[alg])
    h, p, s = split(good)
    raw = base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
    new = {"half": raw[: len(raw) // 2], "one-byte-short": raw[:-1],
           "one-byte-long": raw + b"\x00", "leading-zero": b"\x00" + raw, "empty": b"",
           "doubled": raw + raw, "zeros": b"\x00" * len(raw),
           "ones": b"\xff" * len(raw)}[cut]
    forged = f"{h}.{p}.{b64url_encode(new)}"
    assert_invalid_token(send(client, forged), D_EMPTY if cut == "empty" else D_SIG)


@pytest.mark.parametrize("alg", ["RS256", "PS256", "ES256", "EdDSA"])
def test_signature_from_another_key_with_the_same_kid(client: TestClient,
                                                      issuer_server: KeySetServer,
                                                      impostors: dict[str, SigningKey],
                                                      alg: str) -> None:
    impostor = impostors[alg]
    assert impostor.kid == f"snk_{alg.lower()}"
    assert_invalid_token(send(client, issuer_server.mint(impostor)), D_SIG)


P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


@pytest.mark.parametrize("shape", ["r=s=0", "r=0", "s=0", "r=s=n", "s=n", "r=s=1", "der",
                                   "der-zero", "63-bytes", "65-bytes", "r||s-swapped"])
def test_ecdsa_signature_shapes(client: TestClient, issuer_server: KeySetServer,
                                keys: dict[str, SigningKey], shape: str) -> None:
    """ES256 signatures are exactly r || s (32 bytes each); psychic and DER forms are refused."""
    key = keys["ES256"]
    good = issuer_server.mint(key)
    h, p, s = split(good)
    raw = base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
    r_bytes, s_bytes = raw[:32], raw[32:]

    def rs_(r: int, s_: int) -> bytes:
        return r.to_bytes(32, "big") + s_.to_bytes(32, "big")

    private = key.private_key
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    new = {
        "r=s=0": b"\x00" * 64,
        "r=0": b"\x00" * 32 + s_bytes,
        "s=0": r_bytes + b"\x00" * 32,
        "r=s=n": rs_(P256_ORDER, P256_ORDER),
        "s=n": r_bytes + P256_ORDER.to_bytes(32, "big"),
        "r=s=1": rs_(1, 1),
        "der": private.sign(f"{h}.{p}".encode(), ec.ECDSA(hashes.SHA256())),
        "der-zero": encode_dss_signature(0, 0),
        "63-bytes": raw[1:] if raw[0] == 0 else raw[:-1],
        "65-bytes": b"\x00" + raw,
        "r||s-swapped": s_bytes + r_bytes,
    }[shape]
    assert_ok(send(client, good))
    assert_invalid_token(send(client, f"{h}.{p}.{b64url_encode(new)}"), D_SIG)


# == catch-all: random single mutations of a valid token ========================================
def test_random_mutations_never_pass_and_never_crash(client: TestClient,
                                                     issuer_server: KeySetServer,
                                                     keys: dict[str, SigningKey]) -> None:
    rng = random.Random(20240607)
    alphabet = URLSAFE + ".+/=~"
    statuses: set[int] = set()
    for alg in ("RS256", "ES256", "EdDSA"):
        good = issuer_server.mint(keys[alg])
        for _ in range(60):
            index = rng.randrange(len(good))
            op = rng.choice(["replace", "delete", "insert", "swap"])
            if op == "replace":
                char = rng.choice([c for c in alphabet if c != good[index]])
                mutated = good[:index] + char + good[index + 1:]
            elif op == "delete":
                mutated = good[:index] + good[index + 1:]
            elif op == "insert":
                mutated = good[:index] + rng.choice(alphabet) + good[index:]
            else:
                j = rng.randrange(len(good))
                chars = list(good)
                chars[index], chars[j] = chars[j], chars[index]
                mutated = "".join(chars)
                if mutated == good:
                    continue
            response = send(client, mutated)
            statuses.add(response.status_code)
            if response.status_code == 400:
                assert_invalid_request(response, R_ILLEGAL)
            else:
                assert_invalid_token(response)
    assert statuses <= {400, 401}


# == logs never carry raw tokens ================================================================
def test_refusals_are_logged_without_raw_tokens(client: TestClient, issuer_server: KeySetServer,
                                                rs: SigningKey, impostors: dict[str, SigningKey],
                                                caplog: pytest.LogCaptureFixture) -> None:
    """Refusals are logged with a fingerprint and the reason, never with the token itself."""
    caplog.set_level(logging.DEBUG, logger="m2m_guard")
    attacks = [
        token(rs, header_of(rs, alg="none"), claims_of(issuer_server)),
        issuer_server.mint(impostors["RS256"]),
        token(rs, header_of(rs, kid="../../dev/null"), claims_of(issuer_server)),
        token(rs, header_of(rs), claims_of(issuer_server, aud="Deployment-API")),
        token(rs, header_of(rs), payload_with_raw(issuer_server, "exp", b"null")),
        token(rs, header_of(rs, kid="snk\r\nforged log line"), claims_of(issuer_server)),
    ]
    for forged in attacks:
        assert_invalid_token(send(client, forged))
    messages = [record.getMessage() for record in caplog.records]
    for forged in attacks:
        fingerprint = hashlib.sha256(forged.encode()).hexdigest()[:16]
        assert any(f"fingerprint={fingerprint}" in message for message in messages), messages
        for message in messages:
            assert forged not in message
            assert split(forged)[1] not in message and split(forged)[2] not in message
    assert not any("\r" in message or "\n" in message for message in messages), messages
    assert not any(record.levelno >= logging.ERROR for record in caplog.records)
