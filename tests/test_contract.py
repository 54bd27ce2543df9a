"""The behaviour contract (docs/architecture.md), row by row, through a real Starlette app and a
real key-set server on loopback.

Every test asserts the status, the exact `WWW-Authenticate` header (or its absence) and the exact
JSON body, so a change in wording or framing of a refusal is a deliberate, visible change.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from m2m_guard import GuardSettings
from m2m_guard.asgi import M2MGuardMiddleware
from m2m_guard.local_issuer import KeySetServer, SigningKey

from .conftest import deployment_app

MISSING = {"error": "missing_token", "error_description": "A bearer token is required."}
# RFC 6750 §3: the value of each auth-param is a quoted-string of these characters only.
_PARAM_CHARS = r'[\x20\x21\x23-\x5b\x5d-\x7e]*'
_CHALLENGE = re.compile(
    r'Bearer realm="(' + _PARAM_CHARS + r')"'
    r'(?:, error="(' + _PARAM_CHARS + r')", error_description="(' + _PARAM_CHARS + r')")?'
    r'(?:, scope="(' + _PARAM_CHARS + r')")?'
)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def invalid_token_challenge(description: str, realm: str = "api") -> str:
    return (f'Bearer realm="{realm}", error="invalid_token", '
            f'error_description="{description}"')


def assert_refusal(response: Any, status: int, challenge: str | None, body: dict[str, Any]) -> None:
    assert response.status_code == status, response.text
    if challenge is None:
        assert "www-authenticate" not in response.headers
    else:
        assert response.headers.get_list("www-authenticate") == [challenge]
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    assert response.json() == body
    assert int(response.headers["content-length"]) == len(response.content)


@pytest.fixture
def client(settings: GuardSettings) -> Iterator[TestClient]:
    with TestClient(deployment_app(settings.replace(public_paths=("/health", "/docs*")))) as c:
        yield c


# -- row 1: protected path without credentials -> 401, bare challenge ------------------------

@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Basic dXNlcjpwYXNz"},
    {"Authorization": "Digest username=\"x\""},
    {"Authorization": "Bearertoken"},  # not the Bearer scheme at all
    {"X-Api-Key": "abc"},
], ids=["none", "basic", "digest", "bearer-glued", "other-header"])
def test_no_credentials_is_401_without_error_code(client: TestClient,
                                                  headers: dict[str, str]) -> None:
    response = client.get("/deployments", headers=headers)
    assert_refusal(response, 401, 'Bearer realm="api"', MISSING)


def test_no_credentials_on_every_protected_method(client: TestClient) -> None:
    for method, path in (("GET", "/deployments"), ("POST", "/deployments"), ("GET", "/admin"),
                         ("GET", "/audit"), ("DELETE", "/nowhere")):
        response = client.request(method, path)
        assert_refusal(response, 401, 'Bearer realm="api"', MISSING)


# -- row 2: malformed or ambiguous credentials -> 400 invalid_request ------------------------

def _invalid_request(description: str) -> tuple[str, dict[str, str]]:
    challenge = (f'Bearer realm="api", error="invalid_request", '
                 f'error_description="{description}"')
    return challenge, {"error": "invalid_request", "error_description": description}


@pytest.mark.parametrize(("authorization", "description"), [
    ("Bearer", "The Authorization header has the Bearer scheme but no token."),
    ("Bearer    ", "The Authorization header has the Bearer scheme but no token."),
    ("Bearer a b", "The bearer token contains characters RFC 6750 does not allow."),
    ('Bearer ab"c', "The bearer token contains characters RFC 6750 does not allow."),
    ("Bearer abc,def", "The bearer token contains characters RFC 6750 does not allow."),
    ("Bearer =abc", "The bearer token contains characters RFC 6750 does not allow."),
    ("Bearer\tabc.def.ghi",
     "The Authorization header must separate Bearer and the token with a space."),
])
def test_malformed_authorization_is_400(client: TestClient, authorization: str,
                                        description: str) -> None:
    challenge, body = _invalid_request(description)
    response = client.get("/deployments", headers={"Authorization": authorization})
    assert_refusal(response, 400, challenge, body)


def test_two_authorization_headers_is_400(client: TestClient, issuer: KeySetServer) -> None:
    token = issuer.mint()
    challenge, body = _invalid_request("The request has more than one Authorization header.")
    response = client.get("/deployments", headers=[("Authorization", f"Bearer {token}"),
                                                   ("Authorization", f"Bearer {token}")])
    assert_refusal(response, 400, challenge, body)
    # Also when the second one is another scheme: the guard cannot know which one the app sees.
    response = client.get("/deployments", headers=[("Authorization", f"Bearer {token}"),
                                                   ("Authorization", "Basic dXNlcjpwYXNz")])
    assert_refusal(response, 400, challenge, body)


def test_header_plus_access_token_query_is_400(client: TestClient, issuer: KeySetServer) -> None:
    token = issuer.mint()
    challenge, body = _invalid_request(
        "The token is sent both in the header and in the query string.")
    response = client.get(f"/deployments?access_token={token}", headers=bearer(token))
    assert_refusal(response, 400, challenge, body)
    # percent-encoded parameter name is the same parameter
    response = client.get(f"/deployments?x=1&access%5Ftoken={token}", headers=bearer(token))
    assert_refusal(response, 400, challenge, body)


def test_access_token_query_alone_is_400(client: TestClient, issuer: KeySetServer) -> None:
    challenge, body = _invalid_request(
        "Tokens in the query string are not accepted; send them in the Authorization header.")
    response = client.get(f"/deployments?access_token={issuer.mint()}")
    assert_refusal(response, 400, challenge, body)


def test_query_parameter_with_similar_name_is_not_a_token(client: TestClient,
                                                          issuer: KeySetServer) -> None:
    response = client.get("/deployments?my_access_token=1&access_tokens=2",
                          headers=bearer(issuer.mint()))
    assert response.status_code == 200


# -- row 3: token defects -> 401 invalid_token with a description ----------------------------

def _tamper_signature(token: str) -> str:
    head, payload, signature = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[0] ^= 0x01
    return f"{head}.{payload}." + base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


def _swap_payload(token: str, **claims: Any) -> str:
    head, payload, signature = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data.update(claims)
    new = base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    return f"{head}.{new}.{signature}"


TokenFactory = Callable[[KeySetServer], str]
_now = lambda: int(time.time())  # noqa: E731

DEFECTS: list[tuple[str, TokenFactory, str]] = [
    ("bad-signature", lambda iss: _tamper_signature(iss.mint()),
     "The token signature is invalid."),
    ("payload-swapped", lambda iss: _swap_payload(iss.mint(), scopes=["admin:platform"]),
     "The token signature is invalid."),
    ("expired", lambda iss: iss.mint(iat=_now() - 7200, nbf=_now() - 7200, exp=_now() - 3600),
     "The token has expired."),
    ("not-yet-valid", lambda iss: iss.mint(nbf=_now() + 3600, exp=_now() + 7200),
     "The token is not valid yet (nbf)."),
    ("no-exp", lambda iss: iss.mint(exp=None), "The token has no exp claim."),
    ("wrong-audience", lambda iss: iss.mint(aud=["billing-api"]),
     "The token is not meant for this audience."),
    ("no-audience", lambda iss: iss.mint(aud=None), "The token has no aud claim."),
    ("untrusted-issuer", lambda iss: iss.mint(iss="https://evil.example"),
     "The token's issuer is not trusted."),
    ("unknown-kid", lambda iss: iss.mint(SigningKey.generate("ES256", kid="snk_unpublished")),
     "The token's signing key is not in its issuer's key set."),
    ("wrong-type", lambda iss: iss.mint(typ="dpop+jwt"),
     "The token type is not accepted for access tokens."),
    ("not-a-jws", lambda iss: "abc.def", "The token is not a compact JWS (three dot-separated "
                                         "segments)."),
    ("alg-none", lambda iss: iss.mint(headers={"alg": "none"}).rsplit(".", 1)[0] + ".",
     "The token has an empty header or signature."),
]


@pytest.mark.parametrize(("make", "description"), [(m, d) for _, m, d in DEFECTS],
                         ids=[name for name, _, _ in DEFECTS])
def test_token_defect_is_401_invalid_token(client: TestClient, issuer: KeySetServer,
                                           make: TokenFactory, description: str) -> None:
    response = client.get("/deployments", headers=bearer(make(issuer)))
    assert_refusal(response, 401, invalid_token_challenge(description),
                   {"error": "invalid_token", "error_description": description})


def test_oversized_token_is_401_before_decoding(client: TestClient) -> None:
    description = "The token is larger than 16384 bytes."
    response = client.get("/deployments", headers=bearer("a" * 16385))
    assert_refusal(response, 401, invalid_token_challenge(description),
                   {"error": "invalid_token", "error_description": description})


# -- row 4: valid token without the route's scopes -> 403 with scope="..." --------------------

def test_insufficient_scope_is_403_with_scope(client: TestClient, issuer: KeySetServer) -> None:
    response = client.get("/admin", headers=bearer(issuer.mint()))
    description = "The access token lacks the scope: admin:platform"
    assert_refusal(
        response, 403,
        f'Bearer realm="api", error="insufficient_scope", error_description="{description}", '
        f'scope="admin:platform"',
        {"error": "insufficient_scope", "error_description": description,
         "scope": "admin:platform"})


def test_insufficient_scope_on_sync_endpoint(client: TestClient, issuer: KeySetServer) -> None:
    response = client.post("/deployments", headers=bearer(issuer.mint(scopes=["read:deployments"])))
    description = "The access token lacks the scope: deploy:applications"
    assert_refusal(
        response, 403,
        f'Bearer realm="api", error="insufficient_scope", error_description="{description}", '
        f'scope="deploy:applications"',
        {"error": "insufficient_scope", "error_description": description,
         "scope": "deploy:applications"})


def test_any_of_requirement_announces_every_alternative(client: TestClient,
                                                        issuer: KeySetServer) -> None:
    response = client.get("/audit", headers=bearer(issuer.mint(scopes=["deploy:applications"])))
    description = "The access token lacks one of the scopes: read:deployments audit:read"
    assert_refusal(
        response, 403,
        f'Bearer realm="api", error="insufficient_scope", error_description="{description}", '
        f'scope="read:deployments audit:read"',
        {"error": "insufficient_scope", "error_description": description,
         "scope": "read:deployments audit:read"})
    # and one of them is enough
    ok = client.get("/audit", headers=bearer(issuer.mint(scopes=["audit:read"])))
    assert ok.status_code == 200
    assert ok.json() == {"audit": True}


def test_scopes_are_judged_on_verified_claims_only(client: TestClient,
                                                   issuer: KeySetServer) -> None:
    """Forging `scopes` in the payload of a real token breaks its signature: 401, not 200."""
    forged = _swap_payload(issuer.mint(scopes=[]), scopes=["admin:platform"])
    response = client.get("/admin", headers=bearer(forged))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"


def test_valid_token_with_scopes_reaches_every_route(client: TestClient,
                                                     issuer: KeySetServer) -> None:
    token = issuer.mint(scopes=["read:deployments", "deploy:applications", "admin:platform"])
    assert client.get("/deployments", headers=bearer(token)).status_code == 200
    posted = client.post("/deployments", headers=bearer(token))
    assert posted.status_code == 200
    assert posted.json() == {"deployed": True, "organization_id": "org_59615193906282635"}
    assert client.get("/admin", headers=bearer(token)).json() == {"admin": True}
    # lowercase scheme is the same scheme (RFC 7235: case-insensitive)
    assert client.get("/admin", headers={"Authorization": f"bearer {token}"}).status_code == 200


# -- row 5: issuer unreachable and nothing cached -> 503, Retry-After, no challenge ----------

def test_issuer_down_and_cold_cache_is_503(issuer: KeySetServer,
                                           make_settings: Callable[..., GuardSettings]) -> None:
    settings = make_settings(http_timeout=1.0)
    token = issuer.mint()
    issuer.stop()
    # No lifespan (no `with`): the request itself meets the cold cache.
    client = TestClient(deployment_app(settings))
    response = client.get("/deployments", headers=bearer(token))
    description = "The token issuer cannot be reached and no keys are cached."
    assert_refusal(response, 503, None,
                   {"error": "temporarily_unavailable", "error_description": description})
    assert response.headers["retry-after"] == "1"
    # Still 503 (not 401, not 500) while the issuer stays down, Retry-After a positive integer.
    again = client.get("/deployments", headers=bearer(token))
    assert again.status_code == 503
    assert "www-authenticate" not in again.headers
    assert 1 <= int(again.headers["retry-after"]) <= 30


def test_issuer_down_after_warm_failure_is_503_and_recovers(
        issuer: KeySetServer, make_settings: Callable[..., GuardSettings]) -> None:
    settings = make_settings(http_timeout=1.0)
    token = issuer.mint()
    issuer.stop()
    with TestClient(deployment_app(settings)) as client:  # warm-up fails, startup does not
        response = client.get("/deployments", headers=bearer(token))
        assert response.status_code == 503
        assert response.json()["error"] == "temporarily_unavailable"
        assert "www-authenticate" not in response.headers
        issuer.start()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # the backoff is 1-2 s after one or two failures
            response = client.get("/deployments", headers=bearer(token))
            if response.status_code != 503:
                break
            time.sleep(0.1)
        assert response.status_code == 200


# -- row 6: public paths and CORS preflight pass through untouched ---------------------------

def test_public_paths_need_no_token_and_see_none(client: TestClient) -> None:
    for path in ("/health", "/docs/index"):
        response = client.get(path)
        assert response.status_code == 200
        assert response.json() == {"ok": True, "token": None}
        assert "www-authenticate" not in response.headers


def test_public_paths_are_untouched_even_with_bad_credentials(client: TestClient,
                                                              issuer: KeySetServer) -> None:
    for headers in ({"Authorization": "Bearer not-a-token"},
                    {"Authorization": "Bearer"},
                    {"Authorization": f"Bearer {issuer.mint(aud=['other'])}"}):
        response = client.get("/health", headers=headers)
        assert response.status_code == 200
        assert response.json() == {"ok": True, "token": None}
    assert client.get("/health?access_token=x").json() == {"ok": True, "token": None}


def test_public_path_matching_is_exact_or_prefix(client: TestClient) -> None:
    for path in ("/healthz", "/health/", "/doc", "/Health"):
        response = client.get(path)
        assert_refusal(response, 401, 'Bearer realm="api"', MISSING)


PREFLIGHT = {"Origin": "https://console.example", "Access-Control-Request-Method": "POST"}


def _echo_app(settings: GuardSettings) -> Starlette:
    async def echo(request: Request) -> JSONResponse:
        return JSONResponse({"method": request.method,
                             "token": request.scope.get("m2m_guard.token")})

    return Starlette(routes=[Route("/deployments", echo, methods=["GET", "OPTIONS"])],
                     middleware=[Middleware(M2MGuardMiddleware, settings=settings)])


def test_cors_preflight_passes_untouched(settings: GuardSettings) -> None:
    with TestClient(_echo_app(settings)) as client:
        response = client.options("/deployments", headers=PREFLIGHT)
        assert response.status_code == 200
        assert response.json() == {"method": "OPTIONS", "token": None}
        # an OPTIONS request that is not a preflight is guarded like any request
        plain = client.options("/deployments", headers={"Origin": "https://console.example"})
        assert_refusal(plain, 401, 'Bearer realm="api"', MISSING)


def test_cors_preflight_guarded_when_not_allowed(settings: GuardSettings) -> None:
    with TestClient(_echo_app(settings.replace(allow_cors_preflight=False))) as client:
        response = client.options("/deployments", headers=PREFLIGHT)
        assert_refusal(response, 401, 'Bearer realm="api"', MISSING)


def test_cors_middleware_behind_the_guard_answers_preflight(settings: GuardSettings,
                                                            issuer: KeySetServer) -> None:
    app = deployment_app(settings)
    app.user_middleware.append(Middleware(CORSMiddleware, allow_origins=["https://console.example"],
                                          allow_methods=["GET", "POST"],
                                          allow_headers=["Authorization"]))
    with TestClient(app) as client:
        response = client.options("/deployments", headers=PREFLIGHT)
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "https://console.example"
        # the real request after the preflight still needs its token
        response = client.post("/deployments", headers={"Origin": "https://console.example"})
        assert response.status_code == 401
        response = client.post("/deployments", headers={"Origin": "https://console.example",
                                                        **bearer(issuer.mint())})
        assert response.status_code == 200


# -- realm, header hygiene -------------------------------------------------------------------

def test_configured_realm_appears_in_every_challenge(issuer: KeySetServer,
                                                     make_settings: Callable[..., GuardSettings],
                                                     ) -> None:
    settings = make_settings(realm="deployments")
    with TestClient(deployment_app(settings)) as client:
        challenge = client.get("/deployments").headers["www-authenticate"]
        assert challenge == 'Bearer realm="deployments"'
        assert client.get("/deployments", headers={"Authorization": "Bearer"}).headers[
            "www-authenticate"] == ('Bearer realm="deployments", error="invalid_request", '
                                    'error_description="The Authorization header has the Bearer '
                                    'scheme but no token."')
        assert client.get("/deployments", headers=bearer(issuer.mint(aud=["x"]))).headers[
            "www-authenticate"] == invalid_token_challenge(
                "The token is not meant for this audience.", realm="deployments")
        assert client.get("/admin", headers=bearer(issuer.mint())).headers[
            "www-authenticate"] == (
                'Bearer realm="deployments", error="insufficient_scope", '
                'error_description="The access token lacks the scope: admin:platform", '
                'scope="admin:platform"')


def test_success_responses_carry_no_guard_headers(client: TestClient, issuer: KeySetServer) -> None:
    response = client.get("/deployments", headers=bearer(issuer.mint()))
    assert response.status_code == 200
    assert "www-authenticate" not in response.headers
    assert "cache-control" not in response.headers


HOSTILE_HEADERS: list[str | bytes] = [
    'Bearer "injected", error="none"',
    "Bearer \\x",
    "Bearer abc\x7f",
    ("Bearer " + "é" * 10).encode("utf-8"),
    "Bearer abc\x00def".encode("latin-1"),
    "Bearer a\"b\\c",
    "Bearer ..",
]


def _hostile_tokens(issuer: KeySetServer) -> list[str]:
    key = issuer.keys[0]
    return [
        issuer.mint(headers={"kid": 'snk"\\ injected="1'}),
        issuer.mint(headers={"kid": "x" * 300}),
        issuer.mint(headers={"kid": "\u202e\u0000evil"}),
        issuer.mint(typ='JWT", error="x'),
        key.sign_raw(b'{"alg":"RS256\\", scope=\\"admin","kid":"snk_rs256"}', b"{}",
                     alg="RS256"),
        issuer.mint(headers={"crit": ['"\\']}),
        issuer.mint(iss='https://evil.example/"\\'),
        issuer.mint(aud=['deployment-api"']),
        key.sign_raw(b'{"alg":"RS256","kid":"snk_rs256"}', b'{"exp": "\\"\\\\"}'),
        key.sign_raw(b'{"alg":"RS256","kid":"\\u0000\\"\\\\"}', b"{}"),
    ]


def test_descriptions_never_echo_hostile_input(client: TestClient, issuer: KeySetServer) -> None:
    """Whatever the client sends, challenges parse as RFC 6750 auth-params and bodies are JSON."""
    requests = [{"Authorization": value} for value in HOSTILE_HEADERS]
    requests += [bearer(token) for token in _hostile_tokens(issuer)]
    for headers in requests:
        response = client.get("/deployments", headers=headers)
        assert response.status_code in (400, 401), (headers, response.text)
        challenge = response.headers["www-authenticate"]
        match = _CHALLENGE.fullmatch(challenge)
        assert match is not None, challenge
        body = response.json()
        assert set(body) == {"error", "error_description"}
        assert body["error"] == match.group(2) == ("invalid_request" if response.status_code == 400
                                                   else "invalid_token")
        assert body["error_description"] == match.group(3)
        assert re.fullmatch(_PARAM_CHARS, body["error_description"])
        assert "injected" not in challenge and "evil" not in challenge
        assert len(body["error_description"]) <= 200
