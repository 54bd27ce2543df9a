"""The Flask extension: configuration, factories, blueprints, public endpoints, where the token
is, errors raised in views, lifecycle, and the example under a real WSGI server."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from flask import Blueprint, Flask, Response, g, jsonify, stream_with_context

from examples.flask_app import create_app
from m2m_guard import ConfigurationError, GuardSettings, InsufficientScope, current_token
from m2m_guard.flask import M2MGuard, require_any_scope, require_scopes, settings_from_config
from m2m_guard.local_issuer import KeySetServer

from .servers import waitress_server

CLIENT_ID = "m2morg_68315758685323697"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- configuration ---------------------------------------------------------------------------

def test_app_config_over_the_environment(issuer: KeySetServer) -> None:
    environ = {"M2M_GUARD_ISSUER": issuer.url, "M2M_GUARD_AUDIENCE": "from-env",
               "M2M_GUARD_REALM": "env-realm"}
    settings = settings_from_config({
        "M2M_GUARD_AUDIENCE": "deployment-api, other-api",  # strings read like the variable
        "M2M_GUARD_PUBLIC_PATHS": ["/health", "/docs*"],    # native values taken as they are
        "M2M_GUARD_JWKS_REFETCH_COOLDOWN": "5s",
        "M2M_GUARD_STRICT_TYP": True,
        "SECRET_KEY": "unrelated",
    }, environ)
    assert settings.audiences == ("deployment-api", "other-api")
    assert settings.public_paths == ("/health", "/docs*")
    assert settings.jwks_refetch_cooldown == 5.0
    assert settings.strict_typ is True
    assert settings.realm == "env-realm"
    assert settings.issuers[0].issuer == issuer.url


def test_unknown_or_invalid_config_is_a_clear_error(issuer: KeySetServer) -> None:
    environ = {"M2M_GUARD_ISSUER": issuer.url}
    with pytest.raises(ConfigurationError, match=r"app\.config: M2M_GUARD_AUDEINCE "
                                                 r"\(did you mean M2M_GUARD_AUDIENCE\?\)"):
        settings_from_config({"M2M_GUARD_AUDEINCE": "x"}, environ)
    with pytest.raises(ConfigurationError, match="M2M_GUARD_leeway"):
        settings_from_config({"M2M_GUARD_AUDIENCE": "x", "M2M_GUARD_leeway": 5}, environ)
    with pytest.raises(ConfigurationError, match="M2M_GUARD_LEEWAY='soon' is invalid"):
        settings_from_config({"M2M_GUARD_AUDIENCE": "x", "M2M_GUARD_LEEWAY": "soon"}, environ)
    with pytest.raises(ConfigurationError, match="M2M_GUARD_AUDIENCE is not set"):
        settings_from_config({}, environ)
    app = Flask(__name__)
    app.config["M2M_GUARD_AUDEINCE"] = "x"
    with pytest.raises(ConfigurationError, match="M2M_GUARD_AUDEINCE"):
        M2MGuard(app)


# -- a small app with blueprints -------------------------------------------------------------

def build_app(guard: M2MGuard, settings: GuardSettings | None = None) -> Flask:
    app = Flask(__name__)
    api = Blueprint("api", __name__, url_prefix="/api")
    status = Blueprint("status", __name__)

    @api.get("/deployments")
    @require_scopes("read:deployments")
    def deployments() -> Any:
        token = current_token()
        assert token is g.m2m_token
        return jsonify(client=token.client_id, scopes=sorted(token.scopes))

    @api.get("/audit")
    @require_any_scope("audit:read", "read:deployments")
    def audit() -> Any:
        return jsonify(ok=True)

    @api.get("/manual")
    def manual() -> Any:
        raise InsufficientScope(("billing:read",))

    @status.get("/ping")
    @guard.public
    def ping() -> Any:
        return jsonify(token=g.m2m_token, current=current_token())

    @status.get("/version")
    def version() -> Any:
        return jsonify(version="1")

    @status.get("/info")
    def info() -> Any:
        return jsonify(info="m2m")

    app.register_blueprint(api)
    app.register_blueprint(status)
    guard.init_app(app, settings=settings)
    return app


def test_views_see_the_token_and_scopes_are_enforced(settings: GuardSettings,
                                                     issuer: KeySetServer) -> None:
    guard = M2MGuard(public_endpoints=("status.version",))
    app = build_app(guard, settings)
    client = app.test_client()
    token = issuer.mint()
    ok = client.get("/api/deployments", headers=bearer(token))
    assert ok.json == {"client": CLIENT_ID,
                       "scopes": ["deploy:applications", "read:deployments"]}
    assert current_token() is None  # reset after the request
    assert client.get("/api/audit", headers=bearer(token)).json == {"ok": True}
    narrow = issuer.mint(scopes=["deploy:applications"])
    refused = client.get("/api/audit", headers=bearer(narrow))
    assert refused.status_code == 403
    assert refused.headers["WWW-Authenticate"] == (
        'Bearer realm="api", error="insufficient_scope", error_description="The access token '
        'lacks one of the scopes: audit:read read:deployments", '
        'scope="audit:read read:deployments"')
    # a GuardError raised by a view is rendered too
    manual = client.get("/api/manual", headers=bearer(token))
    assert manual.status_code == 403
    assert manual.json == {"error": "insufficient_scope", "scope": "billing:read",
                           "error_description": "The access token lacks the scope: billing:read"}
    assert manual.headers["Cache-Control"] == "no-store"
    assert int(manual.headers["Content-Length"]) == len(manual.get_data())


def test_streamed_response_reads_the_token_from_g(settings: GuardSettings,
                                                  issuer: KeySetServer) -> None:
    app = Flask(__name__)
    M2MGuard(app, settings)

    @app.get("/stream")
    def stream() -> Any:
        def chunks() -> Any:
            yield g.m2m_token.client_id.encode()
            yield repr(current_token()).encode()

        return Response(stream_with_context(chunks()))

    response = app.test_client().get("/stream", headers=bearer(issuer.mint()))
    assert response.get_data() == CLIENT_ID.encode() + b"None"  # as docs/flask.md says


def test_public_endpoints_and_paths(make_settings: Callable[..., GuardSettings],
                                    issuer: KeySetServer) -> None:
    guard = M2MGuard(public_endpoints=("status.version",))
    app = build_app(guard, make_settings(public_paths=("/info", "/api/audit")))
    client = app.test_client()
    # decorator, endpoint name and public path: no credentials read, even broken ones
    for path in ("/ping", "/version", "/info"):
        response = client.get(path, headers={"Authorization": "Bearer a b"})
        assert response.status_code == 200, path
    assert client.get("/ping").json == {"token": None, "current": None}
    # a public path does not lift a view's own scope requirement (as in every adapter)
    assert client.get("/api/audit").status_code == 401
    assert issuer.requests["/keys"] == 0
    # unknown paths and wrong methods are guarded before routing, as in every adapter
    assert client.get("/nowhere").status_code == 401
    assert client.post("/api/deployments").status_code == 401
    assert client.get("/nowhere", headers=bearer(issuer.mint())).status_code == 404
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "GET"}
    assert client.options("/api/deployments", headers=preflight).status_code == 200


def test_one_verifier_per_app_in_factories(make_settings: Callable[..., GuardSettings],
                                           issuer: KeySetServer) -> None:
    guard = M2MGuard()
    first = build_app(guard, make_settings())
    second = build_app(guard, make_settings(realm="second"))
    assert guard.verifier_for(first) is not guard.verifier_for(second)
    with first.app_context():
        assert guard.verifier is guard.verifier_for(first)
    for _ in range(5):
        assert first.test_client().get("/api/deployments",
                                       headers=bearer(issuer.mint())).status_code == 200
    assert issuer.requests["/keys"] == 1
    assert second.test_client().get("/api/deployments").headers["WWW-Authenticate"] == \
        'Bearer realm="second"'
    with pytest.raises(RuntimeError, match="already initialised"):
        guard.init_app(first)
    with pytest.raises(RuntimeError, match="not initialised"):
        guard.verifier_for(Flask(__name__))
    guard.close()
    assert guard.verifier_for(first).key_store.closed
    assert guard.verifier_for(second).key_store.closed


def test_warm_up_at_init(settings: GuardSettings, issuer: KeySetServer,
                         caplog: pytest.LogCaptureFixture) -> None:
    guard = M2MGuard(settings=settings, warm_up=True)
    app = build_app(guard)
    assert issuer.requests["/keys"] == 1
    assert guard.verifier_for(app).health()["ready"]
    issuer.stop()
    with caplog.at_level(logging.WARNING, logger="m2m_guard"):
        build_app(M2MGuard(settings=settings, warm_up=True))  # must not raise
    assert "could not warm up" in caplog.text


def test_example_reads_app_config_and_environment(issuer: KeySetServer,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("M2M_GUARD_ISSUER", issuer.url)
    monkeypatch.setenv("M2M_GUARD_AUDIENCE", "deployment-api")
    app = create_app()  # what `flask --app examples.flask_app run` builds
    client = app.test_client()
    assert client.get("/health").json == {"status": "ok"}
    assert client.get("/deployments", headers=bearer(issuer.mint())).status_code == 200


def test_example_under_waitress(make_settings: Callable[..., GuardSettings],
                                issuer: KeySetServer) -> None:
    issuer.set_fault("slow", delay=0.2)
    app = create_app(make_settings(public_paths=("/health",)))
    barrier = threading.Barrier(8)
    statuses: list[int] = []
    lock = threading.Lock()
    with waitress_server(app, threads=8) as port:
        base = f"http://127.0.0.1:{port}"

        def worker() -> None:
            with httpx.Client(base_url=base, timeout=10) as client:
                barrier.wait(5)
                status = client.get("/deployments", headers=bearer(issuer.mint())).status_code
                with lock:
                    statuses.append(status)

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert statuses == [200] * 8
        assert issuer.requests["/keys"] == 1
        issuer.set_fault(None)
        with httpx.Client(base_url=base, timeout=10) as client:
            created = client.post("/deployments", headers=bearer(issuer.mint()),
                                  json={"service": "billing", "version": "1.5.0"})
            assert created.status_code == 202
            assert created.json()["requested_by"] == CLIENT_ID
            refused = client.get("/admin/audit", headers=bearer(issuer.mint()))
            assert refused.status_code == 403
            assert refused.json()["scope"] == "admin:platform"
            missing = client.get("/deployments")
            assert missing.status_code == 401
            assert missing.headers["www-authenticate"] == 'Bearer realm="api"'
            assert client.get("/health").status_code == 200


def test_docs_snippet_runs(issuer: KeySetServer, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "flask.md").read_text(encoding="utf-8")
    snippet = re.findall(r"```python\n(.*?)```", doc, flags=re.DOTALL)[0]
    monkeypatch.setenv("M2M_GUARD_ISSUER", issuer.url)
    namespace: dict[str, Any] = {"__name__": "docs_flask_app"}
    exec(compile(snippet, "docs/flask.md", "exec"), namespace)
    app = namespace["create_app"]()
    client = app.test_client()
    token = issuer.mint()
    assert client.get("/health").json == {"status": "ok"}
    assert client.get("/deployments", headers=bearer(token)).json == {
        "deployments": [], "client": CLIENT_ID}
    deployed = client.post("/deployments", headers=bearer(token))
    assert (deployed.status_code, deployed.json["requested_by"]) == (202, CLIENT_ID)
    audit = client.get("/audit", headers=bearer(token))
    assert audit.status_code == 403
    assert audit.json["scope"] == "audit:read admin:platform"
    namespace["guard"].close()


def test_verifier_closed_when_the_app_goes_away(settings: GuardSettings) -> None:
    import gc

    guard = M2MGuard(settings=settings)
    app = build_app(guard)
    verifier = guard.verifier_for(app)
    assert not verifier.key_store.closed
    del app
    gc.collect()
    assert verifier.key_store.closed
