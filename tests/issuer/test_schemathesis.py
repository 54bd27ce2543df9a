"""Schemathesis against the real local issuer on loopback, driven by the issuer's own OpenAPI
document (``/openapi.json``): every phase (coverage, fuzzing, stateful through the document's
links), every check (``--checks all``). No answer may be a 5xx, every answer must match the
document, a request the document allows must be accepted and one it forbids refused.

The suite runs a bounded campaign (a few examples per operation, a fixed seed); ``make fuzz``
(the "fuzz" Hypothesis profile) runs a longer one with a random seed. The figures are printed
with the fuzz summary (`tests.fuzz.conftest`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import settings

from m2m_guard.local_issuer import LocalIssuer, serve_issuer
from tests.fuzz.conftest import EXAMPLES
from tests.packages import require_package

from .conftest import ADMIN_ID, ADMIN_SECRET, admin_token

require_package("schemathesis")  # run as a command, from its own package

HERE = Path(__file__).resolve().parent
LONG = settings.default.max_examples > 1000  # the "fuzz" profile of `make fuzz`


class StatusCounter:
    """The issuer's app, counting the status of every response it sends."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.statuses: Counter[int] = Counter()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def counting(message: Any) -> None:
            if message["type"] == "http.response.start":
                self.statuses[message["status"]] += 1
            await send(message)

        await self.app(scope, receive, counting)


@pytest.fixture
def served() -> Iterator[tuple[str, str, StatusCounter]]:
    issuer = LocalIssuer(admin_client_id=ADMIN_ID, admin_client_secret=ADMIN_SECRET,
                         key_publish_delay=0)
    counter = StatusCounter(issuer.app)
    issuer.app = counter  # type: ignore[assignment]
    try:
        with serve_issuer(issuer) as running, httpx.Client(base_url=running.url) as http:
            yield running.url, admin_token(http), counter
    finally:
        issuer.close()


@pytest.mark.timeout(3600 if LONG else 300)  # about 30 s alone; room for a loaded machine
def test_the_issuer_matches_its_openapi_document(served: tuple[str, str, StatusCounter],
                                                 tmp_path: Path) -> None:
    url, token, counter = served
    report = tmp_path / "report.json"
    command = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(HERE / "schemathesis.toml"),
        "run", f"{url}/openapi.json", "--checks", "all",
        "--header", f"Authorization: Bearer {token}",
        "--max-examples", "200" if LONG else "8",
        "--report", "json", "--report-json-path", str(report), "--no-color",
        "--suppress-health-check", "all",
    ]
    if not LONG:
        command += ["--seed", "18", "--workers", "1"]
    env = dict(os.environ, SCHEMATHESIS_HOOKS="tests.issuer.schemathesis_hooks",
               PYTHONPATH=os.pathsep.join([str(HERE.parents[1]), os.environ.get("PYTHONPATH",
                                                                                  "")]))
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=tmp_path,
                          timeout=3000 if LONG else 240, check=False)
    assert report.exists(), done.stdout + done.stderr
    result = json.loads(report.read_text())
    assert result["exit_code"] == 0 and result["failures"] == [] and result["errors"] == [], \
        done.stdout[-6000:]
    operations = result["operations"]
    assert operations["tested"] == operations["total"] >= 13
    cases = result["test_cases"]["generated"]
    assert cases >= 13 * 8
    assert all(phase["status"] == "success" for name, phase in result["phases"].items()
               if name != "examples"), result["phases"]
    assert not [status for status in counter.statuses if status >= 500], counter.statuses
    EXAMPLES[f"schemathesis cases ({operations['tested']} operations, "
             f"{sum(counter.statuses.values())} requests answered, 0 failures, 0 x 5xx)"] += cases


def test_the_document_is_served_and_names_every_route(served: tuple[str, str, StatusCounter]
                                                      ) -> None:
    url, _, _ = served
    document = httpx.get(f"{url}/openapi.json").json()
    assert document["openapi"] == "3.1.0"
    assert document["servers"] == [{"url": url}]
    from m2m_guard.local_issuer.issuer import LocalIssuer as Issuer
    with Issuer() as issuer:
        routes = {(route.path, method.lower()) for route in issuer.app.routes
                  for method in getattr(route, "methods", ()) if method != "HEAD"}
    documented = {(path, method) for path, item in document["paths"].items()
                  for method in item if method != "parameters"}
    assert routes - {("/openapi.json", "get")} == documented
