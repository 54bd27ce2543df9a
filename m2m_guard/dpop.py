"""DPoP (RFC 9449) for clients and tests: a key pair that makes proofs, and the proof checker.

`DPoPKey` is the client's side: ``DPoPKey.generate()`` (ES256 by default), ``.save(path)`` /
``DPoPKey.load(path)`` (an unencrypted PKCS#8 PEM file, written readable by its owner only),
``.thumbprint`` (the RFC 7638 ``jkt`` an authorization server binds tokens to, `cnf.jkt`) and
``.proof(method, url, access_token=None, nonce=None)``, a fresh proof for one request::

    key = DPoPKey.generate()
    proof = key.proof("GET", "https://api.example.com/deployments", access_token=token)
    # Authorization: DPoP <token>
    # DPoP: <proof>

`ProofChecker` (from the core, re-exported) is the server's side: every rule of RFC 9449 §4.3
that a proof decides on its own, for a resource server (with the access token, so `ath` is
checked) and for a token endpoint (without). docs/dpop.md says how the guard uses it.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from ._core.dpop import (
    DEFAULT_IAT_WINDOW,
    DPOP_TYPE,
    Proof,
    ProofChecker,
    access_token_hash,
    normalize_htu,
)
from ._core.keys import jwk_thumbprint
from .local_issuer.signing import SigningKey

__all__ = ["DEFAULT_IAT_WINDOW", "DPOP_TYPE", "DPoPKey", "Proof", "ProofChecker",
           "access_token_hash", "normalize_htu"]

_CURVE_ALGS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
_PUBLIC_MEMBERS = ("kty", "crv", "n", "e", "x", "y")


def _htu(url: str) -> str:
    """`url` without its query and fragment (RFC 9449 §4.2: what `htu` holds)."""
    return url.split("#", 1)[0].split("?", 1)[0]


class DPoPKey:
    """A client's DPoP key pair (see the module doc)."""

    __slots__ = ("_signing", "public_jwk", "thumbprint")

    def __init__(self, signing_key: SigningKey) -> None:
        self._signing = signing_key
        jwk = signing_key.public_jwk()
        #: The public key as the proofs' `jwk` header carries it (required members only).
        self.public_jwk: dict[str, str] = {name: jwk[name] for name in _PUBLIC_MEMBERS
                                           if name in jwk}
        #: RFC 7638 SHA-256 thumbprint, base64url: the `cnf.jkt` of tokens bound to this key.
        self.thumbprint = jwk_thumbprint(self.public_jwk)

    @property
    def alg(self) -> str:
        return self._signing.alg

    @classmethod
    def generate(cls, alg: str = "ES256") -> DPoPKey:
        """A new key pair for `alg` (ES256/384/512, EdDSA, or RS*/PS* with RSA 2048)."""
        return cls(SigningKey.generate(alg, kid="dpop"))

    @classmethod
    def from_pem(cls, pem: bytes, *, alg: str | None = None) -> DPoPKey:
        """A key pair from an unencrypted PEM private key; `alg` defaults to the key's own
        (ES* by curve, EdDSA) and to RS256 for RSA."""
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, (ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey,
                                rsa.RSAPrivateKey)):
            raise ValueError("a DPoP key must be an EC (P-256, P-384, P-521), Ed25519 or RSA "
                             "private key")
        default: str | None
        if isinstance(key, ec.EllipticCurvePrivateKey):
            default = _CURVE_ALGS.get(key.curve.name)
        elif isinstance(key, ed25519.Ed25519PrivateKey):
            default = "EdDSA"
        else:
            default = "RS256"
        if default is None:
            raise ValueError("a DPoP key's curve must be P-256, P-384 or P-521")
        return cls(SigningKey(alg or default, "dpop", key))

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, alg: str | None = None) -> DPoPKey:
        """The key pair saved at `path` (`save`)."""
        return cls.from_pem(Path(path).read_bytes(), alg=alg)

    def to_pem(self) -> bytes:
        """The private key as unencrypted PKCS#8 PEM (keep it as secret as a password)."""
        return self._signing.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption())

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the private key to `path`, readable and writable by its owner only."""
        target = Path(path)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(self.to_pem())
        os.chmod(target, 0o600)

    def proof(self, method: str, url: str, access_token: str | None = None,
              nonce: str | None = None, *, iat: float | None = None, jti: str | None = None,
              claims: dict[str, Any] | None = None, headers: dict[str, Any] | None = None,
              ) -> str:
        """A fresh proof for one `method` `url` request (query and fragment are left out of
        `htu`); with `access_token` it carries `ath`, with `nonce` the server's nonce. `iat`,
        `jti`, extra `claims` and `headers` (a value of None removes that member) are for
        tests."""
        payload: dict[str, Any] = {
            "jti": jti if jti is not None else secrets.token_urlsafe(16),
            "htm": method, "htu": _htu(url),
            "iat": int(time.time()) if iat is None else iat,
        }
        if access_token is not None:
            payload["ath"] = access_token_hash(access_token)
        if nonce is not None:
            payload["nonce"] = nonce
        for name, value in (claims or {}).items():
            if value is None:
                payload.pop(name, None)
            else:
                payload[name] = value
        header: dict[str, Any] = {"kid": None, "jwk": self.public_jwk}
        header.update(headers or {})
        return self._signing.sign(payload, typ=DPOP_TYPE, headers=header)

    def __repr__(self) -> str:
        return f"DPoPKey(alg={self.alg!r}, thumbprint={self.thumbprint!r})"
