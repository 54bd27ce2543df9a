"""Contract driver: the plain WSGI example (`examples/wsgi_app.py`) through Werkzeug's test
client, which hands repeated request headers to the app joined by commas, as WSGI servers do."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from werkzeug.test import Client

from examples.wsgi_app import create_app
from m2m_guard import GuardSettings

from .harness import Driver, DriverFactory, Headers, Reply, header_pairs, make_reply


class WerkzeugDriver:
    """A `Driver` over Werkzeug's test `Client` (plain WSGI apps and Flask)."""

    def __init__(self, name: str, client: Client) -> None:
        self.name = name
        self.client = client

    def request(self, method: str, path: str, headers: Headers | None = None,
                json: Any = None) -> Reply:
        response = self.client.open(path, method=method, headers=header_pairs(headers),
                                    json=json)
        try:
            return make_reply(response.status_code, response.headers.to_wsgi_list(),
                              response.get_data())
        finally:
            response.close()


@contextmanager
def wsgi_driver(settings: GuardSettings) -> Iterator[Driver]:
    with create_app(settings) as app:
        yield WerkzeugDriver("wsgi", Client(app))


DRIVERS: dict[str, DriverFactory] = {"wsgi": wsgi_driver}
