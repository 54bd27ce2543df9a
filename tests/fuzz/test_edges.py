"""Edges an attacker controls directly: numeric time claims no float holds (huge integers,
1e400, booleans, strings of digits in any script) in validly signed tokens, and header bytes an
ASGI server can deliver (Latin-1, NUL, 8 KiB of spaces) to the middleware and to the local
issuer. Outcomes: accepted or the documented refusal, never an internal error, 5xx or ERROR log.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from m2m_guard import GuardError, GuardSettings, TokenVerifier
from m2m_guard.asgi import M2MGuardMiddleware
from m2m_guard.local_issuer import KeySetServer, LocalIssuer, SigningKey, scalekit_claims

from .conftest import counted

KEY = SigningKey.generate("ES256", kid="fuzz_edges")
AUDIENCE = "deployment-api"
NOW = int(time.time())

# JSON literals for a time claim, written into the payload as they are.
huge_ints = st.integers(min_value=16, max_value=400).flatmap(
    lambda digits: st.sampled_from(["1" + "0" * digits, "-1" + "0" * digits,
                                    "9" * digits]))
float_literals = st.one_of(
    st.sampled_from(["1e400", "-1e400", "1e308", "253402300799.0", "253402300800.0", "-0.0",
                     "0.5", "1E+20", f"{NOW + 600}.999"]),
    st.floats(allow_nan=False, allow_infinity=False).map(repr))
digit_strings = st.text(st.sampled_from("0123456789²³⁶０１３٣٦۳߃१"), min_size=1,
                        max_size=12).map(json.dumps)
numeric_claims = st.one_of(
    huge_ints, float_literals, digit_strings, st.sampled_from(["true", "false", "null"]),
    st.integers(NOW - 10**6, NOW + 10**6).map(str),
    st.integers(-(2**70), 2**70).map(str))


@pytest.fixture(scope="module")
def verifier() -> Iterator[TokenVerifier]:
    with KeySetServer([KEY]) as server:
        settings = GuardSettings(issuer=server.url, audience=AUDIENCE, http_timeout=2.0)
        with TokenVerifier(settings) as verifier:
            verifier.warm_up_sync()
            verifier.test_issuer = server.url  # type: ignore[attr-defined]
            yield verifier


def signed_with(issuer_url: str, literals: dict[str, str]) -> str:
    claims: dict[str, Any] = scalekit_claims(issuer_url)
    for name in literals:
        claims[name] = f"__{name}__"
    payload = json.dumps(claims, separators=(",", ":"))
    for name, literal in literals.items():
        payload = payload.replace(f'"__{name}__"', literal)
    header = json.dumps({"alg": "ES256", "kid": KEY.kid, "typ": "JWT"}).encode()
    return KEY.sign_raw(header, payload.encode())


@given(st.dictionaries(st.sampled_from(["exp", "iat", "nbf"]), numeric_claims, min_size=1))
@example({"exp": "1" + "0" * 400})
@example({"iat": "-1" + "0" * 400, "nbf": "1e400"})
def test_numeric_claim_edges_are_accepted_or_refused(verifier: TokenVerifier,
                                                     literals: dict[str, str]) -> None:
    counted("claims.numeric_edges")
    token = signed_with(verifier.test_issuer, literals)  # type: ignore[attr-defined]
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("m2m_guard")
    logger.addHandler(handler)
    try:
        verifier.verify_sync(token)
    except GuardError as exc:
        assert exc.reason != "internal_error", exc
        assert exc.status_code == 401
        if exc.reason.startswith("invalid_"):
            assert "is not a valid NumericDate" in exc.description
    finally:
        logger.removeHandler(handler)
    assert not [record for record in records if record.levelno >= logging.ERROR]


# -- header edges ---------------------------------------------------------------------------------
latin1_bytes = st.binary(max_size=120).map(lambda raw: bytes(b for b in raw if b not in b"\r\n"))
header_edges = st.one_of(
    latin1_bytes,
    latin1_bytes.map(lambda raw: b"Bearer " + raw),
    latin1_bytes.map(lambda raw: b"Basic " + raw),
    st.sampled_from([b"Bearer \x00", b"\x00", b"Bearer a.b.c\x00", b" " * 8192,
                     b"Bearer " + b" " * 8192, b"Bearer\xa0abc", b"Basic \xff\xfe",
                     b"Bearer " + b"\xe9" * 100, b"Basic " + b" " * 8192]),
)
header_lists = st.lists(st.tuples(st.sampled_from([b"authorization", b"x-other"]), header_edges),
                        max_size=3)


async def _call(app: Any, method: str, path: str, headers: list[tuple[bytes, bytes]],
                body: bytes = b"") -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if delivered:
            await anyio.sleep(3600)  # a real server waits for the disconnect
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(),
             "query_string": b"", "headers": headers, "asgi": {"version": "3.0"},
             "scheme": "http", "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 1),
             "http_version": "1.1", "root_path": ""}
    await app(scope, receive, send)
    return sent


async def _ok(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


GUARD = M2MGuardMiddleware(_ok, settings=GuardSettings(issuer="https://issuer.example",
                                                       audience="api", http_timeout=0.2))


@given(header_lists)
@example([(b"authorization", b" " * 8192)])
@example([(b"authorization", b"Bearer \x00")])
def test_middleware_header_edges_answer_400_or_401(headers: list[tuple[bytes, bytes]]) -> None:
    counted("asgi.header_edges")
    sent = anyio.run(_call, GUARD, "GET", "/things", headers)
    assert sent[0]["status"] in (400, 401), sent[0]
    assert b"Traceback" not in sent[-1]["body"]


@pytest.fixture(scope="module")
def local_issuer() -> Iterator[LocalIssuer]:
    with LocalIssuer(admin_client_id="skc_10000000000000001",
                     admin_client_secret="skcs_" + "a1B2c3D4" * 8) as issuer:
        yield issuer


@given(header_lists, st.sampled_from(["/api/v1/keys", "/oauth/token"]))
@example([(b"authorization", b"Basic " + b" " * 8192)], "/oauth/token")
@example([(b"authorization", b"Bearer \x00")], "/api/v1/keys")
def test_issuer_header_edges_never_a_5xx(local_issuer: LocalIssuer,
                                         headers: list[tuple[bytes, bytes]], path: str) -> None:
    counted("issuer.header_edges")
    if path == "/oauth/token":
        headers = [*headers, (b"content-type", b"application/x-www-form-urlencoded")]
        sent = anyio.run(_call, local_issuer.app, "POST", path, headers,
                         b"grant_type=client_credentials")
    else:
        sent = anyio.run(_call, local_issuer.app, "GET", path, headers)
    assert 400 <= sent[0]["status"] < 500, sent[0]
