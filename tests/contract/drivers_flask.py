"""Contract driver: the Flask example (`examples/flask_app.py`) through Flask's test client."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from examples.flask_app import create_app, guard
from m2m_guard import GuardSettings

from .drivers_wsgi import WerkzeugDriver
from .harness import Driver, DriverFactory


@contextmanager
def flask_driver(settings: GuardSettings) -> Iterator[Driver]:
    app = create_app(settings)
    try:
        yield WerkzeugDriver("flask", app.test_client())
    finally:
        guard.verifier_for(app).close()


DRIVERS: dict[str, DriverFactory] = {"flask": flask_driver}
