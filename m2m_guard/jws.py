"""Strict compact JWS: framing, header rules and the signature check (DESIGN §6).

`parse_compact` accepts only the compact serialization: exactly three canonical base64url
segments (header, payload, non-empty signature), a header that is a strict JSON object with an
accepted asymmetric `alg`, no `crit` (we understand no extension), no `b64: false` (RFC 7797), no
`zip`, and a string `kid` when one is present. Embedded key headers (`jwk`, `jku`, `x5u`, `x5c`)
are never used to find a key. Every failure raises `InvalidToken` with a `reason` code.

`verify_compact(token, jwk)` is the JWS layer on its own: it applies the key's rules (`use`,
`key_ops`, `alg` pinning, see `keys.load_jwk`) and returns the payload bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from .encoding import b64url_decode, loads_json
from .errors import InvalidToken
from .keys import KeyRejected, VerificationKey, load_jwk
from .settings import ASYMMETRIC_ALGORITHMS

__all__ = ["CompactJWS", "HeaderCache", "check_signature", "check_token_size", "parse_compact",
           "verify_compact"]

_ACCEPTED_ALGS = frozenset(ASYMMETRIC_ALGORITHMS)
_MAX_KID_LENGTH = 256


@dataclass(frozen=True, slots=True)
class CompactJWS:
    """A compact JWS whose framing and header passed the rules; the signature is not yet checked."""

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
                  header_cache: HeaderCache | None = None) -> CompactJWS:
    """Check the framing and header of a compact JWS; raise `InvalidToken` on any defect.

    With `header_cache`, a header segment seen before and found valid is not decoded again.
    """
    if not isinstance(token, str):
        raise InvalidToken("The token must be a string.", reason="malformed")
    check_token_size(token, max_bytes)
    if token.count(".") != 2:
        raise InvalidToken("The token is not a compact JWS (three dot-separated segments).",
                           reason="malformed")
    header_b64, payload_b64, signature_b64 = token.split(".")
    if not header_b64 or not signature_b64:
        raise InvalidToken("The token has an empty header or signature.", reason="malformed")
    known = header_cache.get(header_b64) if header_cache is not None else None
    if known is not None:
        payload = _segment(payload_b64, "payload")
        signature = _segment(signature_b64, "signature")
        signing_input = token[: len(header_b64) + 1 + len(payload_b64)].encode("ascii")
        return CompactJWS(known[0], known[1], known[2], signing_input, payload, signature)
    raw_header = _segment(header_b64, "header")
    payload = _segment(payload_b64, "payload")
    signature = _segment(signature_b64, "signature")
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
    signing_input = token[: len(header_b64) + 1 + len(payload_b64)].encode("ascii")
    frozen = MappingProxyType(header)
    if header_cache is not None:
        header_cache.put(header_b64, frozen, alg, kid)
    return CompactJWS(frozen, alg, kid, signing_input, payload, signature)


def check_signature(jws: CompactJWS, key: VerificationKey) -> None:
    """Raise `InvalidToken` unless `key` accepts the token's `alg` and its signature verifies."""
    if jws.alg not in key.verifiers:
        raise InvalidToken("The token's algorithm does not match its key.",
                           reason="algorithm_mismatch")
    if not key.verify(jws.alg, jws.signing_input, jws.signature):
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
