"""The behaviour contract for DPoP (RFC 9449) across every framework: the same DPoP requests give
the same status, challenges and body in Starlette, FastAPI, Flask, plain WSGI, Django (sync and
async views) and DRF. The proof's `htu` is checked against the URI each server hands the app
(the ASGI scope, the WSGI environ, Django's request): every adapter must derive the same one.

Every request goes to host ``testserver`` (the Starlette and Django test clients' own; Werkzeug's
client is sent ``Host: testserver``; Django's AsyncClient always sends it, and adds a second Host
header when given one), so one proof URL fits every driver. Bound tokens carry ``cnf.jkt``,
signed by the issuer's key.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from m2m_guard import GuardSettings
from m2m_guard.dpop import DPoPKey
from m2m_guard.local_issuer import KeySetServer, SigningKey

from ..servers import free_port
from .harness import Reply
from .test_contract_matrix import DRIVERS, Case, Expected, World, _mismatches, assert_one_answer

HOST = "testserver"
BASE = f"http://{HOST}"
KEY = DPoPKey.generate()
OTHER_KEY = DPoPKey.generate()
ALGS = "RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 ES512 EdDSA"
ALLOWED = {"dpop": "allowed"}
REQUIRED = {"dpop": "required"}


def _bound(world: World, key: DPoPKey = KEY, **claims: Any) -> str:
    return world.issuer.mint(cnf={"jkt": key.thumbprint}, **claims)


def _host(world: World) -> list[tuple[str, str]]:
    return [] if world.driver.name == "django-async" else [("Host", HOST)]


def _dpop(world: World, token: str, *proofs: str) -> list[tuple[str, str]]:
    return [*_host(world), ("Authorization", f"DPoP {token}"),
            *(("DPoP", proof) for proof in proofs)]


def _call(method: str, path: str, *, proof_method: str | None = None,
          proof_path: str | None = None, key: DPoPKey = KEY,
          json: Any = None) -> Callable[[World], Reply]:
    def run(world: World) -> Reply:
        token = _bound(world)
        proof = key.proof(proof_method or method, BASE + (proof_path or path),
                          access_token=token)
        return world.driver.request(method, path, headers=_dpop(world, token, proof), json=json)
    return run


def _replayed(world: World) -> Reply:
    token = _bound(world)
    proof = KEY.proof("GET", BASE + "/deployments", access_token=token)
    first = world.driver.request("GET", "/deployments", headers=_dpop(world, token, proof))
    assert first.status == 200, first
    return world.driver.request("GET", "/deployments", headers=_dpop(world, token, proof))


def _two_proofs(world: World) -> Reply:
    token = _bound(world)
    proofs = [KEY.proof("GET", BASE + "/deployments", access_token=token) for _ in range(2)]
    return world.driver.request("GET", "/deployments", headers=_dpop(world, token, *proofs))


def _as_bearer(world: World) -> Reply:
    token = _bound(world)
    headers = [*_host(world), ("Authorization", f"Bearer {token}")]
    first = world.driver.request("GET", "/deployments", headers=headers)
    assert first.status == 401, first
    return world.driver.request("GET", "/deployments", headers=headers)  # cached: still 401


def _after_dpop_as_bearer(world: World) -> Reply:
    token = _bound(world)
    proof = KEY.proof("GET", BASE + "/deployments", access_token=token)
    good = world.driver.request("GET", "/deployments", headers=_dpop(world, token, proof))
    assert good.status == 200, good
    return world.driver.request("GET", "/deployments", headers=[
        *_host(world), ("Authorization", f"Bearer {token}")])


def _plain_bearer(world: World) -> Reply:
    return world.driver.request("GET", "/deployments", headers=[
        *_host(world), ("Authorization", f"Bearer {world.issuer.mint()}")])


def _dpop_refusal(description: str, *, error: str = "invalid_dpop_proof", bearer: bool = True,
                  status: int = 401, scope: str | None = None) -> Expected:
    params = f', error="{error}", error_description="{description}"'
    if scope is not None:
        params += f', scope="{scope}"'
    challenge = f'DPoP realm="api", algs="{ALGS}"{params}'
    if bearer:
        challenge += ', Bearer realm="api"'
    body: dict[str, Any] = {"error": error, "error_description": description}
    if scope is not None:
        body["scope"] = scope
    return Expected(status, challenge, body)


AS_BEARER = ("The token is bound to a DPoP key (cnf.jkt): send it with Authorization: DPoP and "
             "a DPoP proof, not as Bearer.")

CASES = [
    Case("dpop-valid-get", _call("GET", "/deployments"), Expected(200), settings=ALLOWED),
    Case("dpop-valid-post", _call("POST", "/deployments",
                                           json={"service": "billing", "version": "1.5.0"}),
         Expected(202), settings=REQUIRED),
    Case("dpop-insufficient-scope", _call("GET", "/admin/audit"),
         _dpop_refusal("The access token lacks the scope: admin:platform",
                       error="insufficient_scope", status=403, scope="admin:platform"),
         settings=ALLOWED),
    Case("dpop-replayed", _replayed, _dpop_refusal(
        "The DPoP proof was already used: make a fresh proof (a new jti) for every request."),
        settings=ALLOWED),
    Case("dpop-other-url", _call("GET", "/deployments", proof_path="/admin/audit"),
         _dpop_refusal("The DPoP proof's htu is not the request's URI (scheme, host, port and "
                       "path; query and fragment ignored)."), settings=ALLOWED),
    Case("dpop-other-method", _call("GET", "/deployments", proof_method="POST"),
         _dpop_refusal("The DPoP proof's htm is not the request's method."), settings=ALLOWED),
    Case("dpop-other-key", _call("GET", "/deployments", key=OTHER_KEY),
         _dpop_refusal("The DPoP proof is signed by another key than the one the token is "
                       "bound to (cnf.jkt)."), settings=ALLOWED),
    Case("dpop-two-proofs", _two_proofs,
         _dpop_refusal("The request has more than one DPoP header."), settings=ALLOWED),
    Case("dpop-bound-as-bearer-off", _as_bearer,
         Expected(401, f'Bearer realm="api", error="invalid_token", '
                       f'error_description="{AS_BEARER}"',
                  {"error": "invalid_token", "error_description": AS_BEARER})),
    Case("dpop-bound-as-bearer-after-dpop", _after_dpop_as_bearer,
         Expected(401, f'Bearer realm="api", error="invalid_token", '
                       f'error_description="{AS_BEARER}", DPoP realm="api", algs="{ALGS}"',
                  {"error": "invalid_token", "error_description": AS_BEARER}),
         settings=ALLOWED),
    Case("dpop-missing-token-allowed", lambda w: w.get("/deployments"),
         Expected(401, f'Bearer realm="api", DPoP realm="api", algs="{ALGS}"',
                  {"error": "missing_token", "error_description": "A bearer token is required."}),
         settings=ALLOWED),
    Case("dpop-plain-bearer-allowed", _plain_bearer, Expected(200), settings=ALLOWED),
    # Fail closed: the Redis replay store cannot be reached (nothing listens on its port), with
    # the asyncio client (ASGI, Django async) and the blocking one (WSGI, Flask, Django, DRF).
    Case("dpop-replay-store-down", _call("GET", "/deployments"),
         Expected(503, None, {"error": "temporarily_unavailable", "error_description":
                              "The DPoP replay store cannot be reached; retry shortly."},
                  retry_after=True),
         settings={**ALLOWED, "dpop_replay_store": f"redis://127.0.0.1:{free_port()}/0"}),
    Case("dpop-plain-bearer-required", _plain_bearer, _dpop_refusal(
        "This API accepts DPoP-bound tokens only: send Authorization: DPoP <token> with a DPoP "
        "proof.", error="invalid_token", bearer=False), settings=REQUIRED),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_every_framework_answers_dpop_per_contract(
        case: Case, issuer: KeySetServer, signing_keys: dict[str, SigningKey],
        make_settings: Callable[..., GuardSettings]) -> None:
    assert len(DRIVERS) == 7, sorted(DRIVERS)
    settings = make_settings(public_paths=("/health",), **case.settings)
    replies: dict[str, Reply] = {}
    problems: dict[str, list[str]] = {}
    for name, factory in sorted(DRIVERS.items()):
        try:
            with factory(settings) as driver:
                reply = case.run(World(driver, issuer, signing_keys))
        except Exception as exc:  # one broken framework must not hide the others' answers
            problems[name] = [f"raised {type(exc).__name__}: {exc}"]
            continue
        replies[name] = reply
        found = _mismatches(reply, case.expected, settings)
        if found:
            problems[name] = found
    assert_one_answer(replies, problems, case.expected)


def test_every_framework_refuses_a_replay_with_the_redis_store(
        issuer: KeySetServer, signing_keys: dict[str, SigningKey], redis_url: str,
        make_settings: Callable[..., GuardSettings]) -> None:
    """The shared store through each framework's client (asyncio under ASGI and Django async,
    blocking under WSGI, Flask, Django and DRF), against a real redis-server."""
    settings = make_settings(public_paths=("/health",), dpop="allowed",
                             dpop_replay_store=redis_url)
    expected = _dpop_refusal(
        "The DPoP proof was already used: make a fresh proof (a new jti) for every request.")
    problems = {}
    for name, factory in sorted(DRIVERS.items()):
        with factory(settings) as driver:
            found = _mismatches(_replayed(World(driver, issuer, signing_keys)), expected,
                                settings)
        if found:
            problems[name] = found
    assert not problems, problems
