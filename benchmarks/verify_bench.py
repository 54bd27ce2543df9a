"""Token verification, side by side, per algorithm, on the same tokens.

Contenders: the raw `cryptography` signature check (the limit: no parsing, no claims), PyJWT's
`jwt.decode` with a prepared key, joserfc, authlib, and `TokenVerifier` uncached (cache off, so
every call is a full verification) and cached (one token again and again: a cache hit).

Targets: the overhead ratio (TokenVerifier uncached - raw) / (PyJWT - raw) ≤ 0.10 for RS256,
ES256 and EdDSA, and a cache hit ≤ 0.025x PyJWT's full decode; each ratio is taken within a
round, then summarised (median and spread).
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable
from typing import Any

import jwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from m2m_guard import TokenVerifier
from m2m_guard._core.encoding import b64url_decode
from m2m_guard.local_issuer import SigningKey

from .apps import AUDIENCE, guard_settings
from .harness import Config, interleave, per_round
from .report import Row

ALGORITHMS = ("RS256", "PS256", "ES256", "EdDSA")
# Targets as ratios within one run (ratios to the C-level signature check alone swing with the
# machine; Python work compared with Python work does not):
# - overhead: (TokenVerifier uncached - raw) / (PyJWT - raw), for these algorithms;
# - a cache hit against PyJWT's full decode, for every algorithm.
OVERHEAD_TARGET = 0.10
OVERHEAD_ALGORITHMS = ("RS256", "ES256", "EdDSA")
HIT_TARGET = 0.025
OVERHEAD_ROW = "overhead ratio vs PyJWT"
HIT_ROW = "cache hit vs PyJWT full decode"


def _raw_checker(key: SigningKey, token: str) -> Callable[[], None]:
    """The bare signature check of `token`, with every object prepared in advance."""
    head, payload, signature = token.split(".")
    message = f"{head}.{payload}".encode("ascii")
    sig = b64url_decode(signature)
    public: Any = key.private_key.public_key()
    if key.alg == "RS256":
        pkcs1, sha = padding.PKCS1v15(), hashes.SHA256()
        return lambda: public.verify(sig, message, pkcs1, sha)
    if key.alg == "PS256":
        sha = hashes.SHA256()
        pss = padding.PSS(mgf=padding.MGF1(sha), salt_length=sha.digest_size)
        return lambda: public.verify(sig, message, pss, sha)
    if key.alg == "ES256":
        # JWS carries r || s; the DER form cryptography wants is prepared here, not timed.
        der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
        ecdsa = ec.ECDSA(hashes.SHA256())
        return lambda: public.verify(der, message, ecdsa)
    return lambda: public.verify(sig, message)


def _cycling(tokens: list[str], call: Callable[[str], Any]) -> Callable[[int], None]:
    source = itertools.cycle(tokens)

    def run(batch: int) -> None:
        for _ in range(batch):
            call(next(source))

    return run


def contenders(key: SigningKey, issuer: str, tokens: list[str]) -> dict[str, Callable[[int], None]]:
    alg = key.alg
    jwk = key.public_jwk()
    public = key.private_key.public_key()
    raw_checks = itertools.cycle([_raw_checker(key, token) for token in tokens])

    def raw(batch: int) -> None:
        for _ in range(batch):
            next(raw_checks)()

    def pyjwt(token: str) -> Any:
        return jwt.decode(token, public, algorithms=[alg], audience=AUDIENCE, issuer=issuer)

    from joserfc import jwt as jose_jwt
    from joserfc.jwk import JWKRegistry

    jose_key = JWKRegistry.import_key(jwk)
    jose_claims = jose_jwt.JWTClaimsRegistry(iss={"essential": True, "value": issuer},
                                             aud={"essential": True, "value": AUDIENCE})

    def joserfc(token: str) -> Any:
        decoded = jose_jwt.decode(token, jose_key, algorithms=[alg])
        jose_claims.validate(decoded.claims)
        return decoded

    # authlib.jose announces its move to joserfc (and forces that warning on): keep it quiet.
    with warnings.catch_warnings(record=True):
        from authlib.jose import JsonWebKey, JsonWebToken
    authlib_key = JsonWebKey.import_key(jwk)
    authlib_jwt = JsonWebToken([alg])
    options = {"iss": {"essential": True, "value": issuer},
               "aud": {"essential": True, "value": AUDIENCE}}

    def authlib(token: str) -> Any:
        claims = authlib_jwt.decode(token, authlib_key, claims_options=options)
        claims.validate()
        return claims

    uncached = TokenVerifier(guard_settings(issuer, cache_size=0))
    cached = TokenVerifier(guard_settings(issuer))
    uncached.warm_up_sync()
    cached.warm_up_sync()
    repeated = tokens[0]

    def hit(batch: int) -> None:
        verify = cached.verify_sync
        for _ in range(batch):
            verify(repeated)

    return {
        "raw cryptography": raw,
        "PyJWT jwt.decode": _cycling(tokens, pyjwt),
        "joserfc": _cycling(tokens, joserfc),
        "authlib": _cycling(tokens, authlib),
        "TokenVerifier uncached": _cycling(tokens, uncached.verify_sync),
        "TokenVerifier cached": hit,
    }


def run(keys: dict[str, SigningKey], issuer: str, pools: dict[str, list[str]],
        config: Config) -> list[Row]:
    rows: list[Row] = []
    for alg in ALGORITHMS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # joserfc flags EdDSA (RFC 9864) as deprecated
            results = interleave(contenders(keys[alg], issuer, pools[alg]), config)
        section = f"verify {alg}" + (" (2048-bit)" if alg[:2] in ("RS", "PS") else "")
        raw = results["raw cryptography"]
        for name, result in results.items():
            row = Row.measured(section, name, result.spread.scaled(1e6), "µs",
                               ratio=result.median / raw.median, baseline="raw")
            if name == "raw cryptography":
                row.ratio, row.baseline, row.note = None, "", "the limit"
            rows.append(row)
        pyjwt, uncached = results["PyJWT jwt.decode"], results["TokenVerifier uncached"]
        cached = results["TokenVerifier cached"]
        # Python's own work per token, against PyJWT's: both minus the signature check.
        overhead = Row.measured(section, OVERHEAD_ROW, per_round(
            lambda r, m, p: (m - r) / (p - r) if p > r else math.inf, raw, uncached, pyjwt), "x",
            note="(uncached - raw) / (PyJWT - raw)")
        if alg in OVERHEAD_ALGORITHMS:
            overhead.at_most(OVERHEAD_TARGET, f"≤ {OVERHEAD_TARGET}")
        rows.append(overhead)
        rows.append(Row.measured(section, HIT_ROW, per_round(lambda c, p: c / p, cached, pyjwt),
                                 "x", note="cached / PyJWT").at_most(HIT_TARGET, f"≤ {HIT_TARGET}"))
        rows.append(Row.measured(section, "uncached: times faster than PyJWT",
                                 per_round(lambda p, m: p / m, pyjwt, uncached), "x"))
    return rows
