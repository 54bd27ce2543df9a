"""Contract driver: the FastAPI example (`examples/fastapi_app.py`, dependency form) through
FastAPI's `TestClient` (lifespan included, so the guard's verifier warms up and closes as in
production)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from fastapi.testclient import TestClient

from examples.fastapi_app import create_app
from m2m_guard import GuardSettings

from .drivers_starlette import TestClientDriver
from .harness import Driver, DriverFactory


@contextmanager
def fastapi_driver(settings: GuardSettings) -> Iterator[Driver]:
    with TestClient(create_app(settings)) as client:
        yield TestClientDriver("fastapi", client)


DRIVERS: dict[str, DriverFactory] = {"fastapi": fastapi_driver}
