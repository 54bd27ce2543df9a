"""Strict decoders shared by the JWS layer and the key-set loader.

`b64url_decode` accepts only canonical, unpadded base64url (RFC 7515 §2): the alphabet
``A-Z a-z 0-9 - _``, no padding, no whitespace, and zero bits where the last character has bits
to spare, so every byte string has exactly one accepted encoding.

`loads_json` accepts only UTF-8 JSON without a byte-order mark, without duplicate member names and
without the non-standard `NaN` / `Infinity` literals, nested at most `MAX_JSON_DEPTH` levels (a
fixed rule, whatever the interpreter's own recursion limits).
Both raise `ValueError` and nothing else.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from typing import Any, NoReturn

from .speedups import UNDECIDED
from .speedups import loads_fast as _loads_fast

__all__ = ["MAX_JSON_DEPTH", "b64url_decode", "b64url_encode", "is_b64url", "is_b64url_framing",
           "loads_json"]

# Tokens and key sets nest a few levels (Scalekit's custom_claims, Keycloak's realm_access, a
# JWK's x5c); 32 leaves room for any real document. Without a fixed rule the limit would be the
# interpreter's: CPython 3.11 refuses ~1,000 levels, 3.13 parses 8,000 and more.
MAX_JSON_DEPTH = 32

_ALPHABET = re.compile(r"[A-Za-z0-9_-]*")
# For a length of 2 or 3 modulo 4, the last character carries 4 or 2 unused low bits.
_LAST_CHARS_MOD2 = frozenset("AQgw")
_LAST_CHARS_MOD3 = frozenset("AEIMQUYcgkosw048")
_PADDING = (b"", b"", b"==", b"=")
_TO_STANDARD = bytes.maketrans(b"-_", b"+/")


def is_b64url(segment: str) -> bool:
    """True when `segment` is canonical unpadded base64url."""
    if _ALPHABET.fullmatch(segment) is None:
        return False
    return is_b64url_framing(segment)


def is_b64url_framing(segment: str) -> bool:
    """For a segment already known to use only the base64url alphabet: True when its length and
    last character make it canonical (no impossible length, no stray bits in the last one)."""
    rem = len(segment) % 4
    if rem == 0:
        return True
    if rem == 1:
        return False
    allowed = _LAST_CHARS_MOD2 if rem == 2 else _LAST_CHARS_MOD3
    return segment[-1] in allowed


def b64url_decode(segment: str) -> bytes:
    """Decode canonical unpadded base64url; `ValueError` for any other form."""
    if not is_b64url(segment):
        raise ValueError("not canonical base64url")
    # The alphabet and the trailing bits are checked above, so the standard decoder sees only
    # valid, padded input (and is much faster than urlsafe_b64decode's extra passes).
    try:
        return binascii.a2b_base64(
            segment.encode("ascii").translate(_TO_STANDARD) + _PADDING[len(segment) % 4])
    except binascii.Error:  # pragma: no cover - excluded by is_b64url
        raise ValueError("not canonical base64url") from None


def b64url_encode(data: bytes) -> str:
    """Encode as unpadded base64url."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"JSON constant {name} is not allowed")


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate member name in JSON object")
    return result


_DECODER = json.JSONDecoder(object_pairs_hook=_unique_object, parse_constant=_reject_constant)
_SCAN: Callable[[str, int], tuple[Any, int]] = _DECODER.scan_once  # type: ignore[attr-defined]


def loads_json(data: bytes) -> Any:
    """Parse strict UTF-8 JSON; `ValueError` for anything a lenient parser would guess at.

    With the `[speedups]` extra, compact JSON as issuers write it is parsed by msgspec, which
    answers only where it agrees with the strict parser below (see `speedups.loads_fast`);
    everything else, every error included, is decided by the strict parser."""
    value = _loads_fast(data)
    if value is UNDECIDED:
        return _loads_strict(data)
    # The same nesting rule as the strict path (outside strings, every "{" or "[" opens one).
    if data.count(b"{") + data.count(b"[") > MAX_JSON_DEPTH and _nested_deeper(value):
        raise ValueError(f"JSON is nested more than {MAX_JSON_DEPTH} levels deep")
    return value


def _loads_strict(data: bytes) -> Any:
    """`loads_json` with the standard library alone."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("JSON is not valid UTF-8") from None
    if text.startswith("\ufeff"):
        raise ValueError("JSON starts with a byte-order mark")
    try:
        # Fast path: compact JSON (no surrounding whitespace) is parsed by the C scanner alone,
        # with the same duplicate-name hook; anything else goes through the full decoder, which
        # gives the precise error.
        try:
            value, end = _SCAN(text, 0)
        except (StopIteration, ValueError):
            end = -1
        if end != len(text):
            value = _DECODER.decode(text)
    except RecursionError:
        raise ValueError("JSON is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError is a ValueError; keep the message short
        raise ValueError(f"invalid JSON: {exc.args[0] if exc.args else exc}") from None
    # Counting brackets (C speed) clears every ordinary token without walking it.
    if text.count("{") + text.count("[") > MAX_JSON_DEPTH and _nested_deeper(value):
        raise ValueError(f"JSON is nested more than {MAX_JSON_DEPTH} levels deep")
    return value


def _nested_deeper(value: Any) -> bool:
    """True when `value` holds objects or arrays more than `MAX_JSON_DEPTH` levels deep (an
    explicit stack: no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if not isinstance(item, (dict, list)):
            continue
        if depth > MAX_JSON_DEPTH:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children
                     if isinstance(child, (dict, list)))
    return False
