"""Contract driver: the Starlette example (`examples/starlette_app.py`) through Starlette's
`TestClient` (lifespan included, so the guard warms up and closes as in production)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from starlette.testclient import TestClient

from examples.starlette_app import create_app
from m2m_guard import GuardSettings

from .harness import Driver, DriverFactory, Headers, Reply, header_pairs, make_reply


class TestClientDriver:
    """A `Driver` over any httpx-style test client (Starlette's and FastAPI's `TestClient`)."""

    def __init__(self, name: str, client: TestClient) -> None:
        self.name = name
        self.client = client

    def request(self, method: str, path: str, headers: Headers | None = None,
                json: Any = None) -> Reply:
        response = self.client.request(method, path, headers=header_pairs(headers), json=json)
        return make_reply(response.status_code, response.headers.multi_items(), response.content)


@contextmanager
def starlette_driver(settings: GuardSettings) -> Iterator[Driver]:
    with TestClient(create_app(settings)) as client:
        yield TestClientDriver("starlette", client)


DRIVERS: dict[str, DriverFactory] = {"starlette": starlette_driver}
