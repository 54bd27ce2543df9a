"""TokenVerifier lifecycle: warm-up (parallel across issuers, failures named), close from any
thread, health before and after."""

from __future__ import annotations

import threading

import anyio
import pytest

from m2m_guard import GuardSettings, IssuerUnavailable, TokenVerifier
from m2m_guard.local_issuer import KeySetServer, SigningKey


@pytest.fixture(scope="module")
def es_key() -> SigningKey:
    return SigningKey.generate("ES256")


@pytest.mark.anyio
async def test_warm_up_fetches_issuers_in_parallel(es_key: SigningKey) -> None:
    with KeySetServer([es_key]) as slow, KeySetServer([es_key]) as quick:
        slow.set_fault("hang")
        verifier = TokenVerifier(GuardSettings(issuer=[slow.url, quick.url],
                                               audience="deployment-api", http_timeout=5))
        seen_while_hanging = False
        async with anyio.create_task_group() as group:
            group.start_soon(verifier.warm_up)
            with anyio.fail_after(5):
                while quick.requests["/keys"] == 0:
                    await anyio.sleep(0.01)
            seen_while_hanging = slow.requests["/keys"] == 0 and \
                slow.requests["/.well-known/openid-configuration"] == 1
            slow.set_fault(None)  # release the hanging discovery request
        assert seen_while_hanging
        assert verifier.health()["ready"] is True
        await verifier.aclose()


@pytest.mark.anyio
async def test_warm_up_names_the_issuers_that_failed(es_key: SigningKey) -> None:
    with KeySetServer([es_key]) as down, KeySetServer([es_key]) as up:
        down.set_fault("500")
        verifier = TokenVerifier(GuardSettings(issuer=[down.url, up.url],
                                               audience="deployment-api"))
        with pytest.raises(IssuerUnavailable) as caught:
            await verifier.warm_up()
        assert down.url in caught.value.description
        assert up.url not in caught.value.description
        health = verifier.health()
        assert health["ready"] is False
        assert health["issuers"][up.url]["status"] == "fresh"
        assert health["issuers"][down.url]["status"] == "unavailable"
        assert "HTTP 500" in health["issuers"][down.url]["last_error"]
        await verifier.aclose()


def test_warm_up_sync_and_close_from_another_thread(es_key: SigningKey) -> None:
    with KeySetServer([es_key]) as issuer:
        verifier = TokenVerifier(GuardSettings(issuer=issuer.url, audience="deployment-api"))
        assert verifier.health()["issuers"][issuer.url]["status"] == "cold"
        verifier.warm_up_sync()
        assert issuer.requests["/keys"] == 1
        assert verifier.verify_sync(issuer.mint()).client_id is not None
        closer = threading.Thread(target=verifier.close)
        closer.start()
        closer.join(10)
        assert not closer.is_alive()


@pytest.mark.anyio
async def test_async_context_manager_cancels_background_refresh(es_key: SigningKey) -> None:
    """A refresh running in the background when the verifier closes is cancelled, not awaited
    for its full timeout."""
    clock = [100.0]
    with KeySetServer([es_key], max_age=None) as issuer:
        settings = GuardSettings(issuer=issuer.url, audience="deployment-api",
                                 jwks_cache_ttl=10, http_timeout=30)
        async with TokenVerifier(settings, clock=lambda: clock[0]) as verifier:
            await verifier.verify(issuer.mint())
            issuer.set_fault("hang")
            clock[0] = 109.5  # inside the refresh-ahead window: served now, refreshed behind
            await verifier.verify(issuer.mint())
            with anyio.fail_after(5):
                while issuer.requests["/keys"] < 2:
                    await anyio.sleep(0.01)
            assert verifier.key_store.background == 1
            started = anyio.current_time()
        assert anyio.current_time() - started < 5  # cancelled, not waited for (30 s timeout)
        assert not verifier.key_store.background
        issuer.set_fault(None)


def test_sync_context_manager_and_refresh_thread(es_key: SigningKey) -> None:
    clock = [100.0]
    with KeySetServer([es_key], max_age=None) as issuer:
        settings = GuardSettings(issuer=issuer.url, audience="deployment-api", jwks_cache_ttl=10)
        with TokenVerifier(settings, clock=lambda: clock[0]) as verifier:
            verifier.verify_sync(issuer.mint())
            clock[0] = 109.5
            verifier.verify_sync(issuer.mint())  # starts a refresh thread, does not wait
        # close() joined the thread: the refresh is done and recorded.
        assert issuer.requests["/keys"] == 2
        assert verifier.health()["issuers"][issuer.url]["fetches"] == 2
        assert not verifier.key_store.background


@pytest.mark.anyio
async def test_async_request_waits_for_a_fetch_owned_by_a_thread(es_key: SigningKey) -> None:
    """Single flight across fronts: a thread's fetch is joined by an async request."""
    with KeySetServer([es_key]) as issuer:
        issuer.set_fault("hang")
        verifier = TokenVerifier(GuardSettings(issuer=issuer.url, audience="deployment-api",
                                               http_timeout=5))
        token = issuer.mint()
        results: list[object] = []
        thread = threading.Thread(target=lambda: results.append(verifier.verify_sync(token)))
        thread.start()
        with anyio.fail_after(5):
            while issuer.requests["/.well-known/openid-configuration"] == 0:
                await anyio.sleep(0.01)
        async with anyio.create_task_group() as group:
            async def verify_async() -> None:
                results.append(await verifier.verify(token))
            group.start_soon(verify_async)
            await anyio.sleep(0.1)
            issuer.set_fault(None)
        await anyio.to_thread.run_sync(thread.join, 10)
        assert len(results) == 2
        assert issuer.requests["/.well-known/openid-configuration"] == 1
        assert issuer.requests["/keys"] == 1
        await verifier.aclose()


@pytest.mark.anyio
async def test_unexpected_fetch_error_is_recorded_not_raised(
        es_key: SigningKey, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    class Broken:  # the injected fetcher seam: a bug in the I/O layer
        async def fetch_async(self, *args: object, **kwargs: object) -> None:
            raise RuntimeError("injected fetch bug")

        def fetch_sync(self, *args: object, **kwargs: object) -> None:
            raise RuntimeError("injected fetch bug")

    with KeySetServer([es_key]) as issuer:
        verifier = TokenVerifier(GuardSettings(issuer=issuer.url, audience="deployment-api"),
                                 fetcher=Broken())  # type: ignore[arg-type]
        with pytest.raises(IssuerUnavailable):
            await verifier.verify(issuer.mint())
        state = verifier.health()["issuers"][issuer.url]
        assert state["last_error"] == "unexpected error: RuntimeError"
        assert "injected fetch bug" in caplog.text
        await verifier.aclose()


@pytest.mark.anyio
async def test_warm_up_at_startup_reports_and_logs_instead_of_raising(
        caplog: pytest.LogCaptureFixture) -> None:
    """What every adapter calls at startup: True once the keys are loaded; with the issuer down
    a WARNING and False (never an exception: the app must start, requests retry)."""
    with KeySetServer([SigningKey.generate("ES256")]) as server:
        settings = GuardSettings(issuer=server.url, audience="api", http_timeout=1.0)
        async with TokenVerifier(settings) as up:
            assert await up.warm_up_at_startup() is True
        with TokenVerifier(settings) as up_sync:
            assert up_sync.warm_up_at_startup_sync() is True
        server.set_fault("500")
        caplog.set_level("WARNING", logger="m2m_guard")
        async with TokenVerifier(settings) as down:
            assert await down.warm_up_at_startup() is False
        with TokenVerifier(settings) as down_sync:
            assert down_sync.warm_up_at_startup_sync() is False
    warnings = [r for r in caplog.records if "could not warm up" in r.getMessage()]
    assert len(warnings) == 2 and all(r.levelname == "WARNING" for r in warnings)
