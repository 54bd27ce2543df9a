"""Key-set (JWKS) cache behaviour end to end: a real `KeySetServer` on loopback, a real
`TokenVerifier` (async and sync fronts), and a fake monotonic clock for the cache where time
matters (claims use the real wall clock, so minted tokens stay valid while the cache ages).

Latency bounds below are relative to the configured HTTP timeout or to a slow server's delay:
they state the contract ("nobody waits for a refetch longer than the timeout"), with margins
wide enough for a loaded two-core CI machine.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import anyio.to_thread
import pytest
from starlette.testclient import TestClient

from m2m_guard import GuardSettings, InvalidToken, IssuerUnavailable, TokenVerifier
from m2m_guard.local_issuer import KeySetServer, SigningKey

from .conftest import deployment_app
from .loop_clock import ProcessClock, Snapshot, held

OIDC = "/.well-known/openid-configuration"
KEYS = "/keys"

Verify = Callable[[str], Awaitable[Any]]


class FakeClock:
    """A monotonic clock that only moves when told to."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def set(self, now: float) -> None:
        self.now = now


def fetches(server: KeySetServer) -> tuple[int, int]:
    """(discovery requests, key-set requests) the server has answered so far."""
    return server.requests[OIDC], server.requests[KEYS]


def front(verifier: TokenVerifier, kind: str) -> Verify:
    """An awaitable verify: the async front itself, or the sync front on a worker thread."""
    if kind == "async":
        return verifier.verify

    async def call(token: str) -> Any:
        return await anyio.to_thread.run_sync(verifier.verify_sync, token)

    return call


async def refused(verify: Verify, token: str) -> InvalidToken:
    with pytest.raises(InvalidToken) as caught:
        await verify(token)
    assert caught.value.status_code == 401
    assert caught.value.error_code == "invalid_token"
    return caught.value


async def unavailable(verify: Verify, token: str) -> IssuerUnavailable:
    with pytest.raises(IssuerUnavailable) as caught:
        await verify(token)
    assert caught.value.status_code == 503
    assert caught.value.body_error == "temporarily_unavailable"
    return caught.value


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await anyio.sleep(0.01)


@pytest.fixture(scope="module")
def fast_keys() -> dict[str, SigningKey]:
    """Cheap-to-make keys for servers built inside tests."""
    return {name: SigningKey.generate(alg, kid=f"snk_{name}")
            for name, alg in (("old", "ES256"), ("keep", "EdDSA"), ("new", "ES256"),
                              ("other", "ES256"), ("stranger", "EdDSA"))}


@pytest.fixture
def other(fast_keys: dict[str, SigningKey]) -> Iterator[KeySetServer]:
    with KeySetServer([fast_keys["other"]]) as server:
        yield server


# -- single flight ---------------------------------------------------------------------------

@pytest.mark.anyio
async def test_200_concurrent_cold_verifications_fetch_once(issuer: KeySetServer,
                                                             settings: GuardSettings) -> None:
    tokens = [issuer.mint() for _ in range(200)]
    issuer.set_fault("slow", delay=0.2)  # every verification starts while the fetch runs
    verifier = TokenVerifier(settings)
    results: list[Any] = [None] * len(tokens)

    async def one(i: int) -> None:
        results[i] = await verifier.verify(tokens[i])

    async with anyio.create_task_group() as group:
        for i in range(len(tokens)):
            group.start_soon(one, i)
    assert fetches(issuer) == (1, 1)
    assert all(r.client_id == "m2morg_68315758685323697" for r in results)
    await verifier.aclose()


def test_16_threads_on_a_cold_cache_fetch_once(issuer: KeySetServer,
                                               settings: GuardSettings) -> None:
    tokens = [issuer.mint() for _ in range(16)]
    issuer.set_fault("slow", delay=0.2)
    verifier = TokenVerifier(settings)
    barrier = threading.Barrier(len(tokens))
    results: list[Any] = [None] * len(tokens)

    def one(i: int) -> None:
        barrier.wait(5)
        try:
            results[i] = verifier.verify_sync(tokens[i]).subject
        except Exception as exc:  # noqa: BLE001 - recorded and asserted below
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(tokens))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results == ["m2morg_68315758685323697"] * len(tokens)
    assert fetches(issuer) == (1, 1)
    verifier.close()


@pytest.mark.anyio
async def test_tasks_and_threads_together_fetch_once(issuer: KeySetServer,
                                                      settings: GuardSettings) -> None:
    tokens = [issuer.mint() for _ in range(60)]
    issuer.set_fault("slow", delay=0.3)
    verifier = TokenVerifier(settings)
    results: list[Any] = []

    async def on_loop(token: str) -> None:
        results.append((await verifier.verify(token)).subject)

    async def on_thread(token: str) -> None:
        results.append((await anyio.to_thread.run_sync(verifier.verify_sync, token)).subject)

    async with anyio.create_task_group() as group:
        for i, token in enumerate(tokens):
            # Threads first in half the cases, so both kinds get to own the fetch.
            group.start_soon(on_thread if i % 2 == 0 else on_loop, token)
    assert results == ["m2morg_68315758685323697"] * len(tokens)
    assert fetches(issuer) == (1, 1)
    await verifier.aclose()


# -- unknown kids ----------------------------------------------------------------------------

@pytest.mark.anyio
@pytest.mark.parametrize("fault", ["slow", "hang"])
async def test_1000_unknown_kids_refetch_once_and_never_wait_past_the_timeout(
        issuer: KeySetServer, make_settings: Callable[..., GuardSettings],
        signing_keys: dict[str, SigningKey], fault: str) -> None:
    timeout = 1.0
    verifier = TokenVerifier(make_settings(http_timeout=timeout, jwks_refetch_cooldown=30))
    await verifier.warm_up()
    assert fetches(issuer) == (1, 1)
    signer = signing_keys["EdDSA"]
    tokens = [issuer.mint(signer, headers={"kid": f"rotated-{i}"}) for i in range(1000)]
    known = issuer.mint()
    issuer.set_fault(fault, delay=0.4)  # the refetch is slow (0.4 s) or never answers
    latencies: list[float] = []
    reasons: set[str | None] = set()
    known_latency: list[float] = []

    async def unknown(token: str) -> None:
        start = time.perf_counter()
        with pytest.raises(InvalidToken) as caught:
            await verifier.verify(token)
        latencies.append(time.perf_counter() - start)
        reasons.add(caught.value.reason)
        assert caught.value.error_code == "invalid_token"

    # The bounds are in held time (`loop_clock`): a busy machine's time off the CPU left out.
    clock = ProcessClock()

    async def known_kid() -> None:
        await anyio.sleep(0.1)  # the refetch is in flight now
        start = clock.snapshot()
        await verifier.verify(known)
        known_latency.append(held(start, clock.snapshot()))

    began = clock.snapshot()
    async with anyio.create_task_group() as group:
        for token in tokens:
            group.start_soon(unknown, token)
        group.start_soon(known_kid)
    # Every request started at once: the last one answered bounds every latency. What the loop
    # waited (held time less its own CPU: parsing a thousand tokens, which a loaded machine
    # slows down) is the refetch timeout, never more; the work itself is bounded on its own.
    ended = clock.snapshot()
    worked = ended.cpu - began.cpu
    all_answered = held(began, ended) - worked
    issuer.set_fault(None)
    assert len(latencies) == 1000 and reasons == {"unknown_kid"}
    assert fetches(issuer) == (1, 2)  # one refetch for a thousand unknown kids
    assert all_answered < timeout + 0.5, (all_answered, worked, max(latencies))
    assert worked < 5.0, worked  # ~0.1 s on an idle machine: a runaway, not a busy machine
    # Requests with known keys never queue behind the refetch.
    assert known_latency and known_latency[0] < 0.2
    # Within the cooldown, more unknown kids are refused at once, without a request.
    late = issuer.mint(signer, headers={"kid": "rotated-late"})
    start = clock.snapshot()
    await refused(verifier.verify, late)
    assert held(start, clock.snapshot()) < 0.2
    assert fetches(issuer) == (1, 2)
    clock.close()
    await verifier.aclose()


def test_unknown_kids_from_threads_refetch_once(
        issuer: KeySetServer, make_settings: Callable[..., GuardSettings],
        signing_keys: dict[str, SigningKey]) -> None:
    timeout = 1.0
    verifier = TokenVerifier(make_settings(http_timeout=timeout))
    verifier.warm_up_sync()
    signer = signing_keys["EdDSA"]
    tokens = [issuer.mint(signer, headers={"kid": f"rotated-{i}"}) for i in range(160)]
    issuer.set_fault("hang")
    latencies: list[float] = []
    reasons: list[str | None] = []
    lock = threading.Lock()

    def worker(chunk: list[str]) -> None:
        for token in chunk:
            start = time.perf_counter()
            try:
                verifier.verify_sync(token)
                reason: str | None = "accepted?!"
            except InvalidToken as exc:
                reason = exc.reason
            with lock:
                latencies.append(time.perf_counter() - start)
                reasons.append(reason)

    threads = [threading.Thread(target=worker, args=(tokens[i::8],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    issuer.set_fault(None)
    assert reasons == ["unknown_kid"] * len(tokens)
    assert fetches(issuer) == (1, 2)
    assert max(latencies) < timeout + 0.5
    verifier.close()


# -- issuer down -----------------------------------------------------------------------------

def _go_down(server: KeySetServer, mode: str) -> None:
    if mode == "refused":
        server.stop()  # the port is really closed: connection refused
    else:
        server.set_fault(mode)


def _come_back(server: KeySetServer, mode: str) -> None:
    if mode == "refused":
        server.start()
    else:
        server.set_fault(None)


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["async", "sync"])
@pytest.mark.parametrize("mode", ["refused", "500", "garbage", "hang"])
async def test_known_keys_survive_an_outage_until_max_stale(
        issuer: KeySetServer, make_settings: Callable[..., GuardSettings], mode: str,
        kind: str) -> None:
    clock = FakeClock(100.0)
    verifier = TokenVerifier(make_settings(jwks_cache_ttl=1, jwks_max_stale=3,
                                           jwks_refetch_cooldown=1, http_timeout=0.5),
                             clock=clock)
    verify = front(verifier, kind)
    token = issuer.mint()
    assert (await verify(token)).subject == "m2morg_68315758685323697"
    assert fetches(issuer) == (1, 1)
    _go_down(issuer, mode)
    try:
        clock.set(101.5)  # expired: this request waits for a refresh, which fails
        assert (await verify(token)).subject == "m2morg_68315758685323697"
        health = verifier.health()["issuers"][issuer.url]
        assert health["status"] == "stale" and health["usable"] is True
        assert health["last_error"]
        clock.set(103.9)  # just before expiry + max_stale (101 + 3): still served
        assert (await verify(token)).subject == "m2morg_68315758685323697"
        clock.set(104.1)
        error = await unavailable(verify, token)
        assert error.retry_after == 1  # backoff capped by the 1 s cooldown
        assert verifier.health()["ready"] is False
    finally:
        _come_back(issuer, mode)
    clock.set(110.0)  # once the issuer is back, the next request loads the set again
    assert (await verify(token)).subject == "m2morg_68315758685323697"
    assert verifier.health()["ready"] is True
    await anyio.to_thread.run_sync(verifier.close)
    await verifier.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_cold_cache_with_issuer_down_is_503_with_retry_after(
        issuer: KeySetServer, make_settings: Callable[..., GuardSettings], kind: str) -> None:
    clock = FakeClock(100.0)
    verifier = TokenVerifier(make_settings(http_timeout=0.5), clock=clock)
    verify = front(verifier, kind)
    token = issuer.mint()
    issuer.set_fault("500")
    error = await unavailable(verify, token)
    assert error.retry_after == 1  # first failure: 1 s backoff
    assert fetches(issuer) == (1, 0)  # discovery answered 500
    # During the backoff the answer is immediate and costs the issuer nothing.
    clock.set(100.5)
    start = time.perf_counter()
    error = await unavailable(verify, token)
    assert time.perf_counter() - start < 0.2
    assert error.retry_after == 1
    assert fetches(issuer) == (1, 0)
    clock.set(101.0)  # backoff over: one more attempt, then 2 s
    error = await unavailable(verify, token)
    assert error.retry_after == 2
    assert fetches(issuer) == (2, 0)
    issuer.set_fault(None)
    clock.set(103.0)
    assert (await verify(token)).subject == "m2morg_68315758685323697"


def test_cold_and_down_through_starlette(issuer: KeySetServer,
                                         settings: GuardSettings) -> None:
    token = issuer.mint()
    issuer.stop()
    verifier = TokenVerifier(settings, clock=FakeClock(100.0))
    app = deployment_app(settings, verifier=verifier)
    with TestClient(app) as client:  # startup warm-up fails: logged, not fatal
        response = client.get("/deployments", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert "www-authenticate" not in response.headers
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == {"error", "error_description"}
    assert body["error"] == "temporarily_unavailable"
    assert body["error_description"] == \
        "The token issuer cannot be reached and no keys are cached."


# -- rotation --------------------------------------------------------------------------------

@contextmanager
def rotation_rig(keys: dict[str, SigningKey]
                 ) -> Iterator[tuple[KeySetServer, FakeClock, TokenVerifier]]:
    """A server publishing the "old" and "keep" keys and a verifier on a fake clock (TTL 1 s,
    refetch cooldown 5 s), for the rotation tests."""
    with KeySetServer([keys["old"], keys["keep"]]) as server:
        clock = FakeClock(100.0)
        yield server, clock, TokenVerifier(
            GuardSettings(issuer=server.url, audience="deployment-api", jwks_cache_ttl=1,
                          jwks_refetch_cooldown=5, http_timeout=2), clock=clock)


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_removed_key_stops_verifying_after_the_next_refresh(
        fast_keys: dict[str, SigningKey], kind: str) -> None:
    with rotation_rig(fast_keys) as (server, clock, verifier):
        verify = front(verifier, kind)
        old_token = server.mint(fast_keys["old"])
        keep_token = server.mint(fast_keys["keep"])
        assert (await verify(old_token)).key_id == "snk_old"
        assert (await verify(keep_token)).key_id == "snk_keep"
        server.publish(fast_keys["keep"])
        clock.set(100.5)  # the set is fresh: the removal is not known yet
        assert (await verify(old_token)).key_id == "snk_old"
        assert fetches(server) == (1, 1)
        clock.set(101.1)  # expired: the next request refreshes
        assert (await verify(keep_token)).key_id == "snk_keep"
        assert fetches(server) == (1, 2)
        error = await refused(verify, old_token)
        assert error.reason == "unknown_kid"
        assert fetches(server) == (1, 3)  # the unknown kid's own (single) refetch
        clock.set(101.2)
        error = await refused(verify, old_token)
        assert error.reason == "unknown_kid"
        assert fetches(server) == (1, 3)  # remembered: no more requests
        await anyio.to_thread.run_sync(verifier.close)


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_cached_token_stops_verifying_once_its_key_left_the_set(
        fast_keys: dict[str, SigningKey], kind: str) -> None:
    """A verified-token cache hit re-checks that its key is still in the current set."""
    with rotation_rig(fast_keys) as (server, clock, verifier):
        verify = front(verifier, kind)
        old_token = server.mint(fast_keys["old"])
        keep_token = server.mint(fast_keys["keep"])
        assert (await verify(old_token)).key_id == "snk_old"  # now in the token cache
        assert (await verify(keep_token)).key_id == "snk_keep"
        server.publish(fast_keys["keep"], fast_keys["new"])
        clock.set(100.2)
        assert (await verify(old_token)).key_id == "snk_old"
        # A rotated-in key verifies on first sight; its refetch also drops snk_old.
        new = await verify(server.mint(fast_keys["new"]))
        assert new.key_id == "snk_new"
        assert fetches(server) == (1, 2)
        clock.set(100.3)  # the set is fresh and the token is cached, but its key is gone
        error = await refused(verify, old_token)
        assert error.reason == "unknown_kid"
        assert (await verify(keep_token)).key_id == "snk_keep"
        assert fetches(server) == (1, 2)
        await anyio.to_thread.run_sync(verifier.close)


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_rotated_in_key_verifies_on_first_sight(
        issuer: KeySetServer, settings: GuardSettings, signing_keys: dict[str, SigningKey],
        fast_keys: dict[str, SigningKey], kind: str) -> None:
    verifier = TokenVerifier(settings)
    verify = front(verifier, kind)
    assert (await verify(issuer.mint())).key_id == "snk_rs256"
    issuer.publish(*signing_keys.values(), fast_keys["new"])
    start = time.perf_counter()
    assert (await verify(issuer.mint(fast_keys["new"]))).key_id == "snk_new"
    assert time.perf_counter() - start < settings.http_timeout
    assert fetches(issuer) == (1, 2)
    await anyio.to_thread.run_sync(verifier.close)


@pytest.mark.anyio
async def test_duplicate_kids_are_refused_as_ambiguous(issuer: KeySetServer,
                                                       settings: GuardSettings) -> None:
    twin = SigningKey.generate("RS256", kid="snk_rs256")
    issuer.extra_jwks.append(twin.public_jwk())
    verifier = TokenVerifier(settings)
    for signer in (None, twin):
        error = await refused(verifier.verify, issuer.mint(signer))
        assert error.reason == "ambiguous_key"
    # The alg tells keys of the same kid apart when only one of them accepts it.
    issuer.extra_jwks[:] = [SigningKey.generate("ES256", kid="snk_rs256").public_jwk()]
    fresh = TokenVerifier(settings)
    assert (await fresh.verify(issuer.mint())).key_id == "snk_rs256"


# -- Cache-Control ---------------------------------------------------------------------------

@pytest.mark.parametrize(("max_age", "ttl"), [
    (5, 60.0), (120, 120.0), (10**9, 86400.0), (None, 600.0),
])
def test_cache_control_max_age_is_honoured_within_its_clamp(
        issuer: KeySetServer, settings: GuardSettings, max_age: int | None,
        ttl: float) -> None:
    issuer.max_age = max_age
    clock = FakeClock(1000.0)
    verifier = TokenVerifier(settings, clock=clock)
    assert verifier.verify_sync(issuer.mint()).subject
    assert fetches(issuer) == (1, 1)
    assert verifier.health()["issuers"][issuer.url]["ttl"] == ttl
    lead = min(ttl / 10, 60.0)  # refresh-ahead window
    clock.set(1000.0 + ttl - lead - 0.5)
    assert verifier.verify_sync(issuer.mint()).subject
    assert fetches(issuer) == (1, 1)  # not before the clamped TTL (minus refresh-ahead)
    clock.set(1000.0 + ttl + 0.5)
    assert verifier.verify_sync(issuer.mint()).subject
    assert fetches(issuer) == (1, 2)  # after it, the set is fetched again


def test_configured_ttl_ignores_max_age(issuer: KeySetServer,
                                        make_settings: Callable[..., GuardSettings]) -> None:
    issuer.max_age = 3600
    clock = FakeClock(1000.0)
    verifier = TokenVerifier(make_settings(jwks_cache_ttl=1), clock=clock)
    verifier.verify_sync(issuer.mint())
    clock.set(1000.85)
    verifier.verify_sync(issuer.mint())
    assert fetches(issuer) == (1, 1)
    clock.set(1001.05)
    verifier.verify_sync(issuer.mint())
    assert fetches(issuer) == (1, 2)


# -- background refresh and the event loop ---------------------------------------------------

@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_refresh_ahead_happens_in_the_background(
        issuer: KeySetServer, make_settings: Callable[..., GuardSettings], kind: str) -> None:
    clock = FakeClock(100.0)
    verifier = TokenVerifier(make_settings(jwks_cache_ttl=1), clock=clock)
    verify = front(verifier, kind)
    await verify(issuer.mint())
    issuer.set_fault("slow", delay=0.5)
    clock.set(100.95)  # inside the refresh-ahead window (last 10 % of the TTL)
    start = time.perf_counter()
    assert (await verify(issuer.mint())).subject == "m2morg_68315758685323697"
    assert time.perf_counter() - start < 0.25  # did not wait for the 0.5 s answer
    await wait_until(lambda: verifier.health()["issuers"][issuer.url]["fetches"] == 2)
    assert fetches(issuer) == (1, 2)  # the known jwks_uri is reused: no new discovery
    health = verifier.health()["issuers"][issuer.url]
    assert health["age"] == 0.0 and health["status"] == "fresh"
    await anyio.to_thread.run_sync(verifier.close)
    await verifier.aclose()


async def loop_gaps(work: Callable[[], Awaitable[None]],
                    measure: Callable[[Snapshot, Snapshot], float] = held) -> list[float]:
    """Run `work` beside a 1 ms ticker; return the gaps between the ticker's wake-ups, as the
    process spent them (`loop_clock.held`: the time a busy machine kept it off the CPU is left
    out, so a loaded machine does not look like a blocked loop), or as `measure` says."""
    gaps: list[float] = []
    done = anyio.Event()
    clock = ProcessClock()

    async def ticker() -> None:
        last = clock.snapshot()
        while not done.is_set():
            await anyio.sleep(0.001)
            now = clock.snapshot()
            gaps.append(measure(last, now))
            last = now

    async with anyio.create_task_group() as group:
        group.start_soon(ticker)
        await anyio.sleep(0.02)
        await work()
        done.set()
    clock.close()
    return gaps


@pytest.mark.anyio
async def test_event_loop_is_never_blocked_by_a_fetch(issuer: KeySetServer,
                                                      settings: GuardSettings) -> None:
    """A 1 ms ticker measures the loop's longest stall while verifications await a slow issuer.

    A blocking fetch would stall the loop for a whole slow answer (0.5 s each here). The gaps
    leave out the time a busy machine kept the process off the CPU (`loop_gaps`); the bound
    stays 0.4 s, well below one slow answer; per-fetch TLS set-up off the loop has its own test.
    """
    tokens = [issuer.mint() for _ in range(20)]
    issuer.set_fault("slow", delay=0.5)
    verifier = TokenVerifier(settings)
    start = time.perf_counter()

    async def verify_all() -> None:
        async with anyio.create_task_group() as verifications:
            for token in tokens:
                verifications.start_soon(verifier.verify, token)

    gaps = await loop_gaps(verify_all)
    elapsed = time.perf_counter() - start
    assert elapsed >= 1.0  # discovery and key set, 0.5 s each: the fetch really was slow
    assert fetches(issuer) == (1, 1)
    assert len(gaps) > 100
    assert max(gaps) < 0.4, f"event loop stalled {max(gaps) * 1000:.1f} ms"
    await verifier.aclose()


def cpu(start: Snapshot, end: Snapshot) -> float:
    """The loop thread's CPU time between two snapshots."""
    return end.cpu - start.cpu


@pytest.mark.anyio
async def test_no_per_fetch_blocking_set_up(issuer: KeySetServer,
                                            make_settings: Callable[..., GuardSettings]) -> None:
    """Each fetch's set-up stays off the loop: over 8 cold fetches in a row, the loop thread
    shows no more 10 ms stretches of CPU work between two ticks than in a control period of the
    same length without fetches (+3 for noise). Building a TLS context per fetch (reading and
    parsing the CA bundle) costs ~20 ms of CPU each time. CPU time, because the work in question
    is CPU work, and it does not grow when a busy machine keeps the process waiting."""
    settings = make_settings(jwks_url=issuer.jwks_url)
    tokens = [issuer.mint() for _ in range(8)]
    issuer.set_fault("slow", delay=0.03)

    async def stalls(work: Callable[[], Awaitable[None]]) -> int:
        return sum(gap > 0.010 for gap in await loop_gaps(work, cpu))

    async def fetching() -> None:
        for token in tokens:
            verifier = TokenVerifier(settings)  # cold: one fetch each
            await verifier.verify(token)

    async def control() -> None:
        for _ in tokens:
            await anyio.sleep(0.035)

    with_fetches = await stalls(fetching)
    assert issuer.requests[KEYS] == len(tokens)
    assert with_fetches <= await stalls(control) + 3


# -- several issuers -------------------------------------------------------------------------

@pytest.mark.anyio
async def test_each_issuer_has_its_own_key_set(issuer: KeySetServer, other: KeySetServer,
                                               fast_keys: dict[str, SigningKey],
                                               signing_keys: dict[str, SigningKey],
                                               make_settings: Callable[..., GuardSettings]
                                               ) -> None:
    verifier = TokenVerifier(make_settings(issuer=[issuer.url, other.url]))
    with KeySetServer([fast_keys["stranger"]]) as stranger:
        # An unconfigured iss never causes a request to anyone, not even its own server.
        for token in (stranger.mint(), stranger.mint(iss=stranger.url + "/"),
                      issuer.mint(iss=issuer.url + "/"), issuer.mint(iss=None),
                      issuer.mint(iss=[issuer.url])):
            error = await refused(verifier.verify, token)
            assert error.reason == "untrusted_issuer"
        assert fetches(stranger) == fetches(issuer) == fetches(other) == (0, 0)

    assert (await verifier.verify(issuer.mint())).issuer == issuer.url
    assert fetches(issuer) == (1, 1) and fetches(other) == (0, 0)
    assert (await verifier.verify(other.mint())).issuer == other.url
    assert fetches(other) == (1, 1)

    # iss says A, signed with B's key and kid: A's set has no such key (one refetch of A).
    error = await refused(verifier.verify, other.mint(iss=issuer.url))
    assert error.reason == "unknown_kid"
    assert fetches(issuer) == (1, 2) and fetches(other) == (1, 1)
    # iss says A, signed with B's key under the kid of one of A's keys: bad signature.
    error = await refused(verifier.verify, other.mint(
        iss=issuer.url, headers={"kid": signing_keys["ES256"].kid}))
    assert error.reason == "bad_signature"
    assert fetches(issuer) == (1, 2) and fetches(other) == (1, 1)
    health = verifier.health()
    assert set(health["issuers"]) == {issuer.url, other.url}
    assert health["issuers"][other.url]["key_ids"] == ["snk_other"]
    await verifier.aclose()


# -- health ----------------------------------------------------------------------------------

@pytest.mark.anyio
async def test_health_reports_each_issuer(issuer: KeySetServer,
                                          make_settings: Callable[..., GuardSettings]) -> None:
    clock = FakeClock(100.0)
    verifier = TokenVerifier(make_settings(jwks_max_stale=10, http_timeout=0.5), clock=clock)
    cold = verifier.health()
    assert cold["ready"] is False
    entry = cold["issuers"][issuer.url]
    assert entry["status"] == "cold" and entry["keys"] == 0 and entry["usable"] is False
    assert entry["age"] is None and entry["next_refresh"] is None
    assert entry["last_success"] is None and entry["last_error"] is None
    assert entry["fetches"] == 0 and entry["jwks_url"] is None

    before = time.time()
    await verifier.warm_up()
    after = time.time()
    clock.set(110.0)
    health = verifier.health()
    assert health["ready"] is True
    entry = health["issuers"][issuer.url]
    assert entry["status"] == "fresh" and entry["usable"] is True
    assert entry["keys"] == 4
    assert entry["key_ids"] == ["snk_rs256", "snk_ps256", "snk_es256", "snk_eddsa"]
    assert entry["dropped_keys"] == []
    assert entry["age"] == 10.0 and entry["ttl"] == 300.0  # the server's max-age=300
    assert before <= entry["last_success"] <= after
    assert entry["last_error"] is None
    # next refresh: 30 s before expiry (a tenth of the TTL), 270 s after the fetch
    assert entry["next_refresh"] == pytest.approx(time.time() + 260.0, abs=2.0)
    assert entry["jwks_url"] == issuer.jwks_url

    issuer.stop()
    clock.set(401.0)  # expired: the request waits for a refresh that fails, then serves stale
    assert (await verifier.verify(issuer.mint())).subject
    entry = verifier.health()["issuers"][issuer.url]
    assert entry["status"] == "stale" and entry["usable"] is True
    assert "could not be fetched" in entry["last_error"]
    assert entry["last_error_at"] >= after and before <= entry["last_success"] <= after
    assert entry["keys"] == 4 and verifier.health()["ready"] is True

    clock.set(411.0)  # past expiry + max_stale
    health = verifier.health()
    assert health["ready"] is False
    assert health["issuers"][issuer.url]["status"] == "unavailable"
    assert health["issuers"][issuer.url]["usable"] is False
    await verifier.aclose()


def test_health_lists_dropped_keys(issuer: KeySetServer, settings: GuardSettings) -> None:
    issuer.extra_jwks.append({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"})
    issuer.extra_jwks.append(SigningKey.generate("ES256", kid="enc").public_jwk(use="enc"))
    verifier = TokenVerifier(settings)
    verifier.warm_up_sync()
    entry = verifier.health()["issuers"][issuer.url]
    assert entry["keys"] == 4
    assert entry["dropped_keys"] == [
        {"kid": "hmac", "reason": "symmetric (oct) keys are never accepted"},
        {"kid": "enc", "reason": "use is 'enc', not 'sig'"},
    ]
    verifier.close()


@pytest.mark.anyio
async def test_tls_context_is_built_once_and_off_the_event_loop(
        issuer: KeySetServer, settings: GuardSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Building a TLS context reads the CA bundle (tens of ms of blocking work): the async
    driver builds the shared one in a worker thread, once, whatever the number of fetches."""
    from m2m_guard._core import fetch

    built_on: list[int] = []
    real = fetch.httpx.create_ssl_context

    def spy(*args: object, **kwargs: object) -> object:
        built_on.append(threading.get_ident())
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(fetch, "_tls_context", None)
    monkeypatch.setattr(fetch.httpx, "create_ssl_context", spy)
    loop_thread = threading.get_ident()
    for _ in range(3):
        verifier = TokenVerifier(settings)
        await verifier.warm_up()
        await verifier.verify(issuer.mint())
        await verifier.aclose()
    assert fetches(issuer) == (3, 3)
    assert len(built_on) == 1
    assert built_on[0] != loop_thread
