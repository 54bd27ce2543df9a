"""`m2m-guard demo`: the whole machine-to-machine flow on loopback, call by call.

1. The local issuer starts (in memory) and the deployment API starts under uvicorn, guarded by
   m2m_guard and trusting that issuer; both on free 127.0.0.1 ports.
2. The environment API client gets a management token (``POST /oauth/token``) and registers the
   "GitHub Actions Deployment Service" client as in Scalekit's quickstart
   (``POST /api/v1/organizations/{org}/clients``).
3. That client gets its access token with the client-credentials grant.
4. It calls the API: allowed calls, a route needing a scope it lacks (403 with ``scope=``), no
   token (401), a tampered token (401).
5. DPoP (RFC 9449): the client gets a token bound to its key (a proof at ``/oauth/token``), calls
   the API with a fresh proof (allowed); the same proof replayed is refused, and so is the bound
   token sent as a plain Bearer token, as a thief holding only the token would.
6. With the ``emulator`` extra: Scalekit's Python quickstart, run with the official SDK
   (`scalekit_quickstart`): gRPC registration, token, the API, validation. The issuer is then
   served over HTTPS with the gRPC service (a temporary local CA, which the guard trusts by its
   ``ca_bundle`` setting); without the extra, over plain HTTP as before, and step 6 says so.

Every step is real HTTP; the transcript shows each call's status, and the exit code is 1 if any
status differs from the expected one. `run_demo` takes the API's app factory, so the source
tree's ``examples/demo.py`` runs it with ``examples/starlette_app.py``; the installed command uses
the same deployment API built in below.
"""

from __future__ import annotations

import argparse
import json
import secrets
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

import httpx

from .._core.encoding import b64url_decode, b64url_encode
from ..settings import GuardSettings
from .common import EXIT_FAILED, EXIT_OK, CommandError, wait_for_stop

__all__ = ["AUDIENCE", "CLIENT_REGISTRATION", "ORGANIZATION_ID", "deployment_api", "run",
           "run_demo", "tamper"]

ORGANIZATION_ID = "org_59615193906282635"
AUDIENCE = "deployment-api.acmecorp.com"
# The registration of Scalekit's M2M quickstart.
CLIENT_REGISTRATION: dict[str, Any] = {
    "name": "GitHub Actions Deployment Service",
    "description": "Service account for GitHub Actions to deploy applications to production",
    "custom_claims": [{"key": "environment", "value": "production"},
                      {"key": "service", "value": "deployment"}],
    "scopes": ["deploy:applications", "read:deployments"],
    "audience": [AUDIENCE],
    "expiry": 3600,
}

AppFactory = Callable[[GuardSettings], Any]


def deployment_api(settings: GuardSettings) -> Any:
    """The deployment API of ``examples/starlette_app.py``, for installs without the examples.

    ``GET /deployments`` needs ``read:deployments``, ``POST /deployments`` needs
    ``deploy:applications``, ``GET /admin/audit`` needs ``admin:platform``; ``/health`` is public.
    """
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from .._core.context import current_token, require_scopes
    from ..asgi import M2MGuardMiddleware

    deployments = [{"id": "dep_1", "service": "billing", "version": "1.4.2", "status": "live"}]

    @require_scopes("read:deployments")
    async def list_deployments(request: Request) -> JSONResponse:
        return JSONResponse({"deployments": deployments})

    @require_scopes("deploy:applications")
    async def deploy(request: Request) -> JSONResponse:
        token = current_token()
        assert token is not None  # require_scopes guarantees it
        body = await request.json()
        return JSONResponse({"id": f"dep_{len(deployments) + 1}", "service": body.get("service"),
                             "version": body.get("version"), "status": "queued",
                             "requested_by": token.client_id,
                             "organization": token.organization_id}, status_code=202)

    @require_scopes("admin:platform")
    async def admin_audit(request: Request) -> JSONResponse:
        return JSONResponse({"audit": []})

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[Route("/deployments", list_deployments, methods=["GET"]),
                Route("/deployments", deploy, methods=["POST"]),
                Route("/admin/audit", admin_audit), Route("/health", health)],
        middleware=[Middleware(M2MGuardMiddleware, settings=settings)])


@contextmanager
def serve_app(app: Any, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve an ASGI `app` with uvicorn on a free port of `host`, in a thread; yield its URL."""
    try:
        import uvicorn
    except ImportError:
        raise CommandError("the demo needs uvicorn: pip install 'm2m-guard[server]'") from None
    config = uvicorn.Config(app, host=host, port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="m2m-guard-demo-api", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 15
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise CommandError("the deployment API did not start", EXIT_FAILED)
            time.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def tamper(token: str) -> str:
    """The token with ``admin:platform`` added to its scopes and the signature kept: what an
    attacker who holds a token might try. The guard must refuse it."""
    header, payload, signature = token.split(".")
    claims = json.loads(b64url_decode(payload))
    claims["scopes"] = [*claims.get("scopes", []), "admin:platform"]
    if isinstance(claims.get("scope"), str):
        claims["scope"] += " admin:platform"
    forged = b64url_encode(json.dumps(claims, separators=(",", ":")).encode())
    return ".".join((header, forged, signature))


class _Transcript:
    """Prints each call as ``[ok ] METHOD path  what  -> status`` and counts surprises."""

    def __init__(self, out: TextIO | None) -> None:
        self.out = out
        self.failures = 0

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def call(self, http: httpx.Client, method: str, url: str, what: str, expected: int,
             *, shown_path: str | None = None, show_body: bool = False,
             **options: Any) -> httpx.Response:
        response = http.request(method, url, **options)
        ok = response.status_code == expected
        self.failures += not ok
        mark = "ok " if ok else "BAD"
        path = shown_path or httpx.URL(url).path
        self.say(f"[{mark}] {method:4} {path:18} {what:40} -> {response.status_code}"
                 + ("" if ok else f" (expected {expected})"))
        challenge = response.headers.get("www-authenticate")
        if challenge and response.status_code in (401, 403):
            self.say(f"        WWW-Authenticate: {challenge}")
        elif show_body or not ok:
            self.say(f"        {response.text[:200]}")
        return response

    def expect_json(self, response: httpx.Response, member: str) -> Any:
        try:
            value = response.json()[member]
        except (ValueError, KeyError, TypeError):
            raise CommandError(f"{response.request.url} answered {response.status_code} "
                               f"without {member!r}: {response.text[:200]}", EXIT_FAILED) from None
        return value


def _claims_summary(token: str) -> str:
    claims = json.loads(b64url_decode(token.split(".")[1]))
    shown = {name: claims[name] for name in ("sub", "oid", "scopes", "aud", "custom_claims")
             if name in claims}
    return json.dumps(shown, separators=(", ", ": "))


def run_demo(app_factory: AppFactory = deployment_api, *, serve: bool = False,
             host: str = "127.0.0.1", out: TextIO | None = None,
             stop: threading.Event | None = None) -> int:
    """Run the demo (see the module doc); return 0 when every call got the expected status.

    With `serve`, keep both servers running after the calls and print curl commands, until
    Ctrl-C (or `stop` is set).
    """
    from ..local_issuer import LocalIssuer, serve_issuer
    from ..local_issuer.grpc_service import grpc_available

    t = _Transcript(out)
    admin_id = f"skc_{10**16 + secrets.randbelow(9 * 10**16)}"
    admin_secret = secrets.token_urlsafe(32)
    emulate = grpc_available()
    issuer = LocalIssuer(":memory:", admin_client_id=admin_id, admin_client_secret=admin_secret)
    try:
        with serve_issuer(issuer, host=host, port=0, tls=emulate, grpc=emulate) as running:
            ca = str(running.tls.ca_cert) if running.tls is not None else None
            settings = GuardSettings(issuer=running.url, audience=AUDIENCE,
                                     public_paths=("/health",), ca_bundle=ca, dpop="allowed")
            verify: Any = ssl.create_default_context(cafile=ca) if ca else True
            # trust_env=False: every call goes to loopback, never through a configured proxy
            with serve_app(app_factory(settings), host) as api, \
                    httpx.Client(timeout=30, trust_env=False, verify=verify) as http:
                t.say("m2m_guard demo: the machine-to-machine flow, end to end on loopback")
                t.say()
                t.say(f"issuer   {running.url}   local Scalekit-compatible issuer (in memory"
                      + (", HTTPS + gRPC)" if emulate else ")"))
                if ca:
                    t.say(f"                                   its local CA {ca}")
                t.say(f"api      {api}   deployment API, m2m_guard trusts {running.url}")
                t.say(f"                                   and requires audience {AUDIENCE}")
                t.say()
                try:
                    client_id, client_secret, token = _register_and_get_token(
                        t, http, running.url, admin_id, admin_secret)
                except CommandError as exc:
                    t.say(f"the demo cannot go on: {exc}")
                    return EXIT_FAILED
                t.say()
                t.say("4. The client calls the deployment API")
                _call_api(t, http, api, token)
                t.say()
                t.say("5. DPoP: a token bound to the client's key, useless without it")
                _dpop_calls(t, http, running.url, api, client_id, client_secret)
                t.say()
                t.say("6. Scalekit's Python quickstart with the official SDK, unchanged but for "
                      "the environment URL and credentials")
                if ca:
                    from .scalekit_quickstart import run_quickstart

                    run_quickstart(t, env_url=running.url, client_id=admin_id,
                                   client_secret=admin_secret, organization_id=ORGANIZATION_ID,
                                   api_url=api, ca_file=ca)
                else:
                    t.say("        (not run: it needs the emulator extra, Python 3.11+: "
                          "pip install 'm2m-guard[emulator]')")
                t.say()
                if t.failures:
                    t.say(f"{t.failures} call(s) did not answer as expected")
                else:
                    t.say("all calls answered as expected")
                if serve and not t.failures:
                    _print_curl(t, running.url, api, client_id, client_secret, ca)
                    wait_for_stop(stop)
    finally:
        issuer.close()
    return EXIT_FAILED if t.failures else EXIT_OK


def _register_and_get_token(t: _Transcript, http: httpx.Client, issuer_url: str,
                            admin_id: str, admin_secret: str) -> tuple[str, str, str]:
    """Steps 1-3: management token, client registration, the client's own token."""
    token_url = f"{issuer_url}/oauth/token"
    t.say("1. The environment API client gets a token for the management API")
    answer = t.call(http, "POST", token_url, f"credentials of {admin_id}", 200,
                    data={"grant_type": "client_credentials", "client_id": admin_id,
                          "client_secret": admin_secret})
    admin_token = t.expect_json(answer, "access_token")
    t.say()
    t.say(f"2. It registers the {CLIENT_REGISTRATION['name']!r} client (Scalekit's quickstart)")
    path = f"/api/v1/organizations/{ORGANIZATION_ID}/clients"
    answer = t.call(http, "POST", issuer_url + path, "name, scopes, audience, custom_claims",
                    201, shown_path="/api/v1/…/clients", json=CLIENT_REGISTRATION,
                    headers={"Authorization": f"Bearer {admin_token}"})
    client = t.expect_json(answer, "client")
    client_secret = t.expect_json(answer, "plain_secret")
    client_id = client["client_id"]
    t.say(f"        client_id {client_id}, organization {ORGANIZATION_ID}, "
          f"plain_secret …{client_secret[-4:]} (shown once)")
    t.say()
    t.say("3. The client gets its access token (client-credentials grant)")
    answer = t.call(http, "POST", token_url, f"credentials of {client_id}", 200,
                    data={"grant_type": "client_credentials", "client_id": client_id,
                          "client_secret": client_secret})
    token = t.expect_json(answer, "access_token")
    t.say(f"        claims {_claims_summary(token)}")
    return client_id, client_secret, token


def _call_api(t: _Transcript, http: httpx.Client, api: str, token: str) -> None:
    bearer = {"Authorization": f"Bearer {token}"}
    t.call(http, "GET", f"{api}/health", "public path, no token needed", 200)
    t.call(http, "GET", f"{api}/deployments", "token with read:deployments", 200, headers=bearer,
           show_body=True)
    t.call(http, "POST", f"{api}/deployments", "token with deploy:applications", 202,
           headers=bearer, json={"service": "billing", "version": "1.5.0"}, show_body=True)
    t.call(http, "GET", f"{api}/admin/audit", "token lacks admin:platform", 403, headers=bearer)
    t.call(http, "GET", f"{api}/deployments", "no token", 401)
    t.call(http, "GET", f"{api}/deployments", "token with a forged extra scope", 401,
           headers={"Authorization": f"Bearer {tamper(token)}"})


def _dpop_calls(t: _Transcript, http: httpx.Client, issuer_url: str, api: str,
                client_id: str, client_secret: str) -> None:
    """Step 5: a DPoP-bound token, a call with its proof, the proof replayed, the token
    stolen and sent as Bearer."""
    from ..dpop import DPoPKey

    key = DPoPKey.generate()
    token_url = f"{issuer_url}/oauth/token"
    answer = t.call(http, "POST", token_url, "credentials and a DPoP proof", 200,
                    data={"grant_type": "client_credentials", "client_id": client_id,
                          "client_secret": client_secret},
                    headers={"DPoP": key.proof("POST", token_url)})
    token = t.expect_json(answer, "access_token")
    cnf = json.loads(b64url_decode(token.split(".")[1])).get("cnf")
    t.say(f"        token_type {answer.json().get('token_type')}, cnf {json.dumps(cnf)}")
    url = f"{api}/deployments"
    proof = key.proof("GET", url, access_token=token)
    dpop = {"Authorization": f"DPoP {token}", "DPoP": proof}
    t.call(http, "GET", url, "DPoP token with a fresh proof", 200, headers=dpop)
    t.call(http, "GET", url, "the same proof replayed", 401, headers=dpop)
    t.call(http, "GET", url, "the bound token stolen, sent as Bearer", 401,
           headers={"Authorization": f"Bearer {token}"})


def _print_curl(t: _Transcript, issuer_url: str, api: str, client_id: str,
                client_secret: str, ca: str | None = None) -> None:
    t.say()
    t.say("Both servers keep running; try it by hand (Ctrl-C stops):")
    t.say()
    if ca:
        t.say(f"  export SSL_CERT_FILE={ca} M2M_GUARD_CA_BUNDLE={ca}")
    cacert = f"--cacert {ca} " if ca else ""
    t.say(f"  TOKEN=$(curl -s {cacert}{issuer_url}/oauth/token -d grant_type=client_credentials \\")
    t.say(f"          -d client_id={client_id} -d client_secret={client_secret} \\")
    t.say("          | python3 -c 'import json,sys;print(json.load(sys.stdin)[\"access_token\"])')")
    t.say(f"  curl -i {api}/deployments -H \"Authorization: Bearer $TOKEN\"")
    t.say(f"  curl -i -X POST {api}/deployments -H \"Authorization: Bearer $TOKEN\" \\")
    t.say("       -H 'Content-Type: application/json' -d '{\"service\": \"billing\", "
          "\"version\": \"1.5.0\"}'")
    t.say(f"  curl -i {api}/admin/audit -H \"Authorization: Bearer $TOKEN\"")
    t.say(f"  curl -i {api}/deployments")
    t.say()
    t.say("  or with the m2m-guard command:")
    t.say(f"  export M2M_GUARD_ISSUER={issuer_url} M2M_GUARD_AUDIENCE={AUDIENCE}")
    # Given to one command only: exported, SCALEKIT_CLIENT_ID would name this client where
    # `m2m-guard issuer` and `rotate-keys` expect the environment client (skc_…).
    t.say(f"  SCALEKIT_ENVIRONMENT_URL={issuer_url} SCALEKIT_CLIENT_ID={client_id} "
          f"SCALEKIT_CLIENT_SECRET={client_secret} \\")
    t.say("    m2m-guard token | m2m-guard verify - --scope deploy:applications")
    t.say("  a DPoP-bound token, with a ready curl line (the proof is fresh for a minute):")
    t.say(f"  SCALEKIT_ENVIRONMENT_URL={issuer_url} SCALEKIT_CLIENT_ID={client_id} "
          f"SCALEKIT_CLIENT_SECRET={client_secret} \\")
    t.say(f"    m2m-guard token --dpop client.dpop.pem --url {api}/deployments")
    t.say("  m2m-guard doctor")


def run(args: argparse.Namespace) -> int:
    return run_demo(deployment_api, serve=args.serve)
