"""The cache-hit fast path under WSGI and Django: a cached token sent as exactly
``Bearer <token>`` is answered without the full path (no second `verify_sync`), with the same
token object and the same answer; every other shape of request takes the full path and gets the
answer it always got."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
from werkzeug.test import Client as WerkzeugClient

from m2m_guard import GuardSettings, TokenVerifier
from m2m_guard.local_issuer import KeySetServer
from m2m_guard.wsgi import M2MGuardWSGIMiddleware, token_from_environ

from .django_settings import URLs, setup_django

setup_django()

from django.http import HttpRequest, JsonResponse  # noqa: E402
from django.test import Client as DjangoClient  # noqa: E402
from django.test import override_settings  # noqa: E402
from django.urls import path  # noqa: E402

from m2m_guard.django import close_verifiers, get_verifier, request_token  # noqa: E402

SEEN: list[Any] = []


class Counting:
    """Wraps a verifier's `verify_sync` (an instance attribute): how often the full path ran."""

    def __init__(self, verifier: TokenVerifier) -> None:
        self.calls = 0
        self._verify = verifier.verify_sync
        verifier.verify_sync = self  # type: ignore[method-assign]

    def __call__(self, token: str) -> Any:
        self.calls += 1
        return self._verify(token)


def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    SEEN.append(token_from_environ(environ))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


@pytest.fixture
def wsgi(make_settings: Callable[..., GuardSettings]
         ) -> Iterator[tuple[WerkzeugClient, Counting]]:
    SEEN.clear()
    verifier = TokenVerifier(make_settings(public_paths=["/public"]))
    counting = Counting(verifier)
    yield WerkzeugClient(M2MGuardWSGIMiddleware(wsgi_app, verifier=verifier)), counting
    verifier.close()


def test_wsgi_serves_a_cached_token_without_the_full_path(
        wsgi: tuple[WerkzeugClient, Counting], issuer: KeySetServer) -> None:
    client, counting = wsgi
    token = issuer.mint()
    for _ in range(3):
        assert client.get("/", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert counting.calls == 1  # the first request verified it; the others were hits
    assert SEEN[0] is SEEN[1] is SEEN[2] and SEEN[0] is not None


@pytest.mark.parametrize(("value", "query", "status", "full_path"), [
    ("Bearer {t}", "access_token=x", 400, False),  # a token in the query: refused first
    ("Bearer {t}, Bearer {t}", "", 400, False),  # two credentials joined by the server
    ("Bearer {t},", "", 401, False),  # malformed: invalid_token
    ("bearer {t}", "", 200, True),
    ("Bearer  {t}", "", 200, True),
    ("Bearer {t}x", "", 401, True),
    ("Basic {t}", "", 401, False),
])
def test_wsgi_other_shapes_get_the_full_paths_answer(
        wsgi: tuple[WerkzeugClient, Counting], issuer: KeySetServer, value: str, query: str,
        status: int, full_path: bool) -> None:
    client, counting = wsgi
    token = issuer.mint()
    assert client.get("/", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    response = client.get("/", query_string=query,
                          headers={"Authorization": value.format(t=token)})
    assert response.status_code == status
    assert counting.calls == 1 + full_path
    if status == 200:
        assert SEEN[-1] is SEEN[0]  # the cached token, found by the full path


def test_wsgi_public_path_with_a_cached_token_passes_untouched(
        wsgi: tuple[WerkzeugClient, Counting], issuer: KeySetServer) -> None:
    client, _ = wsgi
    token = issuer.mint()
    assert client.get("/", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert client.get("/public", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert SEEN[-1] is None


def test_wsgi_hits_are_reported_while_events_are_subscribed(
        make_settings: Callable[..., GuardSettings], issuer: KeySetServer) -> None:
    events: list[Any] = []
    verifier = TokenVerifier(make_settings(), on_event=events.append)
    client = WerkzeugClient(M2MGuardWSGIMiddleware(wsgi_app, verifier=verifier))
    token = issuer.mint()
    for _ in range(2):
        assert client.get("/", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert [e.cached for e in events if e.kind == "allowed"] == [False, True]
    verifier.close()


def whoami(request: HttpRequest) -> JsonResponse:
    token = request_token(request)
    SEEN.append(token)
    return JsonResponse({"client_id": token.client_id if token else None})


@pytest.fixture
def django_client(make_settings: Callable[..., GuardSettings]
                  ) -> Iterator[tuple[DjangoClient, Counting]]:
    SEEN.clear()
    settings = make_settings(public_paths=("/public",))
    with override_settings(M2M_GUARD=settings,
                           ROOT_URLCONF=URLs([path("", whoami), path("public", whoami)])):
        try:
            yield DjangoClient(), Counting(get_verifier())
        finally:
            close_verifiers()


def test_django_serves_a_cached_token_without_the_full_path(
        django_client: tuple[DjangoClient, Counting], issuer: KeySetServer) -> None:
    client, counting = django_client
    token = issuer.mint()
    for _ in range(3):
        response = client.get("/", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200
        assert response.json() == {"client_id": "m2morg_68315758685323697"}
    assert counting.calls == 1
    assert SEEN[0] is SEEN[1] is SEEN[2]


@pytest.mark.parametrize(("value", "query", "status", "full_path"), [
    ("Bearer {t}", "access_token=x", 400, False),
    ("Bearer {t}, Bearer {t}", "", 400, False),
    ("bearer {t}", "", 200, True),
    ("Bearer {t}x", "", 401, True),
])
def test_django_other_shapes_get_the_full_paths_answer(
        django_client: tuple[DjangoClient, Counting], issuer: KeySetServer, value: str,
        query: str, status: int, full_path: bool) -> None:
    client, counting = django_client
    token = issuer.mint()
    assert client.get("/", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    response = client.get("/" + ("?" + query if query else ""),
                          headers={"Authorization": value.format(t=token)})
    assert response.status_code == status
    assert counting.calls == 1 + full_path


def test_django_public_path_with_a_cached_token_passes_untouched(
        django_client: tuple[DjangoClient, Counting], issuer: KeySetServer) -> None:
    client, _ = django_client
    token = issuer.mint()
    assert client.get("/", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert client.get("/public", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert SEEN[-1] is None
