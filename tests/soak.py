"""Soak: a bounded load of mixed traffic against a real server while the issuer rotates keys,
fails and recovers. Run it with ``python -m tests.soak`` (``make soak``); it prints its figures
and exits non-zero on any violation.

What runs, all on 127.0.0.1: a `KeySetServer` (the issuer), the example Starlette app
(`examples.starlette_app.create_app`) served by uvicorn, and `--clients` threads, each with its own
keep-alive `httpx.Client`, sending requests whose expected status is known before they are sent:
valid tokens (200, 202), a valid token without the route's scope (403), bad signature, expired,
wrong audience, garbage, unknown kid, a malformed bearer credential (401), a token in the query
string (400), no token (401), the public
path (200), and tokens of the rotating key (200 once it is published and settled, 401 once it
is retired and settled; sent only inside those windows).

The issuer follows a fixed cycle (`Schedule`): at the start of each cycle a new key is published
and the previous one retired; later in the cycle the issuer fails (500, black hole, connection
refused, slow drip, flapping, 429, non-JSON, 10 MB body, in turn) and then recovers.

Violations: any 500, any answer other than the expected one, a request slower than the bound,
RSS growth past `--max-rss-growth-mb` after the warm-up part, or more key-set fetches than the
TTL, backoff and cooldown allow.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import random
import resource
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from examples.starlette_app import create_app
from m2m_guard import GuardSettings
from m2m_guard.local_issuer import KeySetServer, SigningKey

from .servers import uvicorn_server

AUDIENCE = "deployment-api"
FAULTS = ("500", "blackhole", "refused", "drip", "flap", "429", "garbage", "huge")


@dataclass(frozen=True)
class Schedule:
    """One issuer cycle, in seconds from the cycle's start. Keys of the rotation are only used
    from `settle` on, by which time the guard must have seen the change (one TTL, one backoff,
    one timeout and a margin); `settle <= outage_start` keeps that true through the outage."""

    cycle: float
    outage_start: float
    outage_end: float
    ttl: float
    cooldown: float
    http_timeout: float

    @property
    def settle(self) -> float:
        return self.ttl + self.cooldown + self.http_timeout + 0.5

    def check(self) -> None:
        assert self.settle <= self.outage_start < self.outage_end < self.cycle, self


FULL = Schedule(cycle=12.0, outage_start=5.0, outage_end=9.0, ttl=2.0, cooldown=1.0,
                http_timeout=0.5)
SHORT = Schedule(cycle=5.0, outage_start=3.0, outage_end=4.2, ttl=1.0, cooldown=1.0,
                 http_timeout=0.5)


def rss_bytes() -> int:
    """Resident set size now (Linux /proc), else the peak from getrusage."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # pragma: no cover - not Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclass
class Report:
    duration: float = 0.0
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    classes: Counter[str] = field(default_factory=Counter)
    wrong: list[str] = field(default_factory=list)
    server_errors: int = 0
    transport_errors: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    keyset_fetches: int = 0
    discovery_fetches: int = 0
    fetch_budget: int = 0
    rss_samples: list[int] = field(default_factory=list)
    rss_growth: int = 0
    faults_played: list[str] = field(default_factory=list)
    rotations: int = 0
    violations: list[str] = field(default_factory=list)

    def figures(self) -> dict[str, Any]:
        lat = sorted(self.latencies) or [0.0]
        return {
            "duration_s": round(self.duration, 1),
            "requests": self.requests,
            "requests_per_s": round(self.requests / max(self.duration, 1e-9)),
            "statuses": dict(sorted(self.statuses.items())),
            "by_class": dict(sorted(self.classes.items())),
            "wrong_decisions": len(self.wrong),
            "http_500": self.server_errors,
            "transport_errors": len(self.transport_errors),
            "latency_p50_ms": round(lat[len(lat) // 2] * 1000, 1),
            "latency_p99_ms": round(lat[int(len(lat) * 0.99)] * 1000, 1),
            "latency_max_ms": round(lat[-1] * 1000, 1),
            "keyset_fetches": self.keyset_fetches,
            "discovery_fetches": self.discovery_fetches,
            "fetch_budget": self.fetch_budget,
            "rss_mb_first_last_max": [round(self.rss_samples[0] / 2**20, 1),
                                      round(self.rss_samples[-1] / 2**20, 1),
                                      round(max(self.rss_samples) / 2**20, 1)]
            if self.rss_samples else [],
            "rss_growth_mb": round(self.rss_growth / 2**20, 1),
            "key_rotations": self.rotations,
            "faults_played": self.faults_played,
            "violations": self.violations,
        }


class Traffic:
    """The requests and their expected answers, with the rotation state the schedule implies."""

    def __init__(self, issuer: KeySetServer, stable: SigningKey, stranger: SigningKey,
                 schedule: Schedule, started: float) -> None:
        self.issuer = issuer
        self.schedule = schedule
        self.started = started
        self.rotating: list[SigningKey] = []  # index n: the key published at cycle n
        self.lock = threading.Lock()
        now = int(time.time())
        mint = issuer.mint
        self.valid = [mint(stable) for _ in range(500)]
        good = self.valid[0]
        head, payload, _ = good.split(".")
        other_sig = mint(stable).split(".")[2]
        self.fixed: list[tuple[str, str, str, dict[str, str], int]] = [
            ("valid", "GET", "/deployments", {}, 200),
            ("deploy", "POST", "/deployments", {}, 202),
            ("forbidden", "GET", "/admin/audit", {}, 403),
            ("bad_signature", "GET", "/deployments",
             {"authorization": f"Bearer {head}.{payload}.{other_sig}"}, 401),
            ("expired", "GET", "/deployments",
             {"authorization": "Bearer " + mint(stable, exp=now - 3600, iat=now - 7200,
                                                nbf=now - 7200)}, 401),
            ("wrong_audience", "GET", "/deployments",
             {"authorization": "Bearer " + mint(stable, aud=["another-api"])}, 401),
            ("garbage", "GET", "/deployments", {"authorization": "Bearer not.a.jwt"}, 401),
            ("unknown_kid", "GET", "/deployments",
             {"authorization": "Bearer " + mint(stranger)}, 401),
            ("malformed", "GET", "/deployments", {"authorization": "Bearer two tokens"}, 401),
            ("token_in_query", "GET", "/deployments?access_token=x", {}, 400),
            ("missing", "GET", "/deployments", {}, 401),
            ("public", "GET", "/health", {}, 200),
        ]
        self.tokens: dict[str, str] = {}

    def key_token(self, key: SigningKey) -> str:
        with self.lock:
            token = self.tokens.get(key.kid)
            if token is None:
                token = self.tokens[key.kid] = self.issuer.mint(key)
            return token

    def pick(self, rng: random.Random) -> tuple[str, str, str, dict[str, str], int]:
        """A request and its expected status, given where the schedule is now."""
        elapsed = time.monotonic() - self.started
        cycle, into = divmod(elapsed, self.schedule.cycle)
        n = int(cycle)
        if into >= self.schedule.settle and rng.random() < 0.15:
            with self.lock:
                known = len(self.rotating) > n
                current = self.rotating[n] if known else None
                previous = self.rotating[n - 1] if known and n >= 1 else None
            if current is not None and (previous is None or rng.random() < 0.5):
                return ("rotated_in", "GET", "/deployments",
                        {"authorization": "Bearer " + self.key_token(current)}, 200)
            if previous is not None:
                return ("retired", "GET", "/deployments",
                        {"authorization": "Bearer " + self.key_token(previous)}, 401)
        name, method, path, headers, expected = self.fixed[rng.randrange(len(self.fixed))]
        if name in ("valid", "deploy", "forbidden"):
            headers = {"authorization": "Bearer " + rng.choice(self.valid)}
        return name, method, path, headers, expected


def run_soak(duration: float, *, clients: int = 6, pause: float = 0.002,
             schedule: Schedule = FULL, seed: int = 6, max_rss_growth_mb: float = 64.0,
             log: Callable[[str], None] = print) -> Report:
    """Run the soak for `duration` seconds and return its `Report` (violations included)."""
    schedule.check()
    report = Report()
    stable = SigningKey.generate("ES256", kid="snk_stable")
    stranger = SigningKey.generate("ES256", kid="snk_stranger")
    first = SigningKey.generate("ES256", kid="snk_rotating_0")
    latency_bound = 2 * schedule.http_timeout + 3.0  # the guard's bound plus a loaded machine
    with KeySetServer([stable, first], max_age=None) as issuer:
        settings = GuardSettings(
            issuer=issuer.url, audience=AUDIENCE, http_timeout=schedule.http_timeout,
            jwks_cache_ttl=schedule.ttl, jwks_refetch_cooldown=schedule.cooldown,
            public_paths=("/health",))
        app = create_app(settings)
        with uvicorn_server(app) as port:
            started = time.monotonic()
            traffic = Traffic(issuer, stable, stranger, schedule, started)
            with traffic.lock:
                traffic.rotating.append(first)  # cycle 0's key is already published
            deadline = started + duration
            stop = threading.Event()
            lock = threading.Lock()

            def client_loop(index: int) -> None:
                rng = random.Random(seed * 1000 + index)
                with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30.0) as client:
                    while time.monotonic() < deadline and not stop.is_set():
                        name, method, path, headers, expected = traffic.pick(rng)
                        begun = time.monotonic()
                        try:
                            if method == "POST":
                                response = client.post(path, headers=headers,
                                                       json={"service": "billing",
                                                             "version": "1.5.0"})
                            else:
                                response = client.get(path, headers=headers)
                        except httpx.HTTPError as exc:
                            with lock:
                                report.transport_errors.append(f"{name}: {exc!r}")
                            continue
                        took = time.monotonic() - begun
                        with lock:
                            report.requests += 1
                            report.classes[name] += 1
                            report.statuses[response.status_code] += 1
                            report.latencies.append(took)
                            if response.status_code >= 500 and response.status_code != 503:
                                report.server_errors += 1
                            if response.status_code != expected:
                                report.wrong.append(
                                    f"{name}: expected {expected}, got {response.status_code} "
                                    f"at {begun - started:.2f}s")
                        if pause:
                            time.sleep(pause)

            threads = [threading.Thread(target=client_loop, args=(i,), daemon=True)
                       for i in range(clients)]
            for thread in threads:
                thread.start()
            faults = itertools.cycle(FAULTS)
            cycle_no = 0
            next_sample = started
            try:
                while time.monotonic() < deadline:
                    cycle_start = started + cycle_no * schedule.cycle
                    if cycle_no > 0:  # a new key in, the previous one out
                        key = SigningKey.generate("ES256", kid=f"snk_rotating_{cycle_no}")
                        issuer.publish(stable, key)
                        with traffic.lock:
                            traffic.rotating.append(key)
                        report.rotations += 1
                    fault = next(faults)
                    outage_started = False
                    for at, action in ((schedule.outage_start, "fail"),
                                       (schedule.outage_end, "recover"),
                                       (schedule.cycle, "next")):
                        while time.monotonic() < min(cycle_start + at, deadline):
                            if time.monotonic() >= next_sample:
                                report.rss_samples.append(rss_bytes())
                                next_sample += max(1.0, duration / 60)
                            time.sleep(0.05)
                        if time.monotonic() >= deadline and action != "recover":
                            break
                        if action == "fail":
                            outage_started = True
                            report.faults_played.append(fault)
                            if fault == "refused":
                                issuer.stop()
                            else:
                                issuer.set_fault(fault, delay=0.05)
                                if fault in ("flap", "garbage", "huge"):
                                    issuer.fault_paths = {issuer.jwks_path}
                        elif action == "recover" and outage_started:
                            issuer.set_fault(None)
                            issuer.fault_paths = None
                            issuer.start()
                    cycle_no += 1
            finally:
                stop.set()
                issuer.set_fault(None)
                issuer.fault_paths = None
                issuer.start()
                for thread in threads:
                    thread.join(30)
            report.duration = time.monotonic() - started
            report.rss_samples.append(rss_bytes())
            report.keyset_fetches = issuer.requests[issuer.jwks_path]
            report.discovery_fetches = sum(issuer.requests[p] for p in issuer.discovery_paths)

    # -- verdicts ----------------------------------------------------------------------------
    d = report.duration
    # refreshes every 0.9 TTL, one retry per backoff (at least 1 s) while failing, one
    # unknown-kid refetch per cooldown, plus the warm-up and slack for the cycle edges
    report.fetch_budget = int(d / (0.9 * schedule.ttl) + d / 1.0 + d / schedule.cooldown) + 5
    baseline_index = max(0, len(report.rss_samples) // 5)
    if report.rss_samples:
        report.rss_growth = report.rss_samples[-1] - report.rss_samples[baseline_index]
    v = report.violations
    if report.server_errors:
        v.append(f"{report.server_errors} answers were 5xx other than 503")
    if report.wrong:
        v.append(f"{len(report.wrong)} wrong decisions, e.g. {report.wrong[:5]}")
    if report.transport_errors:
        v.append(f"{len(report.transport_errors)} transport errors, e.g. "
                 f"{report.transport_errors[:3]}")
    if report.latencies and max(report.latencies) > latency_bound:
        v.append(f"slowest request {max(report.latencies):.2f}s > bound {latency_bound:.1f}s")
    if report.keyset_fetches > report.fetch_budget:
        v.append(f"{report.keyset_fetches} key-set fetches > budget {report.fetch_budget}")
    if report.rss_growth > max_rss_growth_mb * 2**20:
        v.append(f"RSS grew {report.rss_growth / 2**20:.1f} MB > {max_rss_growth_mb} MB")
    if report.requests == 0:
        v.append("no request was answered")
    log(json.dumps(report.figures(), indent=2))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.soak", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=120.0,
                        help="seconds of traffic (default 120, at most 1800)")
    parser.add_argument("--clients", type=int, default=6, help="client threads (default 6)")
    parser.add_argument("--pause", type=float, default=0.002,
                        help="pause between a client's requests, seconds (default 0.002)")
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--max-rss-growth-mb", type=float, default=64.0)
    parser.add_argument("--verbose", action="store_true",
                        help="show the guard's warnings (every failed key-set fetch)")
    args = parser.parse_args(argv)
    if not args.verbose:  # the outages are on purpose: their warnings would drown the figures
        logging.getLogger("m2m_guard").setLevel(logging.ERROR)
    if not 1 <= args.duration <= 1800 or not 1 <= args.clients <= 64:
        parser.error("--duration must be within [1, 1800] s and --clients within [1, 64]")
    schedule = FULL if args.duration >= FULL.cycle else SHORT
    report = run_soak(args.duration, clients=args.clients, pause=args.pause, schedule=schedule,
                      seed=args.seed, max_rss_growth_mb=args.max_rss_growth_mb)
    if report.violations:
        print("SOAK FAILED:", *report.violations, sep="\n  ", file=sys.stderr)
        return 1
    print(f"soak passed: {report.requests} requests in {report.duration:.0f} s, "
          f"0 wrong decisions, 0 server errors, {report.keyset_fetches} key-set fetches "
          f"(budget {report.fetch_budget})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
