"""Strict compact JWS: framing, header rules and the signature check (docs/architecture.md).

`parse_compact` accepts only the compact serialization: exactly three canonical base64url
segments (header, payload, non-empty signature), a header that is a strict JSON object with an
accepted asymmetric `alg`, no `crit` (we understand no extension), no `b64: false` (RFC 7797), no
`zip`, and a string `kid` when one is present. Embedded key headers (`jwk`, `jku`, `x5u`, `x5c`)
are never used to find a key. Every failure raises `InvalidToken` with a `reason` code.

`verify_compact(token, jwk)` is the JWS layer on its own: it applies the key's rules (`use`,
`key_ops`, `alg` pinning, see `keys.load_jwk`) and returns the payload bytes.
"""

from __future__ import annotations

import binascii
import sys
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from ..errors import InvalidToken
from ..settings import ASYMMETRIC_ALGORITHMS
from . import speedups
from .encoding import (
    _LAST_CHARS_MOD2,
    _LAST_CHARS_MOD3,
    b64url_decode,
    is_b64url_framing,
    loads_json,
)
from .keys import KeyRejected, VerificationKey, load_jwk

__all__ = ["CompactJWS", "HeaderCache", "check_signature", "check_token_size", "parse_compact",
           "verify_compact"]

_ACCEPTED_ALGS = frozenset(ASYMMETRIC_ALGORITHMS)
_MAX_KID_LENGTH = 256
_B64URL = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
# One pass maps a token to the standard base64 alphabet, keeps the dots and turns every other
# byte into "!", which then shows that the token needs the slow, exact path.
_TO_STANDARD = bytes(
    {ord("-"): ord("+"), ord("_"): ord("/"), ord("."): ord(".")}.get(
        i, i if i in _B64URL else ord("!")) for i in range(256))
_PADDING = (b"", b"", b"==", b"=")
# By length modulo 4: the characters a canonical segment may end with (a multiple of 4 is not
# looked up; a length of 1 modulo 4 is never canonical, so nothing is allowed).
_LAST_CHARS: tuple[frozenset[str], ...] = (
    frozenset(), frozenset(), _LAST_CHARS_MOD2, _LAST_CHARS_MOD3)
# Python 3.11+: the strict decoder refuses "!" (any byte outside the alphabet) itself, faster
# than a separate search; 3.10 searches first.
_STRICT_A2B = sys.version_info >= (3, 11)
# The [speedups] extra's decoder (None without it) refuses "!" as well.
_FAST_B64 = speedups.b64decode
_REFUSES_BAD_BYTES = _STRICT_A2B or _FAST_B64 is not None
_a2b = binascii.a2b_base64
_new_jws = tuple.__new__


class CompactJWS(NamedTuple):
    """A compact JWS whose framing and header passed the rules; the signature is not yet checked.

    Immutable (a named tuple: built once per request, it must be cheap to make).
    """

    header: Mapping[str, Any]
    alg: str
    kid: str | None
    signing_input: bytes
    payload: bytes
    signature: bytes


def _segment(value: str, what: str) -> bytes:
    try:
        return b64url_decode(value)
    except ValueError:
        raise InvalidToken(f"The token {what} is not canonical base64url.",
                           reason="malformed") from None


class HeaderCache:
    """Header segments already found valid, with their parsed header, `alg` and `kid`.

    Tokens of one issuer share a few header segments (alg, kid, typ), so decoding and checking
    each one once is enough. Only headers that passed every rule are stored; the map is bounded
    (it is emptied when full, so a flood of distinct headers costs memory for at most `size`).
    """

    __slots__ = ("entries", "size")

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self.entries: dict[str, tuple[Mapping[str, Any], str, str | None]] = {}

    def get(self, segment: str) -> tuple[Mapping[str, Any], str, str | None] | None:
        return self.entries.get(segment)

    def put(self, segment: str, header: Mapping[str, Any], alg: str, kid: str | None) -> None:
        if len(self.entries) >= self.size:
            self.entries.clear()
        self.entries[segment] = (header, alg, kid)


def check_token_size(token: str, max_bytes: int) -> None:
    """Refuse a token over `max_bytes` (`InvalidToken`), before anything else looks at it."""
    if len(token) > max_bytes:
        raise InvalidToken(f"The token is larger than {max_bytes} bytes.", reason="token_too_large")


def parse_compact(token: str, *, max_bytes: int = 16384,
                  header_cache: HeaderCache | None = None,
                  header_rules: Callable[[Mapping[str, Any], str], None] | None = None,
                  ) -> CompactJWS:
    """Check the framing and header of a compact JWS; raise `InvalidToken` on any defect.

    With `header_cache`, a header segment seen before and found valid is not decoded again.
    `header_rules(header, alg)` adds the caller's own header checks (raising `InvalidToken`); they
    run before a header enters `header_cache`, so a cache must only ever be used with the same
    rules (a verifier owns its cache).
    """
    if not isinstance(token, str):
        raise InvalidToken("The token must be a string.", reason="malformed")
    if len(token) > max_bytes:
        check_token_size(token, max_bytes)
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidToken("The token is not a compact JWS (three dot-separated segments).",
                           reason="malformed")
    header_b64, payload_b64, signature_b64 = parts
    if not header_b64 or not signature_b64:
        raise InvalidToken("The token has an empty header or signature.", reason="malformed")
    known = header_cache.entries.get(header_b64) if header_cache is not None else None
    signing_end = len(header_b64) + 1 + len(payload_b64)
    if known is not None:
        # The usual case, inline: a known header and a token in the base64url alphabet only
        # (one translate maps every other byte to "!"), the other segments canonical by their
        # length and last character. Anything else takes `_decode_segments` for the exact error.
        if token.isascii():
            ascii_token = token.encode("ascii")
            standard = ascii_token.translate(_TO_STANDARD)
            payload_rem = len(payload_b64) & 3
            signature_rem = len(signature_b64) & 3
            if ((_REFUSES_BAD_BYTES or b"!" not in standard)
                    and (not payload_rem or payload_b64[-1] in _LAST_CHARS[payload_rem])
                    and (not signature_rem or signature_b64[-1] in _LAST_CHARS[signature_rem])):
                payload_std = standard[len(header_b64) + 1:signing_end] + _PADDING[payload_rem]
                signature_std = standard[signing_end + 1:] + _PADDING[signature_rem]
                try:
                    if _FAST_B64 is not None:  # [speedups]: pybase64, as strict as the below
                        payload, signature = _FAST_B64(payload_std), _FAST_B64(signature_std)
                    elif _STRICT_A2B:
                        payload = _a2b(payload_std, strict_mode=True)  # type: ignore[call-arg,unused-ignore]
                        signature = _a2b(signature_std, strict_mode=True)  # type: ignore[call-arg,unused-ignore]
                    else:
                        payload, signature = _a2b(payload_std), _a2b(signature_std)
                    return _new_jws(CompactJWS, (known[0], known[1], known[2],
                                                 ascii_token[:signing_end], payload, signature))
                except binascii.Error:  # a byte outside the alphabet ("!"): the exact error below
                    pass
        decoded = _decode_segments(token, header_b64, payload_b64, signature_b64,
                                   with_header=False)
        return CompactJWS(known[0], known[1], known[2], decoded[3][:signing_end], decoded[1],
                          decoded[2])
    decoded = _decode_segments(token, header_b64, payload_b64, signature_b64, with_header=True)
    raw_header, payload, signature, ascii_token = decoded
    try:
        header = loads_json(raw_header)
    except ValueError:
        raise InvalidToken("The token header is not a strict JSON object.",
                           reason="malformed_header") from None
    if not isinstance(header, dict):
        raise InvalidToken("The token header is not a JSON object.", reason="malformed_header")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in _ACCEPTED_ALGS:
        raise InvalidToken("The token's algorithm is not accepted.", reason="algorithm_refused")
    if "crit" in header:
        raise InvalidToken("The token has critical header parameters that are not understood.",
                           reason="crit_refused")
    if "b64" in header and header["b64"] is not True:
        raise InvalidToken("Unencoded payloads (b64) are not accepted.", reason="b64_refused")
    if "zip" in header:
        raise InvalidToken("Compressed payloads (zip) are not accepted.", reason="zip_refused")
    kid = header.get("kid")
    # A kid member that is present must be a string: `"kid": null` is malformed, not absent.
    if "kid" in header and (not isinstance(kid, str) or not kid or len(kid) > _MAX_KID_LENGTH):
        raise InvalidToken("The token's kid must be a non-empty string of at most 256 characters.",
                           reason="invalid_kid")
    frozen = MappingProxyType(header)
    if header_rules is not None:
        header_rules(frozen, alg)
    if header_cache is not None:
        header_cache.put(header_b64, frozen, alg, kid)
    return CompactJWS(frozen, alg, kid, ascii_token[:signing_end], payload, signature)


def _decode_segments(token: str, header_b64: str, payload_b64: str, signature_b64: str, *,
                     with_header: bool) -> tuple[bytes, bytes, bytes, bytes]:
    """(header, payload, signature, the token as ASCII bytes); header is b"" without
    `with_header`. Raises `InvalidToken` naming the first segment that is not canonical.

    The common case (every character in the base64url alphabet) is checked once for the whole
    token and translated to the standard alphabet in one pass; each segment then only needs its
    length and last character checked. Anything else takes the per-segment path for the exact
    error.
    """
    if token.isascii():
        ascii_token = token.encode("ascii")
        standard = ascii_token.translate(_TO_STANDARD)
        if b"!" not in standard and (
            (not with_header or is_b64url_framing(header_b64))
            and is_b64url_framing(payload_b64) and is_b64url_framing(signature_b64)
        ):
            start = len(header_b64) + 1
            end = start + len(payload_b64)
            a2b = binascii.a2b_base64
            try:
                return (
                    a2b(standard[:start - 1] + _PADDING[(start - 1) % 4]) if with_header else b"",
                    a2b(standard[start:end] + _PADDING[len(payload_b64) % 4]),
                    a2b(standard[end + 1:] + _PADDING[len(signature_b64) % 4]),
                    ascii_token,
                )
            except binascii.Error:  # pragma: no cover - excluded by the checks above
                pass
    header = _segment(header_b64, "header") if with_header else b""
    payload = _segment(payload_b64, "payload")
    signature = _segment(signature_b64, "signature")
    return header, payload, signature, token.encode("ascii")


def check_signature(jws: CompactJWS, key: VerificationKey) -> None:
    """Raise `InvalidToken` unless `key` accepts the token's `alg` and its signature verifies."""
    check = key.verifiers.get(jws.alg)
    if check is None:
        raise InvalidToken("The token's algorithm does not match its key.",
                           reason="algorithm_mismatch")
    if not check(jws.signing_input, jws.signature):
        raise InvalidToken("The token signature is invalid.", reason="bad_signature")


def verify_compact(token: str, jwk: Mapping[str, Any] | VerificationKey) -> bytes:
    """Verify a compact JWS against one JWK and return its payload bytes.

    The JWK's rules apply (`use` must be `sig`, `key_ops` must contain `verify`, its `alg` pins
    the algorithm, no symmetric or private keys). Raises `InvalidToken` on any failure.
    """
    if isinstance(jwk, VerificationKey):
        key = jwk
    else:
        try:
            key = load_jwk(jwk)
        except KeyRejected as exc:
            raise InvalidToken(f"The key cannot verify tokens: {exc}.",
                               reason="key_refused") from None
    jws = parse_compact(token)
    check_signature(jws, key)
    return jws.payload
