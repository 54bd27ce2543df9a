"""Signing keys and token minting for the local issuer and for tests.

`SigningKey.sign(claims)` produces a compact JWS the way an authorization server does;
`SigningKey.sign_raw(header_bytes, payload_bytes)` signs arbitrary bytes so tests can build
tokens a normal library refuses to produce (duplicate names, odd encodings, ...).
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from .._core.encoding import b64url_encode

__all__ = ["SigningKey", "scalekit_claims"]

_HASH: dict[str, type[hashes.SHA256 | hashes.SHA384 | hashes.SHA512]] = {
    "256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}
_CURVES = {"ES256": (ec.SECP256R1, "P-256", 32), "ES384": (ec.SECP384R1, "P-384", 48),
           "ES512": (ec.SECP521R1, "P-521", 66)}

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def _uint(value: int, length: int | None = None) -> str:
    size = length if length is not None else max(1, (value.bit_length() + 7) // 8)
    return b64url_encode(value.to_bytes(size, "big"))


@dataclass(frozen=True)
class SigningKey:
    """A private signing key with its `kid` and JWS algorithm."""

    alg: str
    kid: str
    private_key: PrivateKey = field(repr=False)

    @classmethod
    def generate(cls, alg: str = "RS256", kid: str | None = None, *,
                 rsa_bits: int = 2048) -> SigningKey:
        """A new key for `alg` (RS*/PS* use RSA of `rsa_bits`, ES* their curve, EdDSA Ed25519)."""
        kid = kid or "snk_" + secrets.token_hex(8)
        private_key: PrivateKey
        if alg[:2] in ("RS", "PS"):
            private_key = rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
        elif alg in _CURVES:
            private_key = ec.generate_private_key(_CURVES[alg][0]())
        elif alg == "EdDSA":
            private_key = ed25519.Ed25519PrivateKey.generate()
        else:
            raise ValueError(f"unsupported signing algorithm {alg!r}")
        return cls(alg, kid, private_key)

    def public_jwk(self, **extra: Any) -> dict[str, Any]:
        """The public JWK (`kid`, `use: sig`, `alg` included); `extra` members are added."""
        jwk: dict[str, Any]
        key = self.private_key
        if isinstance(key, rsa.RSAPrivateKey):
            numbers = key.public_key().public_numbers()
            jwk = {"kty": "RSA", "n": _uint(numbers.n), "e": _uint(numbers.e)}
        elif isinstance(key, ec.EllipticCurvePrivateKey):
            _, crv, size = _CURVES[self.alg]
            point = key.public_key().public_numbers()
            jwk = {"kty": "EC", "crv": crv, "x": _uint(point.x, size), "y": _uint(point.y, size)}
        else:
            raw = key.public_key().public_bytes_raw()
            jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(raw)}
        jwk.update({"kid": self.kid, "use": "sig", "alg": self.alg})
        jwk.update(extra)
        return jwk

    def signature(self, signing_input: bytes, alg: str | None = None) -> bytes:
        """The JWS signature of `signing_input` (`alg` overrides the key's, for tests)."""
        alg = alg or self.alg
        key = self.private_key
        if isinstance(key, rsa.RSAPrivateKey):
            hash_alg = _HASH[alg[2:]]()
            pad: padding.AsymmetricPadding
            if alg.startswith("PS"):
                pad = padding.PSS(mgf=padding.MGF1(hash_alg), salt_length=hash_alg.digest_size)
            else:
                pad = padding.PKCS1v15()
            return key.sign(signing_input, pad, hash_alg)
        if isinstance(key, ec.EllipticCurvePrivateKey):
            size = _CURVES[self.alg][2]
            der = key.sign(signing_input, ec.ECDSA(_HASH[alg[2:]]()))
            r, s = decode_dss_signature(der)
            return r.to_bytes(size, "big") + s.to_bytes(size, "big")
        return key.sign(signing_input)

    def sign_raw(self, header: bytes, payload: bytes, *, alg: str | None = None) -> str:
        """Sign exact header and payload bytes (no JSON processing) into a compact JWS."""
        signing_input = (b64url_encode(header) + "." + b64url_encode(payload)).encode("ascii")
        return signing_input.decode("ascii") + "." + b64url_encode(
            self.signature(signing_input, alg))

    def sign(self, claims: dict[str, Any], *, typ: str | None = "JWT",
             headers: dict[str, Any] | None = None) -> str:
        """A compact JWS of `claims` with header `alg`, `kid`, `typ` (then `headers` applied;
        a header value of None removes that member)."""
        header: dict[str, Any] = {"alg": self.alg, "kid": self.kid}
        if typ is not None:
            header["typ"] = typ
        for name, value in (headers or {}).items():
            if value is None:
                header.pop(name, None)
            else:
                header[name] = value
        alg = header.get("alg")
        # An RSA key may sign as another RS*/PS* algorithm (to test algorithm pinning).
        sig_alg = alg if (isinstance(alg, str) and alg[:2] in ("RS", "PS")
                          and isinstance(self.private_key, rsa.RSAPrivateKey)) else None
        return self.sign_raw(json.dumps(header, separators=(",", ":")).encode(),
                             json.dumps(claims, separators=(",", ":")).encode(), alg=sig_alg)


def scalekit_claims(issuer: str, *, client_id: str = "m2morg_68315758685323697",
                    organization_id: str = "org_59615193906282635",
                    scopes: tuple[str, ...] | list[str] = ("deploy:applications",
                                                           "read:deployments"),
                    audience: tuple[str, ...] | list[str] | None = ("deployment-api",),
                    custom_claims: dict[str, Any] | None = None, lifetime: int = 3600,
                    now: float | None = None, **extra: Any) -> dict[str, Any]:
    """Claims shaped like a Scalekit client-credentials token (docs/local-issuer.md)."""
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {"iss": issuer, "sub": client_id, "client_id": client_id,
                              "oid": organization_id, "scopes": list(scopes),
                              "jti": "tkn_" + secrets.token_hex(8), "iat": issued, "nbf": issued,
                              "exp": issued + lifetime}
    if audience is not None:
        claims["aud"] = list(audience)
    claims["custom_claims"] = dict(custom_claims or {"environment": "production"})
    claims.update(extra)
    return claims
