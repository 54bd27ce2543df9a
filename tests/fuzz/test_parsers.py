"""Properties of the parsers that see attacker input first: the Authorization header (directly
and through the ASGI middleware), compact JWS framing and strict JSON.

Whatever the input, the only outcomes are a result or the documented refusal: a `GuardError`
(with a 4xx status) from the guard's parsers, a `ValueError` from `loads_json`.
"""

from __future__ import annotations

import json
import string
from typing import Any

import anyio
from hypothesis import example, given
from hypothesis import strategies as st

from m2m_guard import GuardError, GuardSettings
from m2m_guard._core.bearer import extract_bearer
from m2m_guard._core.encoding import b64url_encode, loads_json
from m2m_guard._core.jws import CompactJWS, HeaderCache, parse_compact
from m2m_guard.asgi import M2MGuardMiddleware

from .conftest import counted

B64 = string.ascii_letters + string.digits + "-_"
TOKEN68 = B64 + ".~+/="

latin1 = st.text(st.characters(max_codepoint=0xFF), max_size=200)
near_bearer = st.builds(
    lambda scheme, gap, token, tail: f"{scheme}{gap}{token}{tail}",
    st.sampled_from(["Bearer", "bearer", "BEARER", "Bearer\t", "Basic", "Bearer,", ""]),
    st.sampled_from([" ", "  ", "\t", "", " \t "]),
    st.text(TOKEN68 + " \t,\"\\", max_size=120),
    st.sampled_from(["", " ", "\t", "=", ",x", " extra"]),
)
header_values = st.lists(st.one_of(near_bearer, latin1), max_size=3)
queries = st.one_of(st.binary(max_size=80), st.sampled_from(
    [b"", b"access_token=x", b"a=1&access%5Ftoken=y", b"%61ccess_token", b"access_token"]))


@given(header_values, queries)
@example(["Bearer " + "a" * 20000], b"")
@example(["Bearer a.b.c"], b"access_token=1")
def test_extract_bearer_returns_a_token_none_or_a_guard_error(values: list[str],
                                                              query: bytes) -> None:
    counted("bearer.extract_bearer")
    try:
        token = extract_bearer(values, query, max_token_bytes=16384)
    except GuardError as exc:
        assert exc.status_code in (400, 401)
        return
    if token is not None:
        assert token and len(token) <= 16384
        assert set(token) <= set(TOKEN68)
        assert len(values) == 1 and token in values[0]


SETTINGS = GuardSettings(issuer="https://issuer.example", audience="api", http_timeout=0.2)


async def _ok(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


GUARD = M2MGuardMiddleware(_ok, settings=SETTINGS)


async def _call(headers: list[tuple[bytes, bytes]], query: bytes) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/things", "raw_path": b"/things",
             "query_string": query, "headers": headers, "asgi": {"version": "3.0"}}
    await GUARD(scope, receive, send)
    return sent


raw_values = st.one_of(st.binary(max_size=200),
                       near_bearer.map(lambda v: v.encode("latin-1", "replace")))


@given(st.lists(st.tuples(st.sampled_from([b"authorization", b"Authorization", b"x-other"]),
                          raw_values), max_size=3), queries)
def test_asgi_header_path_answers_4xx_never_500(headers: list[tuple[bytes, bytes]],
                                                 query: bytes) -> None:
    """Raw header bytes through the middleware: a 400/401 refusal, never 500 or an exception
    (ASGI servers lower-case header names, so only lower-case names count)."""
    counted("asgi.header_path")
    sent = anyio.run(_call, headers, query)
    status = sent[0]["status"]
    assert status in (400, 401), status
    assert sent[-1]["type"] == "http.response.body"
    assert b"Traceback" not in sent[-1]["body"]


def _segment(data: bytes) -> str:
    return b64url_encode(data)


headers_json = st.dictionaries(
    st.sampled_from(["alg", "kid", "typ", "crit", "b64", "zip", "jwk", "cty", "x"]),
    st.one_of(st.sampled_from(["RS256", "ES256", "EdDSA", "none", "HS256", "JWT"]),
              st.none(), st.booleans(), st.integers(), st.text(max_size=10),
              st.lists(st.text(max_size=5), max_size=2)),
    max_size=5)
framed = st.builds(
    lambda h, p, s, dots: ".".join([_segment(json.dumps(h).encode()), _segment(p),
                                    _segment(s)] + dots),
    headers_json, st.binary(max_size=60), st.binary(max_size=80),
    st.lists(st.text(B64, max_size=4), max_size=1))


@given(st.one_of(st.text(max_size=300), st.text(B64 + ".", max_size=300), framed))
@example("e30.e30.AA")
@example("eyJhbGciOiJSUzI1NiJ9..AA")
def test_parse_compact_frames_or_refuses(token: str) -> None:
    counted("jws.parse_compact")
    cache = HeaderCache(4)
    try:
        jws = parse_compact(token, header_cache=cache)
    except GuardError as exc:
        assert exc.status_code == 401 and exc.error_code == "invalid_token"
        return
    assert isinstance(jws, CompactJWS)
    assert token.count(".") == 2 and jws.signature
    assert jws.alg in SETTINGS.algorithms
    assert "crit" not in jws.header and "zip" not in jws.header
    assert jws.signing_input == token.rsplit(".", 1)[0].encode("ascii")
    # a second parse through the header cache gives the same answer
    again = parse_compact(token, header_cache=cache)
    assert (again.alg, again.kid, again.payload, again.signature) == \
        (jws.alg, jws.kid, jws.payload, jws.signature)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8),
                                                                      children, max_size=4),
    max_leaves=20)


@given(st.one_of(st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode()),
                 st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass"))))
@example(b'{"a":1,"a":2}')
@example(b"\xef\xbb\xbf{}")
@example(b"[" * 100000)
@example(b'{"n": NaN}')
def test_loads_json_parses_or_raises_value_error(data: bytes) -> None:
    counted("encoding.loads_json")
    try:
        value = loads_json(data)
    except ValueError:
        return
    # anything accepted is plain JSON that serialises back to an equal value
    assert loads_json(json.dumps(value).encode()) == value


@given(json_values)
def test_loads_json_round_trips_standard_json(value: Any) -> None:
    counted("encoding.loads_json round trip")
    assert loads_json(json.dumps(value).encode()) == value
