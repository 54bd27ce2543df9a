"""End to end: the Django example project (plain, async and DRF views) served by waitress on
loopback, configured from the environment as in the README, verifying tokens against a real
key-set server, called over HTTP with httpx."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from m2m_guard.local_issuer import KeySetServer

from .conftest import AUDIENCE
from .django_settings import setup_django
from .servers import free_port, waitress_server

setup_django()

from django.test import override_settings  # noqa: E402

from examples.django_project import settings as example_settings  # noqa: E402
from m2m_guard.django import close_verifiers  # noqa: E402


def test_example_project_under_waitress(issuer: KeySetServer,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("M2M_GUARD_ISSUER", issuer.url)
    monkeypatch.setenv("M2M_GUARD_AUDIENCE", AUDIENCE)
    with override_settings(M2M_GUARD=example_settings.M2M_GUARD,
                           ROOT_URLCONF=example_settings.ROOT_URLCONF,
                           MIDDLEWARE=example_settings.MIDDLEWARE):
        wsgi = importlib.reload(importlib.import_module("examples.django_project.wsgi"))
        try:
            with waitress_server(wsgi.application) as port, httpx.Client(
                    base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
                token = issuer.mint()
                auth = {"Authorization": f"Bearer {token}"}
                for prefix in ("", "/async", "/api"):
                    listed = client.get(f"{prefix}/deployments", headers=auth)
                    assert listed.status_code == 200, (prefix, listed.text)
                    assert listed.json()["deployments"][0]["id"] == "dep_1"
                    posted = client.post(f"{prefix}/deployments", headers=auth,
                                         json={"service": "billing", "version": "1.5.0"})
                    assert posted.status_code == 202, (prefix, posted.text)
                    assert posted.json()["requested_by"] == "m2morg_68315758685323697"
                    refused = client.get(f"{prefix}/admin/audit", headers=auth)
                    assert refused.status_code == 403, (prefix, refused.text)
                    assert refused.headers["www-authenticate"].endswith(
                        'scope="admin:platform"')
                    assert refused.headers["cache-control"] == "no-store"
                    assert refused.json()["error"] == "insufficient_scope"
                    missing = client.get(f"{prefix}/deployments")
                    assert missing.status_code == 401
                    assert missing.headers["www-authenticate"] == 'Bearer realm="api"'
                    assert missing.json()["error"] == "missing_token"
                    assert client.get(f"{prefix}/health").json() == {"status": "ok"}
                # every request shared one verifier, so one key-set fetch
                assert issuer.requests["/keys"] == 1
        finally:
            close_verifiers()


def test_readme_command_serves_the_example(issuer: KeySetServer) -> None:
    """The one command the README gives, as a separate process started from the repo root."""
    root = Path(__file__).resolve().parents[1]
    port = free_port()
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("M2M_GUARD_", "DJANGO_"))}
    env.update(M2M_GUARD_ISSUER=issuer.url, M2M_GUARD_AUDIENCE=AUDIENCE)
    command = [str(Path(sys.executable).parent / "waitress-serve"), "--listen",
               f"127.0.0.1:{port}", "examples.django_project.wsgi:application"]
    process = subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            deadline = time.monotonic() + 20
            while True:
                try:
                    health = client.get("/health")
                    break
                except httpx.TransportError:
                    assert process.poll() is None, process.stderr.read() if process.stderr \
                        else "waitress-serve exited"
                    assert time.monotonic() < deadline, "waitress-serve did not start"
                    time.sleep(0.1)
            assert health.json() == {"status": "ok"}
            token = issuer.mint()
            assert client.get("/api/deployments",
                              headers={"Authorization": f"Bearer {token}"}).status_code == 200
            assert client.get("/deployments").status_code == 401
    finally:
        process.terminate()
        process.wait(10)
        if process.stderr is not None:
            process.stderr.close()
