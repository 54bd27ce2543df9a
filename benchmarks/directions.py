"""Micro-benchmarks of the directions weighed for the hot path
(`python -m benchmarks.directions [--quick]`), each measured in isolation, interleaved with its
alternative on the same inputs (an 866-byte RS256 token with Scalekit claims):

- the verified-token cache keyed by the SHA-256 of the token, or by the token bytes themselves
  (a fresh bytes object per request, as sliced from the header, in a cache of 1,000 entries);
- admission on second sighting: what a flood of unique tokens costs per token with today's
  insert-and-evict, against a "seen once" filter that admits a token on its second request;
- the claims JSON: the strict standard-library parser against the `[speedups]` path (msgspec
  with the duplicate-name guard), and raw msgspec / orjson for reference;
- base64 of the payload and signature: `binascii` (strict mode) against pybase64.
"""

from __future__ import annotations

import argparse
import binascii
import hashlib
import sys
from collections.abc import Callable
from typing import Any

from m2m_guard._core import speedups as _speedups
from m2m_guard._core.encoding import _loads_strict, b64url_decode
from m2m_guard._core.token_cache import VerifiedTokenCache
from m2m_guard.local_issuer import SigningKey, scalekit_claims

from .harness import Config, interleave, per_round
from .report import Row, text_table, with_best

__all__ = ["run"]


def _repeat(call: Callable[[], Any]) -> Callable[[int], None]:
    def run(batch: int) -> None:
        for _ in range(batch):
            call()

    return run


def _section(name: str, contenders: dict[str, Callable[[], Any]], config: Config,
             baseline: str) -> list[Row]:
    results = interleave({key: _repeat(call) for key, call in contenders.items()}, config)
    base = results[baseline]
    rows = []
    for key, result in results.items():
        row = Row.measured(name, key, result.spread.scaled(1e6), "µs")
        if key != baseline:
            ratio = per_round(lambda b, r: r / b, base, result)
            row.ratio, row.baseline = ratio.median, "today"
            row.note = f"saves {(base.median - result.median) * 1e6:.2f} µs"
        else:
            row.note = "today"
        rows.append(row)
    return rows


def _cache_key(token: str, config: Config) -> list[Row]:
    header = b"Bearer " + token.encode("ascii")
    others = [hashlib.sha256(str(i).encode()).hexdigest() * 14 for i in range(999)]
    by_digest = {hashlib.sha256(o.encode()).digest(): i for i, o in enumerate(others)}
    by_digest[hashlib.sha256(token.encode()).digest()] = -1
    by_bytes = {o.encode(): i for i, o in enumerate(others)}
    by_bytes[token.encode()] = -1
    sha256 = hashlib.sha256
    return _section("cache key on a hit (1,000 entries)", {
        "SHA-256 digest, then lookup": lambda: by_digest.get(sha256(header[7:]).digest()),
        "token bytes as the key": lambda: by_bytes.get(header[7:]),
        "token bytes, from a str token": lambda: by_bytes.get(
            (token + "")[:].encode("ascii")),
    }, config, "SHA-256 digest, then lookup")


def _admission(key: SigningKey, config: Config) -> list[Row]:
    base = key.sign(scalekit_claims("https://issuer.example")).encode()[:-12]
    cache: VerifiedTokenCache[object] = VerifiedTokenCache(1000)
    counter = [0]

    def fresh() -> bytes:  # a token never seen before (same size as a real one)
        counter[0] += 1
        return base + b"%012d" % counter[0]

    for _ in range(1000):
        token = fresh()
        cache.put(token, object())
    value = object()

    def insert_and_evict() -> None:  # today: every verified token goes in, the oldest goes out
        token = fresh()
        cache.put(token, value)

    seen: dict[int, None] = {}

    def seen_filter() -> None:  # second sighting: remember a hash; insert only when seen again
        token = fresh()
        mark = hash(token)
        if mark in seen:
            cache.put(token, value)
            return
        if len(seen) >= 4096:
            seen.clear()
        seen[mark] = None

    def token_only() -> None:  # what both pay for making the token: the floor
        fresh()

    return _section("a flood of unique tokens: per-token cache work", {
        "insert and evict (today)": insert_and_evict,
        "admission on second sighting": seen_filter,
        "making the token alone (floor)": token_only,
    }, config, "insert and evict (today)")


def _json(payload: bytes, config: Config) -> list[Row]:
    contenders: dict[str, Callable[[], Any]] = {"strict standard library (today)":
                                                lambda: _loads_strict(payload)}
    if _speedups.ACTIVE["json"] is not None:
        fast = _speedups.loads_fast
        contenders["[speedups] msgspec with the duplicate-name guard"] = lambda: fast(payload)
    try:
        import msgspec

        decode = msgspec.json.Decoder().decode
        contenders["raw msgspec (no guard, for reference)"] = lambda: decode(payload)
    except ImportError:
        pass
    try:
        import orjson

        contenders["raw orjson (no guard, for reference)"] = lambda: orjson.loads(payload)
    except ImportError:
        pass
    return _section("claims JSON (Scalekit claims)", contenders, config,
                    "strict standard library (today)")


def _base64(token: str, config: Config) -> list[Row]:
    _, payload, signature = token.split(".")
    table = bytes.maketrans(b"-_", b"+/")
    pad = (b"", b"", b"==", b"=")
    std_payload = payload.encode().translate(table) + pad[len(payload) % 4]
    std_signature = signature.encode().translate(table) + pad[len(signature) % 4]
    a2b = binascii.a2b_base64
    contenders: dict[str, Callable[[], Any]] = {
        "binascii strict (today)": lambda: (a2b(std_payload, strict_mode=True),
                                            a2b(std_signature, strict_mode=True)),
    }
    fast = _speedups.b64decode
    if fast is not None:
        contenders["pybase64 (validate)"] = lambda: (fast(std_payload), fast(std_signature))
    return _section("base64 of payload and signature", contenders, config,
                    "binascii strict (today)")


def run(config: Config) -> list[Row]:
    key = SigningKey.generate("RS256")
    token = key.sign(scalekit_claims("https://issuer.example"))
    payload = b64url_decode(token.split(".")[1])
    return (_cache_key(token, config) + _admission(key, config) + _json(payload, config)
            + _base64(token, config))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    config = Config(rounds=5, batch=500) if args.quick else Config(rounds=21, batch=5000)
    print(text_table(with_best(run(config))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
