"""The optional `[speedups]` extra: msgspec's JSON parser and pybase64's decoder, used only where
they give exactly what the standard library gives.

`loads_fast(data)` returns the parsed value, or `UNDECIDED` when it cannot vouch for the result,
and the caller then runs the strict standard-library parser, which decides (value or error). So
the fast path can only ever return what the strict path would return:

- it declines (UNDECIDED) anything msgspec refuses: invalid JSON or UTF-8, lone surrogate
  escapes (the standard parser accepts those), numbers out of the float range (the standard
  parser turns them into infinities), deep nesting;
- msgspec keeps the last of duplicate member names where the strict parser refuses them, so the
  parsed value is written back (msgspec's compact encoder) and must give `data` byte for byte:
  a written value never repeats a name in an object, so neither does `data`. That also declines
  whitespace, escapes, a byte-order mark and unusual number spellings (`1.50`, `-0`), which are
  rare in tokens: issuers write compact JSON;
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

import functools
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

        _b64 = functools.partial(pybase64.b64decode, validate=True)
    except ImportError:
        _b64 = None

ACTIVE: Final = {"json": "msgspec" if _decode is not None else None,
                 "base64": "pybase64" if _b64 is not None else None}


if _decode is not None:
    _fast_decode = _decode
    _encode = msgspec.json.Encoder().encode

    def loads_fast(data: bytes) -> Any:
        """The value of `data` when msgspec's parse is certainly the strict parser's; otherwise
        `UNDECIDED`."""
        if type(data) is not bytes:
            return UNDECIDED
        try:
            value = _fast_decode(data)
        except Exception:  # noqa: BLE001 - any refusal: the strict parser decides
            return UNDECIDED
        # Written back, the value must be `data` itself, byte for byte: then `data` holds no
        # duplicate member names (the written form never does) and nothing a parser could read
        # two ways. Compact JSON as issuers write it passes; anything else is declined.
        if _encode(value) != data:
            return UNDECIDED
        return value
else:
    def loads_fast(data: bytes) -> Any:
        """Without the extra: always `UNDECIDED` (the strict parser decides)."""
        return UNDECIDED


# None without the extra (the caller keeps its standard-library decoding).
b64decode: Callable[[bytes], bytes] | None = _b64
