"""DPoP proofs (RFC 9449 §4.3): one proof judged against one request, framework-free and sans-IO.

`ProofChecker.check(values, method=..., url=..., now=...)` applies every rule of §4.3 that a
proof decides on its own, in this order:

1. exactly one `DPoP` header (a WSGI server joins repeated ones with a comma, which a compact
   JWS never holds), at most `max_bytes` long;
2. a compact JWS (`jws.parse_compact`: canonical base64url, a strict JSON header, no `crit`,
   `b64` or `zip`) whose `typ` is ``dpop+jwt`` and whose `alg` is an asymmetric algorithm of the
   allowed list (never ``none`` nor HS*);
3. a `jwk` header member that is a public key (`keys.private_members` finds none, and
   `keys.load_jwk` accepts it with its rules: no symmetric keys, RSA of 2048 bits or more, points
   on the curve) and that fits `alg`; its RFC 7638 thumbprint (`keys.jwk_thumbprint`) is the
   proof's `jkt`;
4. the signature by that key (`jws.check_signature`);
5. strict JSON claims: `jti` (a string of 1 to 256 characters), `htm`, `htu` (strings) and `iat`
   (a NumericDate);
6. `htm` equal to the request method; `htu` equal to the request URI, both without query and
   fragment and normalised per RFC 3986 §6 (`normalize_htu`: case of scheme and host, default
   port, percent-encoding, dot segments);
7. `iat` within `iat_window` seconds of `now`, before or after;
8. with `access_token` (a resource server), `ath` equal to base64url(SHA-256(access token)); the
   token endpoint passes none and `ath` is then not looked at;
9. with `nonces` (server nonces turned on), a `nonce` claim among them, else `UseDPoPNonce`
   carrying the current one (``nonces[0]``).

It returns a `Proof` (`jkt`, `jti`, `iat`, `nonce`); whether `jti` was seen before (the replay
store) and whether `jkt` is the token's `cnf.jkt` are the caller's to decide. Every defect raises
`InvalidDPoPProof` with a stable `reason` and a description naming the defect, never repeating
the proof. A header seen before and found valid is not decoded, nor its key loaded, again
(bounded caches: clients send the same header with every proof).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from ..errors import InvalidDPoPProof, InvalidToken, UseDPoPNonce
from ..settings import ASYMMETRIC_ALGORITHMS
from .encoding import b64url_encode, loads_json
from .jws import HeaderCache, check_signature, parse_compact
from .keys import KeyRejected, VerificationKey, jwk_thumbprint, load_jwk, private_members

__all__ = ["DEFAULT_IAT_WINDOW", "DEFAULT_MAX_PROOF_BYTES", "DPOP_TYPE", "Proof", "ProofChecker",
           "access_token_hash", "normalize_htu", "request_htu"]

DPOP_TYPE = "dpop+jwt"
DEFAULT_IAT_WINDOW = 60.0
DEFAULT_MAX_PROOF_BYTES = 8192
_MAX_JTI = 256
_MAX_NUMERIC_DATE = 253402300799
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# The characters a path may hold unencoded (RFC 3986 §3.3: pchar and "/"); every other one is
# percent-encoded when a request's decoded path is turned back into a URI.
_PATH_SAFE = frozenset(_UNRESERVED | set("!$&'()*+,;=:@/"))
_PATH_SAFE_BYTES = "".join(sorted(_PATH_SAFE)).encode("ascii")

# What parse_compact's refusals mean for a proof (its descriptions speak of "the token").
_FRAMING: dict[str | None, Callable[[], InvalidDPoPProof]] = {
    "malformed": lambda: InvalidDPoPProof(
        "The DPoP proof is not a compact JWS (three canonical base64url segments).",
        reason="dpop_malformed"),
    "malformed_header": lambda: InvalidDPoPProof(
        "The DPoP proof header is not a strict JSON object.", reason="dpop_malformed"),
    "algorithm_refused": lambda: InvalidDPoPProof(
        "The DPoP proof's alg is not an accepted asymmetric algorithm.",
        reason="dpop_algorithm_refused"),
    "crit_refused": lambda: InvalidDPoPProof(
        "The DPoP proof header has crit, which is not accepted.", reason="dpop_malformed"),
    "b64_refused": lambda: InvalidDPoPProof(
        "The DPoP proof header has b64, which is not accepted.", reason="dpop_malformed"),
    "zip_refused": lambda: InvalidDPoPProof(
        "The DPoP proof header has zip, which is not accepted.", reason="dpop_malformed"),
    "invalid_kid": lambda: InvalidDPoPProof(
        "The DPoP proof header's kid is not a short string.", reason="dpop_malformed"),
    "algorithm_mismatch": lambda: InvalidDPoPProof(
        "The DPoP proof's alg does not fit its jwk.", reason="dpop_algorithm_refused"),
    "bad_signature": lambda: InvalidDPoPProof(
        "The DPoP proof's signature does not verify with its jwk.",
        reason="dpop_bad_signature"),
}


class Proof(NamedTuple):
    """A proof that passed every rule of `ProofChecker.check` (a named tuple: made per
    request, it must be cheap)."""

    #: The RFC 7638 SHA-256 thumbprint of the proof's key (what `cnf.jkt` must equal).
    jkt: str
    #: The proof's unique identifier (what the replay store must not have seen).
    jti: str
    #: When the proof says it was made (epoch seconds).
    iat: float
    #: The server nonce the proof carries, when it carries one.
    nonce: str | None = None


def access_token_hash(token: str) -> str:
    """`ath`: base64url(SHA-256(the access token's ASCII bytes)) (RFC 9449 §4.2)."""
    return b64url_encode(hashlib.sha256(token.encode("ascii", "replace")).digest())


def _normalize_percent(text: str) -> str:
    """Upper-case percent-encodings; decode those of unreserved characters (RFC 3986 §6.2.2)."""
    def one(match: re.Match[str]) -> str:
        char = chr(int(match.group(1), 16))
        return char if char in _UNRESERVED else "%" + match.group(1).upper()
    return _PERCENT.sub(one, text) if "%" in text else text


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4, on a path that starts with "/" (bounded by the path's length)."""
    if "." not in path:
        return path
    output: list[str] = []
    for segment in path.split("/")[1:]:
        if segment == "..":
            if output:
                output.pop()
        elif segment != ".":
            output.append(segment)
    trailing = path.endswith(("/.", "/.."))
    return "/" + "/".join(output) + ("/" if trailing and output else "")


def normalize_htu(url: str) -> str | None:
    """`url` as DPoP compares it: absolute http(s) without query, fragment or user info,
    normalised per RFC 3986 §6 (lower-case scheme and host, no default port, canonical
    percent-encoding, no dot segments, "/" for an empty path); None when it is not such a URL."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname
    if scheme not in ("http", "https") or not host or parts.username is not None \
            or parts.password is not None or any(c.isspace() for c in url):
        return None
    host = _normalize_percent(host).lower()
    if ":" in host:
        host = f"[{host}]"
    authority = host if port is None or port == _DEFAULT_PORTS[scheme] else f"{host}:{port}"
    path = _remove_dot_segments(_normalize_percent(parts.path or "/"))
    return f"{scheme}://{authority}{path or '/'}"


def request_htu(scheme: str, host: str, path: str | bytes) -> str:
    """The target URI of a request as a proof's `htu` names it, from what the server passes
    the application: `path` decoded (ASGI's ``root_path + path`` as text, WSGI's ``SCRIPT_NAME +
    PATH_INFO`` as bytes) is percent-encoded back where a URI needs it, so that
    ``normalize_htu`` of both sides compares equal."""
    raw = path if isinstance(path, bytes) else path.encode("utf-8", "surrogatepass")
    if not raw.translate(None, _PATH_SAFE_BYTES):  # one C pass: nothing to encode
        encoded = raw.decode("ascii")
    else:
        encoded = "".join(chr(b) if chr(b) in _PATH_SAFE else f"%{b:02X}" for b in raw)
    return f"{scheme}://{host}{encoded or '/'}"


def _numeric_date(value: Any) -> float | None:
    if type(value) is int:
        return float(value) if 0 <= value <= _MAX_NUMERIC_DATE else None
    if type(value) is float and math.isfinite(value) and 0 <= value <= _MAX_NUMERIC_DATE:
        return value
    return None


class ProofChecker:
    """The rules of one configuration (see the module doc). Build it once; `check` is safe to
    call from several threads (its caches are bounded dicts, replaced whole)."""

    __slots__ = ("_ath", "_headers", "_key_cache_size", "_keys", "algorithms", "iat_window",
                 "max_bytes")

    def __init__(self, *, algorithms: Iterable[str] = ASYMMETRIC_ALGORITHMS,
                 iat_window: float = DEFAULT_IAT_WINDOW,
                 max_bytes: int = DEFAULT_MAX_PROOF_BYTES, key_cache_size: int = 256) -> None:
        self.algorithms = frozenset(algorithms)
        unknown = self.algorithms - set(ASYMMETRIC_ALGORITHMS)
        if unknown or not self.algorithms:
            raise ValueError("DPoP algorithms must be asymmetric JWS algorithms "
                             f"({', '.join(ASYMMETRIC_ALGORITHMS)})")
        if not (math.isfinite(iat_window) and iat_window > 0):
            raise ValueError("the DPoP iat window must be a positive number of seconds")
        self.iat_window = float(iat_window)
        self.max_bytes = int(max_bytes)
        self._headers = HeaderCache(key_cache_size)
        self._keys: dict[str, tuple[VerificationKey, str]] = {}
        self._key_cache_size = key_cache_size
        # `ath` of recent access tokens: a client sends one token with many proofs.
        self._ath: dict[str, str] = {}

    def _header_rules(self, header: Any, alg: str) -> None:
        if header.get("typ") != DPOP_TYPE:
            raise InvalidDPoPProof("The DPoP proof's typ is not dpop+jwt.",
                                   reason="dpop_type_refused")
        if alg not in self.algorithms:
            raise InvalidDPoPProof("The DPoP proof's alg is not one this server accepts.",
                                   reason="dpop_algorithm_refused")
        jwk = header.get("jwk")
        if not isinstance(jwk, dict):
            raise InvalidDPoPProof("The DPoP proof header has no jwk object.",
                                   reason="dpop_key_refused")
        private = private_members(jwk)
        if private:
            raise InvalidDPoPProof(f"The DPoP proof's jwk holds private key members "
                                   f"({', '.join(private)}): send the public key only.",
                                   reason="dpop_private_key")

    def _key(self, segment: str, header: Any, alg: str) -> tuple[VerificationKey, str]:
        known = self._keys.get(segment)
        if known is not None:
            return known
        jwk = header["jwk"]
        try:
            key = load_jwk(jwk)
            jkt = jwk_thumbprint(jwk)
        except KeyRejected:
            raise InvalidDPoPProof("The DPoP proof's jwk is not an accepted public signing key.",
                                   reason="dpop_key_refused") from None
        if alg not in key.verifiers:
            raise _FRAMING["algorithm_mismatch"]()
        if len(self._keys) >= self._key_cache_size:
            self._keys = {}
        self._keys[segment] = (key, jkt)
        return key, jkt

    def check(self, values: Sequence[str], *, method: str, url: str, now: float,
              access_token: str | None = None,
              nonces: Sequence[str] | None = None) -> Proof:
        """Judge the `DPoP` header `values` of a request to `method` `url` (its target URI,
        query and fragment ignored) at `now`; see the module doc. Raises `InvalidDPoPProof`
        or `UseDPoPNonce`."""
        if not values:
            raise InvalidDPoPProof("The request has no DPoP header.",
                                   reason="dpop_proof_missing")
        if len(values) > 1 or "," in values[0]:
            raise InvalidDPoPProof("The request has more than one DPoP header.",
                                   reason="dpop_multiple_proofs")
        proof = values[0].strip(" \t")
        if len(proof) > self.max_bytes:
            raise InvalidDPoPProof(f"The DPoP proof is larger than {self.max_bytes} bytes.",
                                   reason="dpop_proof_too_large")
        try:
            jws = parse_compact(proof, max_bytes=self.max_bytes, header_cache=self._headers,
                                header_rules=self._header_rules)
            key, jkt = self._key(proof.partition(".")[0], jws.header, jws.alg)
            check_signature(jws, key)
        except InvalidToken as exc:
            raise _FRAMING.get(exc.reason, _FRAMING["malformed"])() from None
        try:
            claims = loads_json(jws.payload)
        except ValueError:
            claims = None
        if not isinstance(claims, dict):
            raise InvalidDPoPProof("The DPoP proof's payload is not a strict JSON object.",
                                   reason="dpop_invalid_claims")
        jti, htm, htu = claims.get("jti"), claims.get("htm"), claims.get("htu")
        iat = _numeric_date(claims.get("iat"))
        nonce = claims.get("nonce")
        if not isinstance(jti, str) or not 0 < len(jti) <= _MAX_JTI:
            raise InvalidDPoPProof(f"The DPoP proof's jti is missing or not a string of 1 to "
                                   f"{_MAX_JTI} characters.", reason="dpop_invalid_claims")
        if not isinstance(htm, str) or not isinstance(htu, str):
            raise InvalidDPoPProof("The DPoP proof's htm or htu is missing or not a string.",
                                   reason="dpop_invalid_claims")
        if iat is None:
            raise InvalidDPoPProof("The DPoP proof's iat is missing or not a NumericDate.",
                                   reason="dpop_invalid_claims")
        if nonce is not None and not isinstance(nonce, str):
            raise InvalidDPoPProof("The DPoP proof's nonce is not a string.",
                                   reason="dpop_invalid_claims")
        if htm != method:
            raise InvalidDPoPProof("The DPoP proof's htm is not the request's method.",
                                   reason="dpop_method_mismatch")
        if htu != url:  # the usual case: the client used the URL the server sees, verbatim
            expected = normalize_htu(url)
            if expected is None or normalize_htu(htu) != expected:
                raise InvalidDPoPProof("The DPoP proof's htu is not the request's URI (scheme, "
                                       "host, port and path; query and fragment ignored).",
                                       reason="dpop_url_mismatch")
        if now - iat > self.iat_window:
            raise InvalidDPoPProof(f"The DPoP proof's iat is more than {self.iat_window:g} s "
                                   f"in the past: make a fresh proof per request.",
                                   reason="dpop_too_old")
        if iat - now > self.iat_window:
            raise InvalidDPoPProof(f"The DPoP proof's iat is more than {self.iat_window:g} s "
                                   f"in the future: check the client's clock.",
                                   reason="dpop_in_future")
        if access_token is not None:
            ath = claims.get("ath")
            if not isinstance(ath, str):
                raise InvalidDPoPProof("The DPoP proof has no ath (the hash of the access "
                                       "token).", reason="dpop_ath_mismatch")
            expected_ath = self._ath.get(access_token)
            if expected_ath is None:
                expected_ath = access_token_hash(access_token)
                if len(self._ath) >= self._key_cache_size:
                    self._ath = {}
                self._ath[access_token] = expected_ath
            if ath != expected_ath:
                raise InvalidDPoPProof("The DPoP proof's ath is not the hash of this access "
                                       "token.", reason="dpop_ath_mismatch")
        if nonces and (nonce is None or nonce not in nonces):
            raise UseDPoPNonce(nonces[0])
        return Proof(jkt, jti, iat, nonce)
