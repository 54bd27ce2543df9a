"""Readiness: `health_response` as a core function, and the opt-in health endpoint of the ASGI
middleware, over a real key-set server (up, down at start, then back)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest
from starlette.testclient import TestClient

from m2m_guard import ConfigurationError, GuardSettings, TokenVerifier
from m2m_guard._core.endpoints import OperationalEndpoints
from m2m_guard.health import SUGGESTED_HEALTH_PATH, health_response, request_refresh
from m2m_guard.local_issuer import KeySetServer

from .conftest import deployment_app

PATH = SUGGESTED_HEALTH_PATH


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def test_core_function_ready_and_not_ready(issuer: KeySetServer,
                                           settings: GuardSettings) -> None:
    verifier = TokenVerifier(settings)
    cold = health_response(verifier, refresh=False)
    assert cold.status == 503
    document = json.loads(cold.body)
    assert document["status"] == "not_ready" and document["ready"] is False
    assert document["issuers"][issuer.url]["status"] == "cold"
    assert dict(cold.headers)["cache-control"] == "no-store"
    assert dict(cold.headers)["content-type"] == "application/json"
    assert issuer.requests["/keys"] == 0  # refresh=False: nothing fetched

    verifier.warm_up_sync()
    ready = health_response(verifier)
    assert ready.status == 200
    entry = json.loads(ready.body)["issuers"][issuer.url]
    assert entry["status"] == "fresh" and entry["usable"] is True and entry["keys"] == 4
    assert sorted(entry["key_ids"]) == ["snk_eddsa", "snk_es256", "snk_ps256", "snk_rs256"]
    assert entry["age"] >= 0 and entry["last_success"] > 1.7e9 and entry["last_error"] is None
    assert entry["next_refresh"] > entry["last_success"]
    assert int(dict(ready.headers)["content-length"]) == len(ready.body)


def test_not_ready_answer_starts_a_background_fetch(issuer: KeySetServer,
                                                    settings: GuardSettings) -> None:
    verifier = TokenVerifier(settings)
    first = health_response(verifier)  # starts a fetch, answers at once
    assert first.status == 503
    wait_for(lambda: verifier.health()["ready"])
    assert health_response(verifier).status == 200
    assert issuer.requests["/keys"] == 1
    assert request_refresh(verifier) == 0  # ready: nothing to do
    verifier.close()


def test_refresh_respects_the_failure_backoff(issuer: KeySetServer,
                                              settings: GuardSettings) -> None:
    issuer.set_fault("500")
    now = [1000.0]
    verifier = TokenVerifier(settings, clock=lambda: now[0])
    assert health_response(verifier).status == 503
    wait_for(lambda: verifier.key_store.issuers[issuer.url].flight is None
             and verifier.health()["issuers"][issuer.url]["fetches"] == 1)
    # The fetch failed: the backoff (1 s after a first failure) holds further probes back ...
    assert request_refresh(verifier) == 0
    assert health_response(verifier).status == 503
    assert issuer.requests["/.well-known/openid-configuration"] == 1
    # ... and once it has passed, the next probe tries again.
    now[0] += 1.5
    issuer.set_fault(None)
    assert request_refresh(verifier) == 1
    wait_for(lambda: verifier.health()["ready"])
    verifier.close()


def test_health_endpoint_through_the_middleware(issuer: KeySetServer,
                                                make_settings: Callable[..., GuardSettings]
                                                ) -> None:
    settings = make_settings(health_path=PATH)
    with TestClient(deployment_app(settings)) as client:  # lifespan warms the key set
        response = client.get(PATH)  # no token: served before authentication
        assert response.status_code == 200
        assert response.headers["cache-control"] == "no-store"
        body = response.json()
        assert body["status"] == "ready" and body["issuers"][issuer.url]["keys"] == 4
        head = client.head(PATH)
        assert head.status_code == 200 and head.content == b""
        post = client.post(PATH)
        assert post.status_code == 405 and post.headers["allow"] == "GET, HEAD"
        # Other paths are still guarded; a near-miss path is not the endpoint.
        assert client.get("/deployments").status_code == 401
        assert client.get(PATH + "/").status_code == 401


def test_health_endpoint_not_ready_then_ready(signing_keys: dict[str, object],
                                              make_settings: Callable[..., GuardSettings],
                                              issuer: KeySetServer) -> None:
    issuer.stop()  # the issuer is down when the app starts
    settings = make_settings(health_path=PATH, http_timeout=0.5)
    with TestClient(deployment_app(settings)) as client:
        response = client.get(PATH)
        assert response.status_code == 503
        entry = response.json()["issuers"][issuer.url]
        assert entry["status"] == "unavailable" and entry["last_error"]
        issuer.start()  # same port
        # Probes keep asking; once the backoff allows it, a probe's fetch makes it ready.
        deadline = time.monotonic() + 10
        while client.get(PATH).status_code != 200:
            assert time.monotonic() < deadline, "never became ready"
            time.sleep(0.1)
        assert client.get("/deployments", headers={
            "Authorization": f"Bearer {issuer.mint()}"}).status_code == 200


def test_health_endpoint_is_off_by_default(issuer: KeySetServer,
                                           settings: GuardSettings) -> None:
    assert OperationalEndpoints.for_verifier(TokenVerifier(settings)) is None
    with TestClient(deployment_app(settings)) as client:
        assert client.get(PATH).status_code == 401


def test_endpoints_match_exact_paths(make_settings: Callable[..., GuardSettings]
                                                 ) -> None:
    endpoints = OperationalEndpoints(TokenVerifier(make_settings(health_path="/ready")))
    assert endpoints.paths == frozenset({"/ready"})
    assert endpoints.answer("/other", "GET") is None


@pytest.mark.parametrize("value", ["health", "/health*", "/he alth", "", "/docs/*"])
def test_invalid_health_path(make_settings: Callable[..., GuardSettings], value: str) -> None:
    with pytest.raises(ConfigurationError, match="health_path must be an absolute path"):
        make_settings(health_path=value)


def test_health_path_from_env(issuer: KeySetServer) -> None:
    settings = GuardSettings.from_env({"M2M_GUARD_ISSUER": issuer.url,
                                       "M2M_GUARD_AUDIENCE": "deployment-api",
                                       "M2M_GUARD_HEALTH_PATH": "/ready"})
    assert settings.health_path == "/ready"
    with pytest.raises(ConfigurationError, match="M2M_GUARD_HEALTH_PATH"):
        GuardSettings.from_env({"M2M_GUARD_ISSUER": issuer.url,
                                "M2M_GUARD_AUDIENCE": "deployment-api",
                                "M2M_GUARD_HEALTH_PATH": "ready"})


def test_endpoints_under_uvicorn(issuer: KeySetServer,
                                 make_settings: Callable[..., GuardSettings]) -> None:
    """End to end over a real server: readiness and RFC 9728 document, no token needed."""
    import httpx

    from .servers import uvicorn_server

    settings = make_settings(health_path=PATH, resource="http://127.0.0.1/api")
    with uvicorn_server(deployment_app(settings)) as port:
        base = f"http://127.0.0.1:{port}"
        ready = httpx.get(base + PATH, timeout=5)
        assert ready.status_code == 200 and ready.json()["ready"] is True
        document = httpx.get(base + "/.well-known/oauth-protected-resource/api", timeout=5)
        assert document.json()["authorization_servers"] == [issuer.url]
        refused = httpx.get(base + "/deployments", timeout=5)
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == (
            'Bearer realm="api", resource_metadata='
            '"http://127.0.0.1/.well-known/oauth-protected-resource/api"')


def test_health_document_is_built_once_per_request_with_a_cached_token(
        issuer: KeySetServer, make_settings: Callable[..., GuardSettings],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A probe that sends a (cached) bearer token takes the full path, where the endpoint is
    answered; the fast path only looks the path up and never builds the document itself."""
    from m2m_guard._core import endpoints

    built: list[int] = []
    real = endpoints.health_response

    def counting(verifier: TokenVerifier) -> object:
        built.append(1)
        return real(verifier)

    monkeypatch.setattr(endpoints, "health_response", counting)
    token = issuer.mint()
    with TestClient(deployment_app(make_settings(health_path=PATH))) as client:
        headers = {"Authorization": f"Bearer {token}"}
        assert client.get("/deployments", headers=headers).status_code == 200  # cached now
        for _ in range(3):
            assert client.get(PATH, headers=headers).status_code == 200
    assert len(built) == 3
