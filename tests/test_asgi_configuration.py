"""A misspelled or invalid M2M_GUARD_* configuration on a plain Starlette app with the ASGI
middleware, under a real uvicorn process: the server exits non-zero at start-up with the
did-you-mean message (lifespan auto and on); with the lifespan off, the reason is logged once and
requests get a 503 that says where to look, never a silent 500."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.servers import free_port

APP = '''
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import JSONResponse
from starlette.routing import Route

from m2m_guard.asgi import M2MGuardMiddleware


async def health(request):
    return JSONResponse({"ok": True})


app = Starlette(routes=[Route("/health", health)],
                middleware=[Middleware(M2MGuardMiddleware)])
'''

MISSPELLED = {"M2M_GUARD_ISSUR": "https://auth.example.com", "M2M_GUARD_AUDIENCE": "api"}
HINT = "did you mean M2M_GUARD_ISSUER?"


def start(tmp_path: Path, lifespan: str, environ: dict[str, str]) -> tuple[subprocess.Popen[str],
                                                                          int]:
    (tmp_path / "guarded_app.py").write_text(APP)
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("M2M_GUARD_")}
    env.update(environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(Path(__file__).parents[1]),
                                         env.get("PYTHONPATH", "")])
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "guarded_app:app", "--host", "127.0.0.1",
         "--port", str(port), "--lifespan", lifespan, "--log-level", "info"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return process, port


@pytest.mark.parametrize("lifespan", ["auto", "on"])
@pytest.mark.parametrize(("environ", "expected"), [
    (MISSPELLED, HINT),
    ({"M2M_GUARD_AUDIENCE": "api"}, "M2M_GUARD_ISSUER"),
])
def test_a_bad_configuration_stops_the_server_at_startup(tmp_path: Path, lifespan: str,
                                                         environ: dict[str, str],
                                                         expected: str) -> None:
    process, _ = start(tmp_path, lifespan, environ)
    try:
        output, _ = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode != 0, output
    assert expected in output, output
    assert "m2m_guard cannot start" in output
    assert "appears unsupported" not in output
    assert "Traceback" not in output


def test_without_lifespan_the_reason_is_logged_once_and_requests_get_503(tmp_path: Path) -> None:
    process, port = start(tmp_path, "off", MISSPELLED)
    try:
        deadline = time.monotonic() + 30
        statuses: list[int] = []
        while time.monotonic() < deadline and not statuses:  # bounded: until it listens
            try:
                statuses.append(httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
                                .status_code)
            except httpx.TransportError:
                time.sleep(0.1)
        responses = [httpx.get(f"http://127.0.0.1:{port}/health", timeout=5) for _ in range(3)]
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    assert statuses == [503], output
    for response in responses:
        assert response.status_code == 503
        assert response.json()["error"] == "temporarily_unavailable"
        assert "log" in response.json()["error_description"]
        assert response.headers["retry-after"] == "30"
    assert output.count(HINT) == 1, output  # logged once, not per request
    assert "Traceback" not in output
