"""Interleaved timing: every contender runs once per round, in a rotating order, on the same
inputs; the result of a contender is the median of its per-round figures, and its spread the
interquartile range of those figures.

Interleaving matters on a shared machine: a slow patch (another process, a frequency change)
then hits every contender alike instead of whichever happened to run at that moment. In-process
figures are the measuring thread's CPU time (`time.thread_time`), not wall time: on a machine
shared with other work, a batch preempted halfway would otherwise be charged for the time other
processes ran (seen: a load average of 10 on 2 cores made wall time 3x the CPU time). What
remains (caches, frequency) is what the spread shows. For the same
reason a ratio between two contenders is taken round by round (both figures of a round were
measured moments apart) and only then summarised: `Spread.of(ratios)`.
"""

from __future__ import annotations

import statistics
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from time import thread_time as _clock

__all__ = ["Config", "Result", "Spread", "interleave", "interleave_async", "per_round"]


@dataclass(frozen=True)
class Config:
    """How much to measure: `rounds` per contender, each `batch` calls (or `seconds` over HTTP)."""

    rounds: int = 15
    batch: int = 400
    http_seconds: float = 3.0
    http_rounds: int = 2
    quick: bool = False
    # Rounds of the uvicorn --workers comparison (each round: 1 worker, then 2, or the reverse).
    worker_rounds: int = 5
    worker_seconds: float = 2.0

    @classmethod
    def quick_run(cls) -> Config:
        return cls(rounds=3, batch=30, http_seconds=1.0, http_rounds=1, quick=True,
                   worker_rounds=2, worker_seconds=1.0)

    @classmethod
    def tiny(cls) -> Config:
        """For the test suite's smoke run: every row, no meaningful figures."""
        return cls(rounds=1, batch=2, http_seconds=0.5, http_rounds=1, quick=True,
                   worker_rounds=1, worker_seconds=0.3)


@dataclass(frozen=True)
class Spread:
    """The median of per-round figures and their interquartile range (`low`, `high`); with
    fewer than 4 rounds the range is min-max."""

    median: float
    low: float
    high: float
    rounds: int
    best: float = float("nan")  # the fastest round (for micro-benchmarks on a busy machine)

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        if not values:
            raise ValueError("no rounds measured")
        ordered = sorted(values)
        if len(ordered) < 4:
            low, high = ordered[0], ordered[-1]
        else:
            low, _, high = statistics.quantiles(ordered, n=4, method="inclusive")
        return cls(statistics.median(ordered), low, high, len(ordered), ordered[0])

    def scaled(self, factor: float) -> Spread:
        return Spread(self.median * factor, self.low * factor, self.high * factor, self.rounds,
                      self.best * factor)

    def contains(self, limit: float) -> bool:
        """True when `limit` lies inside the spread: the verdict could flip from run to run."""
        return self.low <= limit <= self.high


@dataclass
class Result:
    """Per-operation seconds of each round (index i: round i, for every contender alike)."""

    name: str
    samples: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def spread(self) -> Spread:
        return Spread.of(self.samples)


def per_round(combine: Callable[..., float], *results: Result) -> Spread:
    """`combine(a_i, b_i, ...)` of the contenders' figures of each round i, summarised."""
    rounds = zip(*(result.samples for result in results), strict=True)
    return Spread.of([combine(*figures) for figures in rounds])


def interleave(contenders: dict[str, Callable[[int], None]], config: Config) -> dict[str, Result]:
    """Run each `contender(batch)` (which makes `batch` calls) once per round; per-call seconds."""
    results = {name: Result(name) for name in contenders}
    names = list(contenders)
    for name in names:  # warm every path (caches, lazy imports) before anything is timed
        contenders[name](max(1, config.batch // 10))
    for round_no in range(config.rounds):
        shift = round_no % len(names)
        for name in names[shift:] + names[:shift]:
            start = _clock()
            contenders[name](config.batch)
            results[name].samples.append((_clock() - start) / config.batch)
    return results


async def interleave_async(contenders: dict[str, Callable[[int], Awaitable[None]]],
                           config: Config, *,
                           clock: Callable[[], float] = _clock) -> dict[str, Result]:
    """`interleave` for coroutine contenders, all on the running event loop; `clock` is the
    thread's CPU time unless told (wall time for a contender that waits on a socket)."""
    results = {name: Result(name) for name in contenders}
    names = list(contenders)
    for name in names:
        await contenders[name](max(1, config.batch // 10))
    for round_no in range(config.rounds):
        shift = round_no % len(names)
        for name in names[shift:] + names[:shift]:
            start = clock()
            await contenders[name](config.batch)
            results[name].samples.append((clock() - start) / config.batch)
    return results
