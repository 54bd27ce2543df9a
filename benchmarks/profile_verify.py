"""Where the time of one verification goes: each stage of the pipeline timed on its own, on the
same token, interleaved round by round with the whole call (`python -m benchmarks.profile_verify`).

Two paths: a full verification (RS256, cache off, as "TokenVerifier uncached" in `make bench`)
and a cache hit (`verify_sync` on a token already verified). The stages are the verifier's own
steps called one by one; "the rest" is the whole call minus the sum of the stages (calls between
them, the exception frame, building the small tuples that carry a token through the pipeline).
A stage's figure includes one Python call of its own, so the sum slightly overstates.

A profiler (cProfile) was not used for this: its per-call overhead (~0.5 µs) is the size of the
stages measured here.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import math
import sys
from collections.abc import Callable
from typing import Any

from m2m_guard import TokenVerifier
from m2m_guard._core.encoding import loads_json
from m2m_guard._core.jws import check_signature, parse_compact
from m2m_guard.local_issuer import KeySetServer, SigningKey, scalekit_claims

from .apps import guard_settings
from .harness import Config, interleave, per_round
from .report import Row, text_table, with_best

__all__ = ["profile", "run"]

RAW = "signature: the raw cryptography check (inside the next)"


def _repeat(call: Callable[[], Any]) -> Callable[[int], None]:
    def run(batch: int) -> None:
        for _ in range(batch):
            call()

    return run


def profile(stages: dict[str, Callable[[], Any]], whole: Callable[[], Any], section: str,
            config: Config, *, inside: frozenset[str] = frozenset()) -> list[Row]:
    """Rows: each stage's µs, their sum, the whole call and the rest (whole - sum), with the
    spread of each across the interleaved rounds. Stages named in `inside` are part of another
    stage: shown, not added to the sum."""
    contenders = {name: _repeat(call) for name, call in stages.items()}
    contenders["whole call"] = _repeat(whole)
    results = interleave(contenders, config)
    whole_result = results.pop("whole call")
    rows = [Row.measured(section, name, result.spread.scaled(1e6), "µs",
                         ratio=result.median / whole_result.median, baseline="of the whole")
            for name, result in results.items()]
    parts = [result for name, result in results.items() if name not in inside]
    total = per_round(lambda *figures: sum(figures) * 1e6, *parts)
    rest = per_round(lambda w, *figures: (w - sum(figures)) * 1e6, whole_result, *parts)
    rows.append(Row.measured(section, "sum of the stages", total, "µs"))
    rows.append(Row.measured(section, "the whole call", whole_result.spread.scaled(1e6), "µs"))
    rest = dataclasses.replace(rest, best=math.nan)  # a fastest difference means nothing
    rows.append(Row.measured(section, "the rest (whole - stages)", rest, "µs",
                             note="calls, frames, tuples between the stages"))
    return rows


def _full_stages(verifier: TokenVerifier, token: str, raw: Callable[[], Any]
                 ) -> dict[str, Callable[[], Any]]:
    jws, claims, issuer = verifier._parse(token)
    key = verifier._keys.select(issuer, jws)
    claim_rules, wall = verifier._claims, verifier._wall
    access = verifier.verify_sync(token)
    read_scopes = verifier._read_scopes
    headers, rules = verifier._headers, verifier._header_rules
    max_bytes = verifier._max_token_bytes
    payload = jws.payload
    issuers = verifier._issuers
    from m2m_guard.token import AccessToken

    token_bytes = token.encode()
    return {
        "framing and base64 (parse_compact, header known)":
            lambda: parse_compact(token, max_bytes=max_bytes, header_cache=headers,
                                  header_rules=rules),
        "claims JSON (loads_json)": lambda: loads_json(payload),
        "issuer by iss": lambda: issuers.get(claims.get("iss")),
        "key selection (kid)": lambda: verifier._keys.select(issuer, jws),
        RAW: raw,
        "signature: check_signature (raw included)": lambda: check_signature(jws, key),  # type: ignore[arg-type]
        "claim rules (exp, nbf, iat, aud, types)": lambda: claim_rules.check(claims, wall()),
        "scopes (memoised reader)": lambda: read_scopes(claims),
        "AccessToken, with the fingerprint (SHA-256)": lambda: AccessToken.from_claims(
            claims, access.scopes, algorithm=jws.alg, key_id=jws.kid,
            fingerprint=hashlib.sha256(token_bytes).hexdigest()[:16]),
    }


def _hit_stages(verifier: TokenVerifier, token: str) -> dict[str, Callable[[], Any]]:
    verifier.verify_sync(token)
    cache = verifier.token_cache
    assert cache is not None
    raw = token.encode("utf-8", "surrogatepass")
    hit = verifier._hit
    return {
        "type and size checks": lambda: isinstance(token, str) and len(token) > 16384,
        "token to bytes": lambda: token.encode("utf-8", "surrogatepass"),
        "cache lookup by the token bytes (a fresh key: hashed)":
            lambda: cache.get(token.encode("utf-8", "surrogatepass")),
        "validity checks of the hit (_hit, lookup included)": lambda: hit(raw),
    }


def _asgi_stages(verifier: TokenVerifier, token: str
                 ) -> tuple[dict[str, Callable[[], Any]], Callable[[], Any]]:
    """The ASGI middleware's work on a cache hit, piece by piece, against the whole middleware
    around an app that only sends its two messages (so "the whole call" is the guard alone plus
    that app; the app alone is a stage too)."""
    import asyncio

    from m2m_guard._core.asgi_io import SendTracker
    from m2m_guard._core.context import reset_current, set_current
    from m2m_guard.asgi import M2MGuardMiddleware

    from .inprocess_bench import _headers, _receive, _scope

    start = {"type": "http.response.start", "status": 200, "headers": []}
    body = {"type": "http.response.body", "body": b"hello"}

    async def send(message: Any) -> None:
        return None

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(start)
        await send(body)

    verifier.verify_sync(token)
    guard = M2MGuardMiddleware(app, verifier=verifier)
    headers = _headers(token)
    found = headers[-1][1]
    gate, principals = guard.gate, guard._principals
    access = verifier.cached_token(token)
    assert access is not None and principals is not None
    loop = asyncio.new_event_loop()

    def drive(coroutine: Any) -> None:
        try:
            coroutine.send(None)
        except StopIteration:
            pass

    def header_scan() -> Any:
        value = None
        for name, item in headers:
            if name == b"authorization":
                value = item
        return value

    def scope_keys() -> None:
        scope = {}
        scope["m2m_guard.token"] = access
        scope["m2m_guard.settings"] = guard.settings
        scope["m2m_guard.verifier"] = verifier
        scope["auth"], scope["user"] = principals(access, True)

    def context_and_tracker() -> None:
        marker = set_current(access)
        tracker = SendTracker(send)
        drive(tracker(start))
        drive(tracker(body))
        reset_current(marker)

    stages: dict[str, Callable[[], Any]] = {
        "the app alone (two messages sent)": lambda: drive(app(_scope(headers), _receive, send)),
        "finding the one Authorization header": header_scan,
        "cache lookup: Gate.cached_bearer (token bytes as key, hit checks)":
            lambda: gate.cached_bearer(found, b""),
        "scope keys and Starlette principals (memoised)": scope_keys,
        "current_token() set and reset, send tracked (2 messages)": context_and_tracker,
    }
    loop.close()
    return stages, lambda: drive(guard(_scope(headers), _receive, send))


def _raw(key: SigningKey, token: str) -> Callable[[], Any]:
    from .verify_bench import _raw_checker

    return _raw_checker(key, token)


def run(config: Config) -> list[Row]:
    key = SigningKey.generate("RS256")
    with KeySetServer([key]) as issuer:
        token = key.sign(scalekit_claims(issuer.url))
        full = TokenVerifier(guard_settings(issuer.url, cache_size=0))
        cached = TokenVerifier(guard_settings(issuer.url))
        full.warm_up_sync()
        cached.warm_up_sync()
        rows = profile(_full_stages(full, token, _raw(key, token)),
                       lambda: full.verify_sync(token), "full verification (RS256, cache off)",
                       config, inside=frozenset({RAW}))
        rows += profile(_hit_stages(cached, token), lambda: cached.verify_sync(token),
                        "cache hit (verify_sync)", config)
        stages, whole = _asgi_stages(cached, token)
        rows += profile(stages, whole, "ASGI middleware, cache hit (app: two sends)", config)
        full.close()
        cached.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    config = Config(rounds=5, batch=200) if args.quick else Config(rounds=15, batch=2000)
    print(text_table(with_best(run(config))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
