"""Two real uvicorn workers behind one port (``--workers 2``): a DPoP proof used on one worker is
refused on the other with the Redis replay store, and accepted again there with the memory store
(its documented limit: one process's memory). Each response names the worker that answered, so
the test knows it crossed workers."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest

from m2m_guard.dpop import DPoPKey
from m2m_guard.local_issuer import KeySetServer, SigningKey, scalekit_claims

from .conftest import AUDIENCE
from .servers import free_port

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def two_workers(issuer: KeySetServer, store: str) -> Iterator[int]:
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("M2M_GUARD_")}
    env.update({"M2M_GUARD_ISSUER": issuer.url, "M2M_GUARD_AUDIENCE": AUDIENCE,
                "M2M_GUARD_DPOP": "allowed", "M2M_GUARD_DPOP_REPLAY_STORE": store,
                "M2M_GUARD_PUBLIC_PATHS": "/pid", "M2M_GUARD_HTTP_TIMEOUT": "5"})
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "tests.dpop_workers_app:app", "--host", "127.0.0.1",
         "--port", str(port), "--workers", "2", "--timeout-keep-alive", "120",
         "--log-level", "warning", "--no-access-log"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + 60  # two interpreters starting on a loaded machine
        while True:
            if process.poll() is not None:
                log.seek(0)
                pytest.fail("uvicorn exited: " + log.read().decode(errors="replace")[-800:])
            try:
                if httpx.get(f"http://127.0.0.1:{port}/pid", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "uvicorn --workers 2 did not start"
            time.sleep(0.1)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()


def one_connection_per_worker(port: int, stack: ExitStack) -> dict[str, httpx.Client]:
    """A kept-alive connection to each of the two workers: connections are opened (bounded)
    until both workers have answered one."""
    found: dict[str, httpx.Client] = {}
    for _ in range(200):
        client = stack.enter_context(httpx.Client(
            base_url=f"http://127.0.0.1:{port}", timeout=10, trust_env=False,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1)))
        pid = client.get("/pid").headers["x-worker-pid"]
        found.setdefault(pid, client)
        if len(found) == 2:
            return found
        time.sleep(0.02)  # let the other worker reach accept()
    pytest.fail(f"200 connections all reached the same worker ({list(found)})")


def send(client: httpx.Client, pid: str, token: str, proof: str) -> httpx.Response:
    response = client.get("/deployments", headers={"Authorization": f"DPoP {token}",
                                                   "DPoP": proof})
    assert response.headers["x-worker-pid"] == pid, "the kept-alive connection changed worker"
    assert response.status_code != 500, response.text
    return response


@pytest.fixture
def bound(issuer: KeySetServer, signing_keys: dict[str, SigningKey]) -> tuple[DPoPKey, str]:
    key = DPoPKey.generate()
    claims = scalekit_claims(issuer.url, audience=[AUDIENCE], cnf={"jkt": key.thumbprint})
    return key, signing_keys["RS256"].sign(claims)


def _proof_on_both(issuer: KeySetServer, store: str,
                   bound: tuple[DPoPKey, str]) -> tuple[httpx.Response, httpx.Response,
                                                        httpx.Response]:
    key, token = bound
    with two_workers(issuer, store) as port, ExitStack() as stack:
        (pid_a, a), (pid_b, b) = one_connection_per_worker(port, stack).items()
        proof = key.proof("GET", f"http://127.0.0.1:{port}/deployments", access_token=token)
        first = send(a, pid_a, token, proof)
        other = send(b, pid_b, token, proof)
        same = send(a, pid_a, token, proof)
        return first, other, same


def test_redis_store_refuses_a_proof_replayed_on_the_other_worker(
        issuer: KeySetServer, redis_url: str, bound: tuple[DPoPKey, str]) -> None:
    first, other, same = _proof_on_both(issuer, redis_url, bound)
    assert first.status_code == 200, first.text
    for replay in (other, same):
        assert replay.status_code == 401, replay.text
        assert replay.json() == {"error": "invalid_dpop_proof", "error_description": (
            "The DPoP proof was already used: make a fresh proof (a new jti) for every "
            "request.")}


def test_memory_store_is_per_worker(issuer: KeySetServer, bound: tuple[DPoPKey, str]) -> None:
    first, other, same = _proof_on_both(issuer, "memory", bound)
    assert first.status_code == 200, first.text
    assert other.status_code == 200, other.text  # the documented limit of the default
    assert same.status_code == 401 and same.json()["error"] == "invalid_dpop_proof"
