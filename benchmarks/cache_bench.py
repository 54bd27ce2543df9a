"""The verified-token cache's memory and bound, and a cold start under concurrency.

- Memory: the traced allocation (tracemalloc) of a verifier holding 10,000 verified tokens.
- Flood: many more distinct valid tokens than the cache holds; entries and bytes never pass the
  bound.
- Cold start: N concurrent requests through the ASGI middleware on an empty cache, against an
  issuer whose key set takes a while to arrive: one key-set fetch, and all done within one fetch
  time plus their verification (the same requests, as concurrent, with the keys already loaded).
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
import tracemalloc
from typing import Any

from m2m_guard import TokenVerifier
from m2m_guard._core.token_cache import MAX_TOTAL_BYTES
from m2m_guard.local_issuer import KeySetServer, SigningKey, scalekit_claims

from .apps import build_asgi, guard_settings
from .harness import Config
from .inprocess_bench import _headers, _receive, _scope, _Sink
from .report import Row


def run_memory(key: SigningKey, issuer: str, config: Config) -> list[Row]:
    count = 200 if config.batch < 10 else 2000 if config.quick else 10_000
    tokens = [key.sign(scalekit_claims(issuer)) for _ in range(count)]
    verifier = TokenVerifier(guard_settings(issuer, cache_size=count + 1))
    verifier.warm_up_sync()
    verifier.verify_sync(key.sign(scalekit_claims(issuer)))  # header and scope memos in place
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for token in tokens:
        verifier.verify_sync(token)
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    cache = verifier._cache
    assert cache is not None and len(cache) == count + 1
    per_10k = held / count * 10_000 / 1e6
    section = "verified-token cache"
    note = f"{key.alg} tokens, Scalekit claims; " + \
        ("measured" if count == 10_000 else f"scaled from {count:,}")
    rows = [Row(section, "memory of 10,000 cached tokens", per_10k, "MB", target="< 20 MB",
                met=per_10k < 20, note=note)]

    bound = max(10, count // 10)
    flood = TokenVerifier(guard_settings(issuer, cache_size=bound))
    flood.warm_up_sync()
    flood_cache = flood._cache
    assert flood_cache is not None
    most_entries = most_bytes = 0
    for token in tokens:
        flood.verify_sync(token)
        most_entries = max(most_entries, len(flood_cache))
        most_bytes = max(most_bytes, flood_cache.bytes)
    rows.append(Row(section, f"flood of {count:,} distinct tokens: most entries", most_entries,
                    "", target=f"≤ {bound:,} (the bound)", met=most_entries <= bound))
    rows.append(Row(section, "flood: most token bytes held", most_bytes, "B",
                    target=f"≤ {MAX_TOTAL_BYTES:,} B", met=most_bytes <= MAX_TOTAL_BYTES))
    return rows


def run_cold_start(key: SigningKey, config: Config, per_request_us: float) -> list[Row]:
    """`per_request_us`: the in-process cost of one request with a full verification (shown
    for reference). "Their verification" is measured: the same requests, just as concurrent,
    against a verifier whose key set is already loaded (task scheduling included)."""
    delay = 0.05 if config.batch < 10 else 0.25 if config.quick else 0.5
    count = 20 if config.batch < 10 else 200 if config.quick else 1000
    section = f"cold start: {count:,} concurrent requests"
    with KeySetServer([key]) as issuer:
        issuer.set_fault("slow", delay=delay)
        # One key-set fetch on its own, through the same async driver, to know what "one fetch
        # time" is here.
        fetch_time = asyncio.run(_one_fetch(issuer.url))
        signed = [key.sign(scalekit_claims(issuer.url)) for _ in range(count)]
        before = issuer.requests["/keys"]
        elapsed, statuses = asyncio.run(_concurrent(issuer.url, key, signed))
        fetches = issuer.requests["/keys"] - before
        verification = statistics.median(
            asyncio.run(_concurrent(issuer.url, key, signed, warm=True))[0] for _ in range(3))
    budget = fetch_time + verification
    ok = statuses == {200}
    return [
        Row(section, "key-set fetches", fetches, "", target="= 1", met=fetches == 1 and ok,
            note="" if ok else f"statuses {sorted(statuses)}"),
        Row(section, "time to answer all", elapsed, "s",
            target=f"≤ {budget:.3f} s (fetch {fetch_time:.3f} s + verification "
                   f"{verification:.3f} s)",
            met=elapsed <= budget and ok,
            note=f"verification: the same {count:,} concurrent requests, keys loaded "
                 f"({count * per_request_us / 1e6:.3f} s one after another)"),
    ]


async def _one_fetch(issuer: str) -> float:
    probe = TokenVerifier(guard_settings(issuer))
    started = time.perf_counter()
    await probe.warm_up()
    elapsed = time.perf_counter() - started
    await probe.aclose()
    return elapsed


async def _concurrent(issuer: str, key: SigningKey, tokens: list[str], *,
                      warm: bool = False) -> tuple[float, set[int]]:
    verifier = TokenVerifier(guard_settings(issuer))
    if warm:  # keys loaded first (outside the timing); the token cache stays empty
        await verifier.warm_up()
    app: Any = build_asgi("m2m-unique", issuer=issuer, key=None, alg=key.alg, verifier=verifier)
    statuses: set[int] = set()

    async def one(token: str) -> None:
        sink = _Sink()
        await app(_scope(_headers(token)), _receive, sink)
        statuses.add(sink.status)

    started = time.perf_counter()
    await asyncio.gather(*(one(token) for token in tokens))
    elapsed = time.perf_counter() - started
    await verifier.aclose()
    return elapsed, statuses
