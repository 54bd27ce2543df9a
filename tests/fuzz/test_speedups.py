"""The `[speedups]` parsers never answer differently from the standard library's.

`loads_fast` may decline (`UNDECIDED`, and the strict parser decides); when it answers, the value
must be the strict parser's, type for type (1 is not 1.0 nor True, -0.0 is not 0.0, key order
kept). Inputs: arbitrary bytes, JSON text written member by member with few distinct names (so
duplicates are common), odd whitespace, escapes, big integers and floats out of range.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from m2m_guard._core import speedups as _speedups
from m2m_guard._core.encoding import _loads_strict, loads_json
from m2m_guard._core.speedups import UNDECIDED, loads_fast

from .conftest import counted

pytestmark = pytest.mark.skipif(None in _speedups.ACTIVE.values(),
                                reason="the [speedups] extra is not installed or is off")


strict = _loads_strict  # the standard-library path alone


def same(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a)
                                                      == math.copysign(1, b))
    return bool(a == b)


NAMES = st.sampled_from(["a", "b", "iss", "exp", "a:b", "{", "é", "x" * 3])
SPACE = st.sampled_from(["", " ", "\n", "\t", "\r\n", "  "])
NUMBERS = st.one_of(
    st.integers().map(str),
    st.integers(min_value=2**63 - 2, max_value=2**70).map(str),
    st.integers(max_value=-(2**63) + 2, min_value=-(2**70)).map(str),
    st.floats(allow_nan=False).map(repr).map(lambda r: r.replace("inf", "1e999")),
    st.sampled_from(["1e400", "-1e400", "-0", "-0.0", "0e0", "1E5", "2.2250738585072011e-308",
                     "1.7976931348623157e309", "01", "1.", ".5", "+1", "NaN", "Infinity"]),
)
STRINGS = st.one_of(
    st.text(max_size=12).map(json.dumps),
    st.text(max_size=12).map(lambda t: json.dumps(t, ensure_ascii=False)),
    st.sampled_from(['"\\ud800"', '"\\u003a"', '"a\\"b"', '"http:\\/\\/x"', '":"', '"{:}"',
                     '"\x01"', '"\x7f"']),
)


def _text(draw: Any, depth: int) -> str:
    kind = draw(st.integers(0, 5 if depth < 4 else 2))
    if kind == 0:
        return draw(NUMBERS)
    if kind == 1:
        return draw(STRINGS)
    if kind == 2:
        return draw(st.sampled_from(["true", "false", "null"]))
    if kind == 3:
        items = [_text(draw, depth + 1) for _ in range(draw(st.integers(0, 3)))]
        return "[" + ",".join(draw(SPACE) + item + draw(SPACE) for item in items) + "]"
    members = []
    for _ in range(draw(st.integers(0, 4))):
        name = json.dumps(draw(NAMES), ensure_ascii=draw(st.booleans()))
        members.append(f"{draw(SPACE)}{name}{draw(SPACE)}:{draw(SPACE)}{_text(draw, depth + 1)}")
    return "{" + ",".join(members) + draw(SPACE) + "}"


@st.composite
def json_texts(draw: Any) -> bytes:
    text = draw(SPACE) + _text(draw, 0) + draw(SPACE)
    data = text.encode("utf-8", "surrogatepass")
    if draw(st.integers(0, 9)) == 0 and data:  # a damaged byte now and then
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1:]
    return data


@given(st.one_of(json_texts(), st.binary(max_size=200)))
@example(b'{"a":1,"a":2}')
@example(b'{"a":{"b":1,"b":2}}')
@example(b'{"a:b":1,"a":2,"a":3}')
@example(b'{"x":"a:b","x":1}')
@example(b'[{"a":1},{"a":1,"a":1}]')
@example(b'{"a" : 1, "a" : 2}')
@example(b'{"n":18446744073709551616}')
@example(b'{"n":1e400}')
@example(b'"\\ud800"')
@example(b"\xef\xbb\xbf{}")
@example(b"[" * 40 + b"]" * 40)
def test_fast_json_answers_only_what_the_strict_parser_answers(data: bytes) -> None:
    counted("speedups.loads_json")
    try:
        expected = strict(data)
    except ValueError:
        with pytest.raises(ValueError):
            loads_json(data)  # the guard's parser, [speedups] in use
        return
    fast = loads_fast(data)
    assert fast is UNDECIDED or same(fast, expected), (data, fast, expected)
    assert same(loads_json(data), expected), data


def test_fast_json_decides_the_usual_claims() -> None:
    # Declining everything would pass the property above: the fast path must answer real claims.
    claims = (b'{"iss":"https://issuer.example","sub":"m2morg_1","client_id":"m2morg_1",'
              b'"scopes":["read:a","write:b"],"iat":1796284878,"exp":1796288478,'
              b'"aud":["api"],"custom_claims":{"environment":"production"}}')
    assert same(loads_fast(claims), json.loads(claims))
    assert loads_fast(b'{"a":1,"a":2}') is UNDECIDED


STANDARD = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


@given(st.binary(max_size=64).map(lambda raw: __import__("base64").b64encode(raw)),
       st.lists(st.tuples(st.integers(0, 200), st.sampled_from(b"!=A\n \x00+/")), max_size=2))
def test_fast_base64_decodes_and_refuses_as_binascii_strict(encoded: bytes,
                                                            damage: list[tuple[int, int]]) -> None:
    counted("speedups.b64decode")
    fast = _speedups.b64decode
    assert fast is not None
    data = bytearray(encoded)
    for at, byte in damage:
        if data:
            data[at % len(data)] = byte
    import binascii

    try:
        expected: bytes | None = binascii.a2b_base64(bytes(data), strict_mode=True)
    except binascii.Error:
        expected = None
    try:
        got: bytes | None = fast(bytes(data))
    except binascii.Error:
        got = None
    assert got == expected, bytes(data)
