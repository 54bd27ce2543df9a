"""The optional `[speedups]` extra: msgspec's JSON parser and pybase64's decoder, used only where
they give exactly what the standard library gives.

`loads_fast(data)` returns the parsed value, or `UNDECIDED` when it cannot vouch for the result,
and the caller then runs the strict standard-library parser, which decides (value or error). So
the fast path can only ever return what the strict path would return:

- it declines (UNDECIDED) anything with a backslash (escapes: lone surrogates, escaped quotes),
  a byte-order mark, or anything msgspec refuses (invalid JSON, invalid UTF-8, numbers out of the
  float range, which the standard parser turns into infinities, deep nesting);
- msgspec keeps the last of duplicate member names, the strict parser refuses them: without
  escapes, the text splits at its quotes into strings and the rest, each member has exactly one
  colon outside strings, so a parsed value holding fewer members than there are such colons
  had a duplicate: UNDECIDED, and the strict parser says why;
- integers of any size stay integers in both (msgspec parses big integers exactly), floats are
  correctly rounded in both.

`b64decode(standard)` (None without the extra) decodes standard-alphabet base64 whose padding
the caller built, refusing any other byte (`binascii.Error`), like
`binascii.a2b_base64(..., strict_mode=True)`.

`M2M_GUARD_SPEEDUPS=off` (or 0, false, no) in the environment when the process starts turns the
extra off even where it is installed (`ACTIVE` says which is in use): the test suite runs the
parsers both ways.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Final

__all__ = ["ACTIVE", "UNDECIDED", "b64decode", "loads_fast"]

UNDECIDED: Final = object()

_OFF = os.environ.get("M2M_GUARD_SPEEDUPS", "").strip().lower() in ("0", "off", "false", "no")

_decode: Callable[[bytes], Any] | None = None
_b64: Callable[[bytes], bytes] | None = None
if not _OFF:
    try:
        import msgspec  # type: ignore[import-not-found,unused-ignore]

        _decode = msgspec.json.Decoder().decode
    except ImportError:  # the extra is optional
        _decode = None
    try:
        import pybase64  # type: ignore[import-not-found,unused-ignore]

        def _pybase64_decode(data: bytes) -> bytes:
            return pybase64.b64decode(data, validate=True)

        _b64 = _pybase64_decode
    except ImportError:
        _b64 = None

ACTIVE: Final = {"json": "msgspec" if _decode is not None else None,
                 "base64": "pybase64" if _b64 is not None else None}


def _members(value: Any) -> int:
    """How many object members `value` holds, all levels together (an explicit stack)."""
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) is dict:
            total += len(item)
            stack.extend(child for child in item.values() if type(child) in (dict, list))
        else:
            stack.extend(child for child in item if type(child) in (dict, list))
    return total


if _decode is not None:
    _fast_decode = _decode

    def loads_fast(data: bytes) -> Any:
        """The value of `data` when msgspec's parse is certainly the strict parser's; otherwise
        `UNDECIDED`."""
        if b"\\" in data or data[:3] == b"\xef\xbb\xbf":
            return UNDECIDED
        try:
            value = _fast_decode(data)
        except Exception:  # noqa: BLE001 - any refusal: the strict parser decides
            return UNDECIDED
        if type(value) is dict or type(value) is list:
            outside = data.split(b'"')[::2]  # no escapes: quotes delimit every string
            if len(outside) == 1:
                rest = outside[0]
            else:
                rest = b"".join(outside)
            colons = rest.count(b":")
            if colons:
                found = len(value) if type(value) is dict and rest.count(b"{") == 1 \
                    else _members(value)
                if found != colons:
                    return UNDECIDED  # duplicate member names
        return value
else:
    def loads_fast(data: bytes) -> Any:
        """Without the extra: always `UNDECIDED` (the strict parser decides)."""
        return UNDECIDED


# None without the extra (the caller keeps its standard-library decoding).
b64decode: Callable[[bytes], bytes] | None = _b64
