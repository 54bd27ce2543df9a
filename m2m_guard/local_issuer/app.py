"""The local issuer's HTTP API as a Starlette app (built by `LocalIssuer`; see its docs).

Public: ``GET /.well-known/openid-configuration`` (and RFC 8414's
``/.well-known/oauth-authorization-server``), ``GET /keys``, ``POST /oauth/token``, and
``GET /openapi.json`` (the OpenAPI 3.1 document of all of them, `openapi`).

DPoP (RFC 9449 §5): a token request with a ``DPoP`` proof header gets a token bound to the
proof's key (``cnf.jkt``, ``token_type: DPoP``). The proof is judged by the guard's own checker
(`_core/dpop.ProofChecker`: ``htm`` POST, ``htu`` the token endpoint's URL, no ``ath``) and its
``jti`` kept for the proof's window (`_core/replay.MemoryReplayStore`), so a proof is used once;
a bad or replayed proof is refused with 400 ``invalid_dpop_proof``.
Management (Bearer token of the environment API client): ``/api/v1/organizations/{org}/clients``
and below, ``GET /api/v1/keys``, ``POST /api/v1/keys:rotate``.

Slow work (scrypt, RSA key generation) and database calls run in worker threads, never on the
event loop. No secret or token is ever logged.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl, unquote_plus

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .._core.bearer import extract_bearer
from .._core.dpop import ProofChecker
from .._core.encoding import loads_json
from .._core.replay import MemoryReplayStore, replay_key, replay_ttl
from ..errors import (
    GuardError,
    InvalidDPoPProof,
    MissingToken,
    ReplayStoreUnavailable,
    render_error,
)
from ..settings import ASYMMETRIC_ALGORITHMS
from .clients import ApiError, bad_request, check_text, rfc3339
from .keyring import RotationRefused
from .openapi import openapi_document

if TYPE_CHECKING:
    from .issuer import LocalIssuer

__all__ = ["build_app"]

T = TypeVar("T")
REALM = "m2m-guard local issuer"
MAX_FORM_BYTES = 16 * 1024
MAX_JSON_BYTES = 64 * 1024
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_CLIENT_CREDENTIALS = "client_credentials"
_PARAMETERS = frozenset({"grant_type", "client_id", "client_secret", "scope"})
#: The algorithms accepted for DPoP proofs at the token endpoint (advertised in discovery).
DPOP_ALGORITHMS = ASYMMETRIC_ALGORITHMS
# Proofs of the window are remembered; beyond this many live ones, requests get 503.
_DPOP_REPLAY_ENTRIES = 100_000


# -- OAuth token endpoint ---------------------------------------------------------------------
class OAuthError(Exception):
    """An RFC 6749 §5.2 error response."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status

    def response(self) -> JSONResponse:
        headers = dict(_NO_STORE)
        if self.error == "invalid_client":
            headers["WWW-Authenticate"] = f'Basic realm="{REALM}", charset="UTF-8"'
        return JSONResponse({"error": self.error, "error_description": self.description},
                            status_code=self.status, headers=headers)


def _invalid_client(description: str) -> OAuthError:
    return OAuthError("invalid_client", description, 401)


async def _read_form(request: Request) -> dict[str, str]:
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/x-www-form-urlencoded":
        raise OAuthError("invalid_request", "The token request must be a form: "
                         "Content-Type: application/x-www-form-urlencoded.")
    body = await _read_body(request, MAX_FORM_BYTES)
    if body is None:
        raise OAuthError("invalid_request", f"The request body is over {MAX_FORM_BYTES} bytes.")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body),
                          max_num_fields=50)
    except (UnicodeDecodeError, ValueError):
        raise OAuthError("invalid_request", "The form body is malformed.") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name not in _PARAMETERS:  # RFC 6749 §3.2: unknown parameters are ignored
            continue
        if name in form:  # RFC 6749 §3.2: parameters must not be repeated
            raise OAuthError("invalid_request", f"The parameter {name} is repeated.")
        form[name] = value
    return form


async def _read_body(request: Request, limit: int) -> bytes | None:
    declared = request.headers.get("content-length")
    # ASCII digits only ("²".isdigit() is True, int("²") raises); the stream is bounded anyway.
    if (declared is not None and declared.isascii() and declared.isdigit()
            and (len(declared) > 19 or int(declared) > limit)):
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _basic_credentials(value: str) -> tuple[str, str] | None:
    """(client id, secret) from an HTTP Basic `Authorization` value; None for another scheme.

    RFC 6749 §2.3.1: id and secret are form-urlencoded, then joined with ":" and base64-encoded;
    they are decoded once, that way only (a secret holding "+" or "%" sent unencoded does not
    match: one reading, one password-hash run per request).
    """
    scheme, _, encoded = value.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        raw = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise _invalid_client("The Basic credentials are not valid base64 of id:secret.") from None
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError:
        decoded = raw.decode("latin-1")
    client_id, colon, secret = decoded.partition(":")
    if not colon:
        raise _invalid_client("The Basic credentials are not valid base64 of id:secret.")
    return unquote_plus(client_id), unquote_plus(secret)


def _credentials(request: Request, form: dict[str, str]) -> tuple[str, str]:
    """(client id, secret) from HTTP Basic or from the form body (RFC 6749 §2.3.1), never both.

    An `Authorization` header of another scheme (an SDK may send ``Bearer <its own token>``
    with every request) is not client authentication: the form credentials count then.
    """
    values = request.headers.getlist("authorization")
    if len(values) > 1:
        raise OAuthError("invalid_request", "The request has more than one Authorization header.")
    basic = _basic_credentials(values[0]) if values else None
    if basic is not None:
        if "client_secret" in form:
            raise OAuthError("invalid_request", "Send the client credentials one way only: "
                             "HTTP Basic or the form body, not both.")
        if "client_id" in form and form["client_id"] != basic[0]:
            raise OAuthError("invalid_request",
                             "The client_id in the form differs from the Basic credentials.")
        return basic
    client_id, secret = form.get("client_id"), form.get("client_secret")
    if not client_id or secret is None:
        raise _invalid_client("The client is not authenticated: send client_id and client_secret "
                              "in the form body, or HTTP Basic credentials.")
    return client_id, secret


def _requested_scopes(form: dict[str, str], registered: list[str]) -> list[str]:
    if "scope" not in form:
        return list(registered)
    requested = form["scope"].split(" ")
    if not form["scope"] or "" in requested:
        raise OAuthError("invalid_scope", "The scope parameter must be scope names separated by "
                         "single spaces.")
    unknown = [name for name in requested if name not in registered]
    if unknown:
        raise OAuthError("invalid_scope", "The client may not request the scope "
                         f"{_printable(unknown[0])}; registered scopes: "
                         f"{' '.join(registered) or '(none)'}.")
    return [name for name in registered if name in requested]


class DPoPBinding:
    """The token endpoint's side of DPoP (RFC 9449 §5): one checker and one replay store per
    issuer app."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.checker = ProofChecker(algorithms=DPOP_ALGORITHMS)
        self.replays = MemoryReplayStore(_DPOP_REPLAY_ENTRIES, clock=clock)
        self.clock = clock

    def thumbprint(self, request: Request, token_url: str) -> str | None:
        """The `jkt` to bind the token to: None without a ``DPoP`` header; `OAuthError`
        ``invalid_dpop_proof`` for a bad or used proof."""
        values = request.headers.getlist("dpop")
        if not values:
            return None
        now = self.clock()
        try:
            proof = self.checker.check(values, method=request.method, url=token_url, now=now)
            fresh = self.replays.claim(replay_key(proof.jkt, proof.jti),
                                       replay_ttl(proof.iat, now, self.checker.iat_window))
        except InvalidDPoPProof as exc:
            raise OAuthError("invalid_dpop_proof", exc.description) from None
        except ReplayStoreUnavailable as exc:
            raise OAuthError("temporarily_unavailable", exc.description, 503) from None
        if not fresh:
            raise OAuthError("invalid_dpop_proof", "The DPoP proof was used before: make a "
                                                   "fresh proof for every request.")
        return proof.jkt


def _printable(text: str) -> str:
    cleaned = "".join(ch if 0x20 < ord(ch) < 0x7F and ch not in '"\\' else "?" for ch in text)
    return cleaned[:64]


# -- the app ------------------------------------------------------------------------------------
def build_app(issuer: LocalIssuer) -> Starlette:
    """The ASGI app of `issuer` (also available as `issuer.app`)."""

    async def blocking(function: Callable[..., T], *args: Any) -> T:
        return await run_in_threadpool(function, *args)

    def base(request: Request) -> str:
        return issuer.base_url(str(request.base_url))

    dpop = DPoPBinding(issuer.clock)

    async def discovery(request: Request) -> Response:
        url = base(request)
        return JSONResponse({
            "issuer": url,
            "jwks_uri": url + "/keys",
            "token_endpoint": url + "/oauth/token",
            "grant_types_supported": [_CLIENT_CREDENTIALS],
            "token_endpoint_auth_methods_supported": ["client_secret_basic",
                                                      "client_secret_post"],
            "response_types_supported": [],  # no authorization endpoint: client credentials only
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_signing_alg_values_supported": ["RS256"],
            "dpop_signing_alg_values_supported": list(DPOP_ALGORITHMS),
        }, headers={"Cache-Control": f"public, max-age={issuer.jwks_max_age}"})

    async def keys(request: Request) -> Response:
        document = await blocking(issuer.jwks)
        body = json.dumps(document, separators=(",", ":")).encode()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        headers = {"Cache-Control": f"public, max-age={issuer.jwks_max_age}", "ETag": etag}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(body, media_type="application/json", headers=headers)

    async def token(request: Request) -> Response:
        try:
            form = await _read_form(request)
            client_id, secret = _credentials(request, form)
            grant_type = form.get("grant_type")
            if not grant_type:
                raise OAuthError("invalid_request", "The grant_type parameter is missing.")
            if grant_type != _CLIENT_CREDENTIALS:
                raise OAuthError("unsupported_grant_type",
                                 "Only grant_type=client_credentials is supported.")
            client = await blocking(issuer.clients.authenticate, client_id, secret)
            if client is None:
                raise _invalid_client("Unknown client or wrong client secret.")
            scopes = _requested_scopes(form, client.scopes)
            url = base(request)
            jkt = dpop.thumbprint(request, url + "/oauth/token")
            access_token, lifetime = await blocking(
                functools.partial(issuer.issue_token, client, scopes, url, jkt=jkt))
        except OAuthError as exc:
            return exc.response()
        return JSONResponse({"access_token": access_token,
                             "token_type": "Bearer" if jkt is None else "DPoP",
                             "expires_in": lifetime, "scope": " ".join(scopes)},
                            headers=_NO_STORE)

    # -- management API ---------------------------------------------------------------------
    def api(handler: Callable[[Request], Awaitable[Response]]
            ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except ApiError as exc:
                return JSONResponse(exc.body(), status_code=exc.status)
        return endpoint

    async def json_body(request: Request, *, optional: bool = False) -> Any:
        body = await _read_body(request, MAX_JSON_BYTES)
        if body is None:
            raise bad_request("body", f"must be at most {MAX_JSON_BYTES} bytes")
        if not body.strip() and optional:
            return {}
        try:
            value = loads_json(body)
        except ValueError:
            raise bad_request("body", "is not valid JSON (UTF-8, no duplicate members)") from None
        check_text(value)  # the edge: no lone surrogate reaches validation, SQLite or a reply
        return value

    def path(request: Request, name: str) -> str:
        return str(request.path_params[name])

    @api
    async def clients_collection(request: Request) -> Response:
        org = path(request, "organization_id")
        if request.method == "POST":
            body = await json_body(request)
            client, plain = await blocking(issuer.clients.create, org, body)
            return JSONResponse({"client": client, "plain_secret": plain}, status_code=201,
                                headers=_NO_STORE)
        params = request.query_params
        page = await blocking(lambda: issuer.clients.list(
            org, page_size=params.get("page_size"), page_token=params.get("page_token")))
        return JSONResponse(page)

    @api
    async def client_item(request: Request) -> Response:
        org, client_id = path(request, "organization_id"), path(request, "client_id")
        if request.method == "GET":
            return JSONResponse({"client": await blocking(issuer.clients.get, org, client_id)})
        if request.method == "PATCH":
            body = await json_body(request)
            client = await blocking(issuer.clients.update, org, client_id, body)
            return JSONResponse({"client": client})
        await blocking(issuer.clients.delete, org, client_id)
        return JSONResponse({})

    @api
    async def secrets_collection(request: Request) -> Response:
        org, client_id = path(request, "organization_id"), path(request, "client_id")
        secret, plain = await blocking(issuer.clients.add_secret, org, client_id)
        return JSONResponse({"secret": secret, "plain_secret": plain}, status_code=201,
                            headers=_NO_STORE)

    @api
    async def secret_item(request: Request) -> Response:
        await blocking(issuer.clients.delete_secret, path(request, "organization_id"),
                       path(request, "client_id"), path(request, "secret_id"))
        return JSONResponse({})

    def key_states() -> list[dict[str, Any]]:
        return [{"kid": state.kid, "alg": state.alg, "status": state.status,
                 "create_time": rfc3339(state.created), "signs_from": rfc3339(state.signs_from),
                 "remove_after": None if state.remove_after is None
                 else rfc3339(state.remove_after)}
                for state in issuer.key_states()]

    @api
    async def list_keys(request: Request) -> Response:
        return JSONResponse({"keys": await blocking(key_states)})

    @api
    async def rotate(request: Request) -> Response:
        body = await json_body(request, optional=True)
        if not isinstance(body, dict) or set(body) - {"publish_delay", "force"}:
            raise bad_request("body", "may only hold publish_delay (seconds) and force")
        delay = body.get("publish_delay")
        if delay is not None and (isinstance(delay, bool) or not isinstance(delay, (int, float))
                                  or not 0 <= delay <= 86400):
            raise bad_request("publish_delay", "must be a number of seconds from 0 to 86400")
        force = body.get("force", False)
        if not isinstance(force, bool):
            raise bad_request("force", "must be true or false")
        try:
            kid = await blocking(lambda: issuer.rotate_keys(delay, force=force))
        except RotationRefused as exc:
            raise ApiError(409, "FAILED_PRECONDITION", exc.message, [
                {"field": "kid", "description": exc.kid},
                {"field": "signs_from" if exc.reason == "pending" else "remove_after",
                 "description": rfc3339(exc.until)}]) from None
        return JSONResponse({"kid": kid, "keys": await blocking(key_states)}, status_code=201)

    document = openapi_document()

    async def openapi(request: Request) -> Response:
        return JSONResponse({**document, "servers": [{"url": base(request)}]})

    clients_path = "/api/v1/organizations/{organization_id}/clients"
    routes = [
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/.well-known/openid-configuration", discovery, methods=["GET"]),
        Route("/.well-known/oauth-authorization-server", discovery, methods=["GET"]),
        Route("/keys", keys, methods=["GET"]),
        Route("/oauth/token", token, methods=["POST"]),
        Route(clients_path, clients_collection, methods=["GET", "POST"]),
        Route(clients_path + "/{client_id}", client_item, methods=["GET", "PATCH", "DELETE"]),
        Route(clients_path + "/{client_id}/secrets", secrets_collection, methods=["POST"]),
        Route(clients_path + "/{client_id}/secrets/{secret_id}", secret_item,
              methods=["DELETE"]),
        Route("/api/v1/keys", list_keys, methods=["GET"]),
        Route("/api/v1/keys:rotate", rotate, methods=["POST"]),
    ]

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(exc.status_code, "ERROR")
        message = ("No such route." if exc.status_code == 404
                   else f"Method {request.method} is not allowed here." if exc.status_code == 405
                   else str(exc.detail))
        return JSONResponse({"code": code, "message": message, "details": []},
                            status_code=exc.status_code, headers=exc.headers)

    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
    app.add_middleware(_Gate, issuer=issuer)
    return app


class _Gate:
    """Outermost layer: answers 503 during a simulated outage, and lets a request into
    ``/api/v1/`` only with a valid token of the environment API client (else 401)."""

    def __init__(self, app: ASGIApp, issuer: LocalIssuer) -> None:
        self.app = app
        self.issuer = issuer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.issuer.unavailable:
            response: Response = JSONResponse(
                {"error": "temporarily_unavailable",
                 "error_description": "The issuer is unavailable (simulated outage)."},
                status_code=503, headers={"Retry-After": "1", "Cache-Control": "no-store"})
            await response(scope, receive, send)
            return
        path: str = scope["path"]
        if path == "/api/v1" or path.startswith("/api/v1/"):
            request = Request(scope)
            refusal = self._refuse(request)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _refuse(self, request: Request) -> Response | None:
        try:
            token = extract_bearer(request.headers.getlist("authorization"),
                                   request.scope.get("query_string", b""))
            if token is None:
                raise MissingToken("The management API needs the access token of the "
                                   "environment API client (client credentials of skc_…).")
            self.issuer.check_admin_token(token, self.issuer.base_url(str(request.base_url)))
        except GuardError as exc:
            rendered = render_error(exc, realm=REALM)
            code = "UNAUTHENTICATED" if rendered.status == 401 else "INVALID_ARGUMENT"
            headers = {name: value for name, value in rendered.headers
                       if name != "content-type"}
            return JSONResponse({"code": code, "message": exc.description, "details": []},
                                status_code=rendered.status, headers=headers)
        return None
