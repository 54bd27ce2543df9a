"""Interleaved timing: every contender runs once per round, in a rotating order, on the same
inputs; the result of a contender is the median of its per-round figures.

Interleaving matters on a shared machine: a slow patch (another process, a frequency change)
then hits every contender alike instead of whichever happened to run at that moment.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

__all__ = ["Config", "Result", "interleave", "interleave_async"]


@dataclass(frozen=True)
class Config:
    """How much to measure: `rounds` per contender, each `batch` calls (or `seconds` over HTTP)."""

    rounds: int = 15
    batch: int = 400
    http_seconds: float = 3.0
    http_rounds: int = 2
    quick: bool = False

    @classmethod
    def quick_run(cls) -> Config:
        return cls(rounds=3, batch=30, http_seconds=1.0, http_rounds=1, quick=True)

    @classmethod
    def tiny(cls) -> Config:
        """For the test suite's smoke run: every row, no meaningful figures."""
        return cls(rounds=1, batch=2, http_seconds=0.5, http_rounds=1, quick=True)


@dataclass
class Result:
    """Per-operation seconds of each round."""

    name: str
    samples: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)


def interleave(contenders: dict[str, Callable[[int], None]], config: Config) -> dict[str, Result]:
    """Run each `contender(batch)` (which makes `batch` calls) once per round; per-call seconds."""
    results = {name: Result(name) for name in contenders}
    names = list(contenders)
    for name in names:  # warm every path (caches, lazy imports) before anything is timed
        contenders[name](max(1, config.batch // 10))
    for round_no in range(config.rounds):
        shift = round_no % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            contenders[name](config.batch)
            results[name].samples.append((time.perf_counter() - start) / config.batch)
    return results


async def interleave_async(contenders: dict[str, Callable[[int], Awaitable[None]]],
                           config: Config) -> dict[str, Result]:
    """`interleave` for coroutine contenders, all on the running event loop."""
    results = {name: Result(name) for name in contenders}
    names = list(contenders)
    for name in names:
        await contenders[name](max(1, config.batch // 10))
    for round_no in range(config.rounds):
        shift = round_no % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            await contenders[name](config.batch)
            results[name].samples.append((time.perf_counter() - start) / config.batch)
    return results
