"""TokenVerifier lifecycle: warm-up (parallel across issuers, failures named), close from any
thread, health before and after."""

from __future__ import annotations

import threading

import anyio
import pytest

from m2m_guard import GuardSettings, IssuerUnavailable, TokenVerifier
from m2m_guard.local_issuer import KeySetServer, SigningKey


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


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
