"""Contract drivers: the Django example project (`examples/django_project`) three ways.

- ``django-sync``: the plain views (function views and the class-based mixin) behind
  `M2MGuardMiddleware`, through Django's test `Client` (the WSGI handler, sync middleware path);
- ``django-async``: the async views through `AsyncClient` (the ASGI handler, async middleware
  path, ``await verifier.verify``), on one event loop kept for the driver's lifetime;
- ``drf``: the Django REST framework views with `M2MGuardAuthentication`, `HasScopes` and
  `m2m_guard.drf.exception_handler` and no middleware, through `Client`; without the middleware,
  the health endpoint and the RFC 9728 document are served by `operational_urls()` in the
  URLconf, as docs/drf.md tells DRF users to do.

Django's settings are process-wide: each driver overrides ``M2M_GUARD`` (with the given
`GuardSettings`), ``ROOT_URLCONF`` and ``MIDDLEWARE`` for its lifetime, and on exit closes and
forgets the verifiers it caused, so the next driver starts cold as a new process would.
"""

from __future__ import annotations

import json as jsonlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from anyio.from_thread import BlockingPortal, start_blocking_portal
from django.test import AsyncClient, Client, override_settings

from m2m_guard import GuardSettings
from tests.django_settings import URLs, setup_django

from .harness import Driver, DriverFactory, Headers, Reply, joined_headers, make_reply

setup_django()

from examples.django_project import urls  # noqa: E402  (needs Django configured)
from m2m_guard.django import close_verifiers, get_verifier, operational_urls  # noqa: E402

WITHOUT_GUARD_MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]


def _body(json: Any) -> dict[str, Any]:
    if json is None:
        return {}
    return {"data": jsonlib.dumps(json), "content_type": "application/json"}


class ClientDriver:
    """Django's sync test `Client` (WSGI handler)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.client = Client(raise_request_exception=False)

    def request(self, method: str, path: str, headers: Headers | None = None,
                json: Any = None) -> Reply:
        response = self.client.generic(method, path, headers=joined_headers(headers),
                                       **_body(json))
        return make_reply(response.status_code, response.headers.items(), response.content)


class AsyncClientDriver:
    """Django's `AsyncClient` (ASGI handler), driven on the portal's event loop."""

    def __init__(self, name: str, portal: BlockingPortal) -> None:
        self.name = name
        self.portal = portal
        self.client = AsyncClient(raise_request_exception=False)

    def request(self, method: str, path: str, headers: Headers | None = None,
                json: Any = None) -> Reply:
        async def send() -> Any:
            return await self.client.generic(method, path, headers=joined_headers(headers),
                                             **_body(json))

        response = self.portal.call(send)
        return make_reply(response.status_code, response.headers.items(), response.content)


@contextmanager
def _django(settings: GuardSettings, patterns: list[Any], **extra: Any) -> Iterator[None]:
    with override_settings(M2M_GUARD=settings, ROOT_URLCONF=URLs(patterns), **extra):
        try:
            yield
        finally:
            close_verifiers()


@contextmanager
def django_sync_driver(settings: GuardSettings) -> Iterator[Driver]:
    with _django(settings, urls.sync_urlpatterns):
        yield ClientDriver("django-sync")


@contextmanager
def django_async_driver(settings: GuardSettings) -> Iterator[Driver]:
    with _django(settings, urls.async_urlpatterns), start_blocking_portal() as portal:
        try:
            yield AsyncClientDriver("django-async", portal)
        finally:
            # Stop background refreshes on the loop that started them, before it closes.
            portal.call(get_verifier(settings).aclose)


@contextmanager
def drf_driver(settings: GuardSettings) -> Iterator[Driver]:
    with _django(settings, urls.api_urlpatterns, MIDDLEWARE=WITHOUT_GUARD_MIDDLEWARE), \
            override_settings(ROOT_URLCONF=URLs([*urls.api_urlpatterns, *operational_urls()])):
        yield ClientDriver("drf")


DRIVERS: dict[str, DriverFactory] = {
    "django-sync": django_sync_driver,
    "django-async": django_async_driver,
    "drf": drf_driver,
}
