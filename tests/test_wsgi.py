"""`M2MGuardWSGIMiddleware`: token placement, pass-through rules, errors raised by the app,
lifecycle, parity with the ASGI middleware, threads on a cold cache, and a real waitress server."""

from __future__ import annotations

import io
import logging
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient
from werkzeug.test import Client

from examples.wsgi_app import create_app
from m2m_guard import (
    GuardSettings,
    InsufficientScope,
    TokenVerifier,
    current_token,
    require_scopes,
)
from m2m_guard._core.bearer import authorization_from_environ, split_credentials
from m2m_guard.local_issuer import KeySetServer
from m2m_guard.wsgi import M2MGuardWSGIMiddleware, token_from_environ

from .conftest import deployment_app
from .servers import waitress_server

MISSING = {"error": "missing_token", "error_description": "A bearer token is required."}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def json_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    token = token_from_environ(environ)
    return [b"anonymous" if token is None else token.client_id.encode()]


# -- repeated Authorization headers in an environ -------------------------------------------

@pytest.mark.parametrize(("value", "expected"), [
    ("Bearer abc", ["Bearer abc"]),
    ("Bearer a, Bearer b", ["Bearer a", "Bearer b"]),
    ("Bearer a,Bearer b", ["Bearer a", "Bearer b"]),
    ("Basic dXNl, Bearer tok", ["Basic dXNl", "Bearer tok"]),
    # one credential with commas stays whole, so it is judged as the single header it was
    ('Digest username="x", realm="a, Bearer y", nonce="1"',
     ['Digest username="x", realm="a, Bearer y", nonce="1"']),
    ('Digest a="x\\", Bearer z", b=1', ['Digest a="x\\", Bearer z", b=1']),
    ('Digest a="1", b = 2', ['Digest a="1", b = 2']),
    ("Bearer abc,", ["Bearer abc,"]),
    ("Bearer abc,def", ["Bearer abc,def"]),
    ("Bearer abc, def=", ["Bearer abc, def="]),
])
def test_split_credentials(value: str, expected: list[str]) -> None:
    assert split_credentials(value) == expected


def test_authorization_from_environ() -> None:
    assert authorization_from_environ({}) == []
    assert authorization_from_environ({"HTTP_AUTHORIZATION": "Bearer x"}) == ["Bearer x"]
    assert authorization_from_environ({"HTTP_AUTHORIZATION": "Bearer x, Basic y"}) == [
        "Bearer x", "Basic y"]


# -- where the token is ----------------------------------------------------------------------

def test_token_in_environ_and_context_while_the_body_is_produced(
        settings: GuardSettings, issuer: KeySetServer) -> None:
    seen: dict[str, Any] = {}

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
        seen["environ"] = token_from_environ(environ)
        seen["call"] = current_token()
        start_response("200 OK", [("Content-Type", "text/plain")])

        def body() -> Iterator[bytes]:
            try:
                token = current_token()  # iteration happens after the app returned
                seen["iteration"] = token
                yield (token.client_id if token else "none").encode()
            finally:
                seen["close"] = current_token()

        return body()

    with M2MGuardWSGIMiddleware(app, settings) as guarded:
        response = Client(guarded).get("/anything", headers=bearer(issuer.mint()))
        assert response.status_code == 200
        assert response.get_data() == b"m2morg_68315758685323697"
        response.close()
    token = seen["environ"]
    assert token is not None and token.client_id == "m2morg_68315758685323697"
    assert seen["call"] is token and seen["iteration"] is token and seen["close"] is token
    assert current_token() is None  # nothing leaks into the caller's context


def test_public_path_and_preflight_pass_untouched(make_settings: Callable[..., GuardSettings],
                                                  issuer: KeySetServer) -> None:
    settings = make_settings(public_paths=("/health", "/docs*"))
    with M2MGuardWSGIMiddleware(json_app, settings) as guarded:
        client = Client(guarded)
        for path in ("/health", "/docs/index.html"):
            response = client.get(path, headers={"Authorization": "Bearer a b"})
            assert (response.status_code, response.get_data()) == (200, b"anonymous")
        preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
        assert client.options("/deployments", headers=preflight).status_code == 200
        # OPTIONS without the preflight headers, or preflight not allowed: guarded
        assert client.options("/deployments").status_code == 401
    no_preflight = make_settings(allow_cors_preflight=False)
    with M2MGuardWSGIMiddleware(json_app, no_preflight) as guarded:
        assert Client(guarded).options("/deployments", headers=preflight).status_code == 401
    assert issuer.requests["/keys"] == 0  # nothing on these paths needed the key set


def test_optional_token(make_settings: Callable[..., GuardSettings],
                        issuer: KeySetServer) -> None:
    with M2MGuardWSGIMiddleware(json_app, make_settings(required=False)) as guarded:
        client = Client(guarded)
        assert client.get("/x").get_data() == b"anonymous"
        assert client.get("/x", headers=bearer(issuer.mint())).get_data() == \
            b"m2morg_68315758685323697"
        refused = client.get("/x", headers=bearer("abc.def.ghi"))
        assert refused.status_code == 401 and refused.json["error"] == "invalid_token"


# -- GuardError raised by the wrapped app -------------------------------------------------

def _run_with_wsgiref(app: Any, token: str) -> tuple[str, dict[str, str], bytes]:
    """Run `app` once under wsgiref's PEP 3333 handler; return status line, headers, body."""
    from wsgiref.handlers import SimpleHandler
    from wsgiref.util import setup_testing_defaults

    environ: dict[str, Any] = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    setup_testing_defaults(environ)
    out, err = io.BytesIO(), io.StringIO()
    SimpleHandler(io.BytesIO(), out, err, environ, multithread=True).run(app)
    head, _, body = out.getvalue().partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(": ")
        headers[name.lower()] = value
    return lines[0], headers, body


def test_guard_error_after_start_response_replaces_the_pending_answer(
        settings: GuardSettings, issuer: KeySetServer) -> None:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-App", "1")])
        raise InsufficientScope(("admin:platform",))

    with M2MGuardWSGIMiddleware(app, settings) as guarded:
        status, headers, body = _run_with_wsgiref(guarded, issuer.mint())
    assert status.endswith("403 Forbidden")
    assert "x-app" not in headers
    assert headers["www-authenticate"] == (
        'Bearer realm="api", error="insufficient_scope", error_description="The access token '
        'lacks the scope: admin:platform", scope="admin:platform"')
    assert body == (b'{"error":"insufficient_scope","error_description":"The access token lacks '
                    b'the scope: admin:platform","scope":"admin:platform"}')


def test_guard_error_in_a_generator_before_its_first_chunk_is_rendered(
        settings: GuardSettings, issuer: KeySetServer) -> None:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
        # A lazy body: start_response and the refusal both happen at the first next().
        start_response("200 OK", [("Content-Type", "text/plain")])
        raise InsufficientScope(("deploy:applications",))
        yield b""  # pragma: no cover - makes this a generator

    with M2MGuardWSGIMiddleware(app, settings) as guarded:
        status, headers, body = _run_with_wsgiref(guarded, issuer.mint())
        assert status.endswith("403 Forbidden")
        assert headers["content-type"] == "application/json"
        assert b'"scope":"deploy:applications"' in body

        # Without start_response called first (the Werkzeug client's strict start_response
        # accepts no exc_info), the refusal is the first answer.
        def lazy(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
            raise InsufficientScope(("deploy:applications",))
            yield b""  # pragma: no cover - makes this a generator

        with M2MGuardWSGIMiddleware(lazy, verifier=guarded.verifier) as second:
            response = Client(second).get("/", headers=bearer(issuer.mint()))
            assert response.status_code == 403
            assert response.json["scope"] == "deploy:applications"


def test_guard_error_after_the_first_chunk_propagates(settings: GuardSettings,
                                                      issuer: KeySetServer) -> None:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"partial"
        raise InsufficientScope(("deploy:applications",))

    calls: list[tuple[str, Any]] = []

    def start_response(status: str, headers: list[tuple[str, str]],
                       exc_info: Any = None) -> Callable[[bytes], None]:
        calls.append((status, exc_info))
        return lambda data: None

    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "QUERY_STRING": "",
               "HTTP_AUTHORIZATION": f"Bearer {issuer.mint()}"}
    with M2MGuardWSGIMiddleware(app, settings) as guarded:
        body = iter(guarded(environ, start_response))
        assert next(body) == b"partial"
        with pytest.raises(InsufficientScope):
            next(body)
    assert calls == [("200 OK", None)]  # the answer had started: no second start_response


# -- lifecycle ---------------------------------------------------------------------------

def test_close_stops_an_owned_verifier_only(settings: GuardSettings) -> None:
    owned = M2MGuardWSGIMiddleware(json_app, settings)
    owned.close()
    assert owned.verifier.key_store.closed
    shared = TokenVerifier(settings)
    with M2MGuardWSGIMiddleware(json_app, verifier=shared):
        pass
    assert not shared.key_store.closed
    shared.close()
    with pytest.raises(ValueError, match="either settings or a verifier"):
        M2MGuardWSGIMiddleware(json_app, settings.replace(realm="other"), verifier=shared)


def test_warm_up_loads_keys_and_tolerates_a_down_issuer(
        settings: GuardSettings, issuer: KeySetServer, caplog: pytest.LogCaptureFixture) -> None:
    with M2MGuardWSGIMiddleware(json_app, settings, warm_up=True) as guarded:
        assert issuer.requests["/keys"] == 1
        assert guarded.verifier.health()["ready"]
    issuer.stop()
    with caplog.at_level(logging.WARNING, logger="m2m_guard"), \
            M2MGuardWSGIMiddleware(json_app, settings, warm_up=True) as cold:
        assert not cold.verifier.health()["ready"]
        assert "could not warm up" in caplog.text
        assert not cold.warm_up()


def test_settings_default_to_the_environment(issuer: KeySetServer,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("M2M_GUARD_ISSUER", issuer.url)
    monkeypatch.setenv("M2M_GUARD_AUDIENCE", "deployment-api")
    with create_app() as app:
        assert app.settings.public_paths == ("/health",)
        client = Client(app)
        assert client.get("/health").status_code == 200
        assert client.get("/deployments", headers=bearer(issuer.mint())).status_code == 200


# -- parity with the ASGI middleware -------------------------------------------------------

ODD_REQUESTS: list[tuple[str, list[tuple[str, str]]]] = [
    ("/deployments", [("Authorization", "Bearer\tabc.def.ghi")]),
    ("/deployments", [("Authorization", "  Bearer   ")]),
    ("/deployments", [("Authorization", "bearer abc.def.ghi")]),
    ("/deployments", [("Authorization", "Bearer abc,def")]),
    ("/deployments", [("Authorization", 'Digest username="x", realm="y"')]),
    ("/deployments", [("Authorization", "Basic a"), ("Authorization", "Basic b")]),
    ("/deployments?x=1&access%5Ftoken=abc", []),
    ("/deployments?my_access_token=1", []),
    ("/deployments", [("Authorization", "Bearer " + "a" * 20000)]),
    ("/deployments", [("Authorization", "Bearer e30.e30.")]),
    ("/nowhere", []),
]


@pytest.mark.parametrize(("path", "headers"), ODD_REQUESTS)
def test_same_answer_as_the_asgi_middleware(settings: GuardSettings, path: str,
                                            headers: list[tuple[str, str]]) -> None:
    with TestClient(deployment_app(settings)) as asgi, \
            M2MGuardWSGIMiddleware(json_app, settings) as guarded:
        expected = asgi.get(path, headers=headers)
        got = Client(guarded).get(path, headers=headers)
        assert got.status_code == expected.status_code
        assert got.headers.get("www-authenticate") == expected.headers.get("www-authenticate")
        assert got.headers.get("content-length") == expected.headers.get("content-length")
        assert got.get_data() == expected.content


# -- threads on a cold cache -----------------------------------------------------------------

def test_sixteen_threads_on_a_cold_cache_fetch_the_key_set_once(
        settings: GuardSettings, issuer: KeySetServer) -> None:
    issuer.set_fault("slow", delay=0.3)  # every thread arrives while the one fetch runs
    tokens = [issuer.mint() for _ in range(16)]
    barrier = threading.Barrier(16)
    statuses: list[int] = []
    lock = threading.Lock()

    with M2MGuardWSGIMiddleware(json_app, settings) as guarded:
        def worker(token: str) -> None:
            client = Client(guarded)
            barrier.wait(5)
            for _ in range(3):
                status = client.get("/deployments", headers=bearer(token)).status_code
                with lock:
                    statuses.append(status)

        threads = [threading.Thread(target=worker, args=(t,)) for t in tokens]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert statuses == [200] * 48
    assert issuer.requests["/keys"] == 1
    assert issuer.requests["/.well-known/openid-configuration"] == 1


# -- end to end: the example under waitress, a real key-set server, httpx ------------------

def test_example_under_waitress(make_settings: Callable[..., GuardSettings],
                                issuer: KeySetServer) -> None:
    issuer.set_fault("slow", delay=0.3)
    settings = make_settings(public_paths=("/health",))
    barrier = threading.Barrier(16)
    statuses: list[int] = []
    lock = threading.Lock()
    with create_app(settings) as app, waitress_server(app, threads=16) as port:
        base = f"http://127.0.0.1:{port}"

        def worker() -> None:
            token = issuer.mint()
            with httpx.Client(base_url=base, timeout=10) as client:
                barrier.wait(5)
                for _ in range(3):
                    status = client.get("/deployments", headers=bearer(token)).status_code
                    with lock:
                        statuses.append(status)

        threads = [threading.Thread(target=worker) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert statuses == [200] * 48
        assert issuer.requests["/keys"] == 1  # 16 server threads, one fetch

        issuer.set_fault(None)
        token = issuer.mint()
        with httpx.Client(base_url=base, timeout=10) as client:
            assert client.get("/health").json() == {"status": "ok"}
            created = client.post("/deployments", headers=bearer(token),
                                  json={"service": "billing", "version": "1.5.0"})
            assert created.status_code == 202
            assert created.json()["requested_by"] == "m2morg_68315758685323697"
            missing = client.get("/deployments")
            assert (missing.status_code, missing.json()) == (401, MISSING)
            assert missing.headers["www-authenticate"] == 'Bearer realm="api"'
            # two real Authorization headers, joined by waitress before the app sees them
            doubled = client.get("/deployments", headers=[("Authorization", f"Bearer {token}"),
                                                          ("Authorization", f"Bearer {token}")])
            assert doubled.status_code == 400
            assert doubled.json()["error_description"] == (
                "The request has more than one Authorization header.")
            scope = client.get("/admin/audit", headers=bearer(token))
            assert scope.status_code == 403
            assert scope.headers["www-authenticate"].endswith('scope="admin:platform"')


def test_docs_snippet_runs(issuer: KeySetServer, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "wsgi.md").read_text(encoding="utf-8")
    snippet = re.findall(r"```python\n(.*?)```", doc, flags=re.DOTALL)[0]
    monkeypatch.setenv("M2M_GUARD_ISSUER", issuer.url)
    monkeypatch.setenv("M2M_GUARD_AUDIENCE", "deployment-api")
    namespace: dict[str, Any] = {"__name__": "docs_wsgi_app"}
    exec(compile(snippet, "docs/wsgi.md", "exec"), namespace)
    with namespace["app"] as app:
        assert issuer.requests["/keys"] == 1  # warm_up=True
        client = Client(app)
        assert client.get("/health").json == {"status": "ok"}
        assert client.get("/deployments", headers=bearer(issuer.mint())).json == {
            "deployments": [], "client": "m2morg_68315758685323697"}
        assert client.get("/deployments").status_code == 401
        narrow = issuer.mint(scopes=["deploy:applications"])
        assert client.get("/deployments", headers=bearer(narrow)).status_code == 403


def test_guard_error_raised_on_a_public_path_is_answered_not_a_500(
        make_settings: Callable[..., GuardSettings]) -> None:
    """As in the ASGI middleware: a view under a public prefix that still demands scopes gets
    the contract's 401, and the environ is left untouched."""
    seen: list[bool] = []

    @require_scopes("admin:platform")
    def admin(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        raise AssertionError("require_scopes lets no request without a token through")

    def probe(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        seen.append("m2m_guard.token" in environ)
        return admin(environ, start_response)

    guarded = M2MGuardWSGIMiddleware(probe, make_settings(public_paths=("/open/*",)))
    try:
        answer = Client(guarded).get("/open/admin")
    finally:
        guarded.close()
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"] == 'Bearer realm="api"'
    assert answer.get_json()["error"] == "missing_token"
    assert seen == [False]
