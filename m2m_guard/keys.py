"""Verification keys: one JWK in, one ready-to-use public key out, with the key's rules applied.

A JWK becomes a `VerificationKey` only if it is a public asymmetric signing key we trust:
`kty` RSA (2048 to 8192 bits, a valid exponent), EC (P-256, P-384, P-521 with a point on the
curve) or OKP (Ed25519, Ed448); no private members; `use`, when present, is `sig`; `key_ops`, when
present, contains `verify`; `alg`, when present, is an asymmetric algorithm that fits the key and
then pins it. Anything else raises `KeyRejected` with the reason, and `parse_jwks` drops such keys
from a key set (DESIGN §5).

The cryptography objects (public key, padding, hash) are built once here, so verifying a
signature allocates nothing that could have been made in advance.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from .encoding import b64url_decode, loads_json
from .settings import ASYMMETRIC_ALGORITHMS

__all__ = ["KeyRejected", "KeySet", "VerificationKey", "load_jwk", "parse_jwks"]

MIN_RSA_BITS = 2048
MAX_RSA_BITS = 8192
_MAX_KID_LENGTH = 256

_PRIVATE_MEMBERS = {
    "RSA": ("d", "p", "q", "dp", "dq", "qi", "oth"),
    "EC": ("d",),
    "OKP": ("d",),
}
_EC_CURVES: dict[str, tuple[ec.EllipticCurve, int, str]] = {
    "P-256": (ec.SECP256R1(), 32, "ES256"),
    "P-384": (ec.SECP384R1(), 48, "ES384"),
    "P-521": (ec.SECP521R1(), 66, "ES512"),
}
_HASHES: dict[str, hashes.HashAlgorithm] = {
    "256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512(),
}
_PKCS1 = padding.PKCS1v15()
_PSS = {
    bits: padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size) for bits, h in _HASHES.items()
}
_ECDSA = {bits: ec.ECDSA(h) for bits, h in _HASHES.items()}
_RSA_ALGS = frozenset(a for a in ASYMMETRIC_ALGORITHMS if a[:2] in ("RS", "PS"))

Verifier = Callable[[bytes, bytes], bool]
PublicKey = (rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
             | ed448.Ed448PublicKey)


class KeyRejected(ValueError):
    """A JWK that may not be used to verify tokens; the message says why."""


@dataclass(frozen=True, slots=True, eq=False)
class VerificationKey:
    """A trusted public key and the signature checks it may perform, one per algorithm.

    Keys compare by identity: the verified-token cache relies on "the same object is still in
    the current key set" to know that a key was not removed or replaced.
    """

    kid: str | None
    kty: str
    alg: str | None
    public_key: PublicKey = field(repr=False)
    verifiers: Mapping[str, Verifier] = field(repr=False)
    size: int = 0

    @property
    def algorithms(self) -> frozenset[str]:
        return frozenset(self.verifiers)

    def verify(self, alg: str, signing_input: bytes, signature: bytes) -> bool:
        """True when `signature` over `signing_input` is valid under this key with `alg`."""
        check = self.verifiers.get(alg)
        return check is not None and check(signing_input, signature)


def _member(jwk: Mapping[str, Any], name: str) -> bytes:
    value = jwk.get(name)
    if not isinstance(value, str) or not value:
        raise KeyRejected(f"member {name!r} is missing or not a string")
    try:
        return b64url_decode(value)
    except ValueError:
        raise KeyRejected(f"member {name!r} is not canonical base64url") from None


def _rsa_verifiers(key: rsa.RSAPublicKey) -> dict[str, Verifier]:
    result: dict[str, Verifier] = {}
    for bits, hash_alg in _HASHES.items():
        pss = _PSS[bits]

        def rs(msg: bytes, sig: bytes, h: hashes.HashAlgorithm = hash_alg) -> bool:
            try:
                key.verify(sig, msg, _PKCS1, h)
            except InvalidSignature:
                return False
            return True

        def ps(msg: bytes, sig: bytes, h: hashes.HashAlgorithm = hash_alg,
               p: padding.PSS = pss) -> bool:
            try:
                key.verify(sig, msg, p, h)
            except InvalidSignature:
                return False
            return True

        result["RS" + bits] = rs
        result["PS" + bits] = ps
    return result


def _ec_verifier(key: ec.EllipticCurvePublicKey, size: int, alg: str) -> Verifier:
    algorithm = _ECDSA[alg[2:]]

    def es(msg: bytes, sig: bytes) -> bool:
        # JWS ECDSA signatures are r || s, each exactly the curve's size (RFC 7518 §3.4).
        if len(sig) != 2 * size:
            return False
        r = int.from_bytes(sig[:size], "big")
        s = int.from_bytes(sig[size:], "big")
        if r == 0 or s == 0:
            return False
        try:
            key.verify(encode_dss_signature(r, s), msg, algorithm)
        except InvalidSignature:
            return False
        return True

    return es


def _eddsa_verifier(key: ed25519.Ed25519PublicKey | ed448.Ed448PublicKey) -> Verifier:
    def eddsa(msg: bytes, sig: bytes) -> bool:
        try:
            key.verify(sig, msg)
        except InvalidSignature:
            return False
        return True

    return eddsa


def load_jwk(jwk: Mapping[str, Any]) -> VerificationKey:
    """Turn one JWK into a `VerificationKey`, or raise `KeyRejected` saying why not."""
    if not isinstance(jwk, Mapping):
        raise KeyRejected("a JWK must be a JSON object")
    kty = jwk.get("kty")
    if kty == "oct":
        raise KeyRejected("symmetric (oct) keys are never accepted")
    if kty not in _PRIVATE_MEMBERS:
        raise KeyRejected(f"unsupported key type {kty!r}")
    private = [m for m in _PRIVATE_MEMBERS[kty] if m in jwk]
    if private:
        raise KeyRejected(f"the key has private members ({', '.join(private)})")
    kid = jwk.get("kid")
    if kid is not None and (not isinstance(kid, str) or len(kid) > _MAX_KID_LENGTH):
        raise KeyRejected("kid must be a string of at most 256 characters")
    use = jwk.get("use")
    if use is not None and use != "sig":
        raise KeyRejected(f"use is {use!r}, not 'sig'")
    key_ops = jwk.get("key_ops")
    if key_ops is not None and (not isinstance(key_ops, list) or "verify" not in key_ops):
        raise KeyRejected("key_ops does not contain 'verify'")
    alg = jwk.get("alg")
    if alg is not None and alg not in ASYMMETRIC_ALGORITHMS:
        raise KeyRejected(f"alg {alg!r} is not an accepted asymmetric algorithm")

    verifiers: dict[str, Verifier]
    public_key: PublicKey
    if kty == "RSA":
        n = int.from_bytes(_member(jwk, "n"), "big")
        e = int.from_bytes(_member(jwk, "e"), "big")
        size = n.bit_length()
        if size < MIN_RSA_BITS:
            raise KeyRejected(f"RSA key of {size} bits; at least {MIN_RSA_BITS} are required")
        if size > MAX_RSA_BITS:
            raise KeyRejected(f"RSA key of {size} bits; at most {MAX_RSA_BITS} are accepted")
        if e < 3 or e % 2 == 0 or e.bit_length() > 64:
            raise KeyRejected("RSA public exponent is invalid")
        try:
            public_key = rsa.RSAPublicNumbers(e, n).public_key()
        except ValueError as exc:
            raise KeyRejected(f"invalid RSA key: {exc}") from None
        verifiers = _rsa_verifiers(public_key)
    elif kty == "EC":
        crv = jwk.get("crv")
        if crv not in _EC_CURVES:
            raise KeyRejected(f"unsupported curve {crv!r}")
        curve, size, curve_alg = _EC_CURVES[crv]
        x, y = _member(jwk, "x"), _member(jwk, "y")
        if len(x) != size or len(y) != size:
            raise KeyRejected(f"coordinates of a {crv} key must be {size} bytes")
        try:
            public_key = ec.EllipticCurvePublicNumbers(
                int.from_bytes(x, "big"), int.from_bytes(y, "big"), curve
            ).public_key()
        except ValueError:
            raise KeyRejected(f"the point is not on curve {crv}") from None
        verifiers = {curve_alg: _ec_verifier(public_key, size, curve_alg)}
        size *= 8
    else:
        crv = jwk.get("crv")
        raw = _member(jwk, "x")
        try:
            if crv == "Ed25519":
                public_key = ed25519.Ed25519PublicKey.from_public_bytes(raw)
            elif crv == "Ed448":
                public_key = ed448.Ed448PublicKey.from_public_bytes(raw)
            else:
                raise KeyRejected(f"unsupported OKP curve {crv!r}")
        except ValueError:
            raise KeyRejected(f"invalid {crv} public key") from None
        verifiers = {"EdDSA": _eddsa_verifier(public_key)}
        size = len(raw) * 8

    if alg is not None:
        if alg not in verifiers:
            raise KeyRejected(f"alg {alg!r} does not fit a {kty} key")
        verifiers = {alg: verifiers[alg]}
    return VerificationKey(kid=kid, kty=kty, alg=alg, public_key=public_key,
                           verifiers=verifiers, size=size)


@dataclass(frozen=True, slots=True)
class KeySet:
    """The usable keys of one JWKS document, indexed by `kid`, plus what was dropped and why."""

    keys: tuple[VerificationKey, ...]
    dropped: tuple[tuple[str | None, str], ...] = ()
    by_kid: Mapping[str | None, tuple[VerificationKey, ...]] = field(default_factory=dict)

    @classmethod
    def of(cls, keys: tuple[VerificationKey, ...],
           dropped: tuple[tuple[str | None, str], ...] = ()) -> KeySet:
        index: dict[str | None, tuple[VerificationKey, ...]] = {}
        for key in keys:
            index[key.kid] = (*index.get(key.kid, ()), key)
        return cls(keys, dropped, index)

    def candidates(self, kid: str | None, alg: str) -> list[VerificationKey]:
        """Keys that may verify a token with header `kid` and `alg`.

        With a `kid`, the keys of that `kid` that accept `alg`; without one, every key that
        accepts `alg` (the caller refuses when that is more than one).
        """
        pool = self.by_kid.get(kid, ()) if kid is not None else self.keys
        return [key for key in pool if alg in key.verifiers]

    def contains(self, key: VerificationKey) -> bool:
        return any(k is key for k in self.by_kid.get(key.kid, ()))

    def __len__(self) -> int:
        return len(self.keys)


def parse_jwks(document: bytes, *, max_keys: int = 100) -> KeySet:
    """Parse a JWKS document, dropping every key `load_jwk` refuses.

    Raises `ValueError` when the document itself is unusable: not strict JSON, not an object
    with a `keys` array, or more than `max_keys` keys.
    """
    data = loads_json(document)
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ValueError("the document is not a JSON Web Key Set (no 'keys' array)")
    entries = data["keys"]
    if len(entries) > max_keys:
        raise ValueError(f"the key set holds {len(entries)} keys; at most {max_keys} are accepted")
    keys: list[VerificationKey] = []
    dropped: list[tuple[str | None, str]] = []
    for entry in entries:
        kid = entry.get("kid") if isinstance(entry, dict) else None
        try:
            keys.append(load_jwk(entry))
        except KeyRejected as exc:
            dropped.append((kid if isinstance(kid, str) else None, str(exc)))
    return KeySet.of(tuple(keys), tuple(dropped))
