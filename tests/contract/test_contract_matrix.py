"""DESIGN §4 across every framework: the same requests give the same status, `WWW-Authenticate`
header and JSON body in Starlette, FastAPI, Flask, plain WSGI, Django (sync and async views) and
Django REST framework.

Every `drivers_*.py` module next to this file contributes drivers (see `harness.py`). The set of
driver names is fixed: a framework whose driver is missing or fails to import fails the suite,
it is never skipped. Each case runs through every driver against a real key-set server on
loopback; each reply is compared with the contract and with the replies of the other frameworks.
"""

from __future__ import annotations

import importlib
import pkgutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from m2m_guard import GuardSettings
from m2m_guard.local_issuer import KeySetServer, SigningKey
from m2m_guard.local_issuer.signing import scalekit_claims

from .harness import Driver, DriverFactory, Headers, Reply

EXPECTED_DRIVERS = {"starlette", "fastapi", "flask", "wsgi", "django-sync", "django-async", "drf"}
CLIENT_ID = "m2morg_68315758685323697"  # what KeySetServer.mint puts in client_id


def _load_drivers() -> tuple[dict[str, DriverFactory], dict[str, str]]:
    drivers: dict[str, DriverFactory] = {}
    broken: dict[str, str] = {}
    for module in sorted(pkgutil.iter_modules(_package_path())):
        if not module.name.startswith("drivers_"):
            continue
        try:
            loaded = importlib.import_module(f"{__package__}.{module.name}")
        except Exception as exc:  # reported by test_every_framework_has_a_driver
            broken[module.name] = f"{type(exc).__name__}: {exc}"
            continue
        for name, factory in getattr(loaded, "DRIVERS", {}).items():
            assert name not in drivers, f"driver {name!r} is defined twice"
            drivers[name] = factory
    return drivers, broken


def _package_path() -> list[str]:
    package = importlib.import_module(__package__ or "tests.contract")
    return list(package.__path__)


DRIVERS, BROKEN = _load_drivers()


def test_every_framework_has_a_driver() -> None:
    assert not BROKEN, f"driver modules that fail to import: {BROKEN}"
    assert set(DRIVERS) == EXPECTED_DRIVERS, (
        f"missing: {sorted(EXPECTED_DRIVERS - set(DRIVERS))}, "
        f"unexpected: {sorted(set(DRIVERS) - EXPECTED_DRIVERS)}")


# -- the contract --------------------------------------------------------------------------

def _challenge(error: str | None = None, description: str = "", scope: str | None = None,
               realm: str = "api") -> str:
    value = f'Bearer realm="{realm}"'
    if error is not None:
        value += f', error="{error}", error_description="{description}"'
    if scope is not None:
        value += f', scope="{scope}"'
    return value


@dataclass(frozen=True)
class Expected:
    """What the contract demands. `challenge` None means no `WWW-Authenticate` header; `body`
    None means "a JSON object" (success bodies are the app's own). `status` None means "whatever
    the framework answers, as long as the guard did not" (CORS preflight: each framework has its
    own OPTIONS handling)."""

    status: int | None
    challenge: str | None = None
    body: Mapping[str, Any] | None = None
    retry_after: bool = False


def _refusal(status: int, error: str, description: str, *, code: str | None = None,
             scope: str | None = None, realm: str = "api") -> Expected:
    body: dict[str, Any] = {"error": error, "error_description": description}
    if scope is not None:
        body["scope"] = scope
    return Expected(status, _challenge(code, description, scope, realm), body)


MISSING = _refusal(401, "missing_token", "A bearer token is required.")


def _invalid_request(description: str) -> Expected:
    return _refusal(400, "invalid_request", description, code="invalid_request")


def _invalid_token(description: str) -> Expected:
    return _refusal(401, "invalid_token", description, code="invalid_token")


@dataclass
class World:
    """What a case may use: the running driver, the issuer and its keys."""

    driver: Driver
    issuer: KeySetServer
    keys: dict[str, SigningKey]

    def get(self, path: str, headers: Headers | None = None) -> Reply:
        return self.driver.request("GET", path, headers=headers)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _stranger_signed(world: World) -> str:
    # Same kid as the published RS256 key, different private key: the signature cannot match.
    impostor = SigningKey.generate("RS256", kid=world.keys["RS256"].kid)
    return world.issuer.mint(impostor)


def _foreign_issuer(world: World) -> str:
    return world.keys["RS256"].sign(scalekit_claims("https://issuer.example.com"))


def _expired(world: World) -> str:
    now = int(time.time())
    return world.issuer.mint(iat=now - 7200, nbf=now - 7200, exp=now - 3600)


def _down_with_cached_keys(world: World) -> Reply:
    warm = world.get("/deployments", bearer(world.issuer.mint()))
    assert warm.status == 200, warm
    world.issuer.stop()
    # A token the guard has not seen: it must be verified with the cached key set.
    return world.get("/deployments", bearer(world.issuer.mint()))


@dataclass(frozen=True)
class Case:
    name: str
    run: Callable[[World], Reply]
    expected: Expected
    issuer_down_from_start: bool = False
    settings: Mapping[str, Any] = field(default_factory=dict)


CASES = [
    Case("valid-get", lambda w: w.get("/deployments", bearer(w.issuer.mint())), Expected(200)),
    Case("valid-post", lambda w: w.driver.request(
        "POST", "/deployments", headers=bearer(w.issuer.mint()),
        json={"service": "billing", "version": "1.5.0"}), Expected(202)),
    Case("valid-es256", lambda w: w.get("/deployments", bearer(w.issuer.mint(w.keys["ES256"]))),
         Expected(200)),
    Case("missing-token", lambda w: w.get("/deployments"), MISSING),
    Case("missing-token-post", lambda w: w.driver.request(
        "POST", "/deployments", json={"service": "billing"}), MISSING),
    Case("basic-scheme", lambda w: w.get("/deployments",
                                         {"Authorization": "Basic dXNlcjpwYXNz"}), MISSING),
    Case("malformed-header", lambda w: w.get("/deployments", {"Authorization": "Bearer a b"}),
         _invalid_request("The bearer token contains characters RFC 6750 does not allow.")),
    Case("bearer-without-token", lambda w: w.get("/deployments", {"Authorization": "Bearer"}),
         _invalid_request("The Authorization header has the Bearer scheme but no token.")),
    Case("two-authorization-headers", lambda w: w.get("/deployments", [
        ("Authorization", f"Bearer {w.issuer.mint()}"),
        ("Authorization", f"Bearer {w.issuer.mint()}")]),
        _invalid_request("The request has more than one Authorization header.")),
    Case("token-in-query-and-header", lambda w: w.get(
        f"/deployments?access_token={w.issuer.mint()}", bearer(w.issuer.mint())),
        _invalid_request("The token is sent both in the header and in the query string.")),
    Case("token-in-query", lambda w: w.get(f"/deployments?access_token={w.issuer.mint()}"),
         _invalid_request("Tokens in the query string are not accepted; "
                          "send them in the Authorization header.")),
    Case("bad-signature", lambda w: w.get("/deployments", bearer(_stranger_signed(w))),
         _invalid_token("The token signature is invalid.")),
    Case("not-a-jwt", lambda w: w.get("/deployments", bearer("abc.def")),
         _invalid_token("The token is not a compact JWS (three dot-separated segments).")),
    Case("expired", lambda w: w.get("/deployments", bearer(_expired(w))),
         _invalid_token("The token has expired.")),
    Case("wrong-audience", lambda w: w.get("/deployments", bearer(w.issuer.mint(
        aud=["billing-api"]))), _invalid_token("The token is not meant for this audience.")),
    Case("wrong-issuer", lambda w: w.get("/deployments", bearer(_foreign_issuer(w))),
         _invalid_token("The token's issuer is not trusted.")),
    Case("insufficient-scope", lambda w: w.get("/admin/audit", bearer(w.issuer.mint())),
         _refusal(403, "insufficient_scope", "The access token lacks the scope: admin:platform",
                  code="insufficient_scope", scope="admin:platform")),
    Case("insufficient-scope-post", lambda w: w.driver.request(
        "POST", "/deployments", headers=bearer(w.issuer.mint(scopes=["read:deployments"])),
        json={"service": "billing"}),
        _refusal(403, "insufficient_scope",
                 "The access token lacks the scope: deploy:applications",
                 code="insufficient_scope", scope="deploy:applications")),
    Case("token-too-large", lambda w: w.get("/deployments", bearer("a" * 20000)),
         _invalid_token("The token is larger than 16384 bytes.")),
    Case("configured-realm-missing", lambda w: w.get("/deployments"),
         _refusal(401, "missing_token", "A bearer token is required.", realm="deployments"),
         settings={"realm": "deployments"}),
    Case("configured-realm-scope", lambda w: w.get("/admin/audit", bearer(w.issuer.mint())),
         _refusal(403, "insufficient_scope", "The access token lacks the scope: admin:platform",
                  code="insufficient_scope", scope="admin:platform", realm="deployments"),
         settings={"realm": "deployments"}),
    # The guard lets a preflight through before routing; an unrouted path keeps route-level
    # scope checks (which some frameworks run for OPTIONS) out of what is compared here.
    Case("cors-preflight", lambda w: w.driver.request("OPTIONS", "/preflight-only", headers={
        "Origin": "https://console.example", "Access-Control-Request-Method": "POST"}),
        Expected(None)),
    Case("public-path", lambda w: w.get("/health"), Expected(200)),
    Case("public-path-ignores-credentials", lambda w: w.get(
        "/health", {"Authorization": "Bearer a b"}), Expected(200)),
    Case("issuer-down-with-cached-keys", _down_with_cached_keys, Expected(200)),
    Case("cold-and-down", lambda w: w.get("/deployments", bearer(w.issuer.mint())),
         Expected(503, None, {"error": "temporarily_unavailable", "error_description":
                              "The token issuer cannot be reached and no keys are cached."},
                  retry_after=True),
         issuer_down_from_start=True, settings={"http_timeout": 0.5}),
]


def _mismatches(reply: Reply, expected: Expected, settings: GuardSettings) -> list[str]:
    problems = []
    challenge = reply.headers.get("www-authenticate")
    if challenge != expected.challenge:
        problems.append(f"www-authenticate {challenge!r} != {expected.challenge!r}")
    if expected.status is None:  # passed through: the framework answers, never the guard
        if reply.status in (400, 401, 403, 503) or (
                isinstance(reply.body, dict) and "error_description" in reply.body):
            problems.append(f"the guard answered {reply.status} {reply.body!r}")
        return problems
    if reply.status != expected.status:
        problems.append(f"status {reply.status} != {expected.status}")
    if expected.body is None:
        if not isinstance(reply.body, dict):
            problems.append(f"body {reply.body!r} is not a JSON object")
    else:
        if reply.body != dict(expected.body):
            problems.append(f"body {reply.body!r} != {dict(expected.body)!r}")
        for name, value in (("content-type", "application/json"), ("cache-control", "no-store")):
            if reply.headers.get(name, "").split(";")[0].strip() != value:
                problems.append(f"{name} {reply.headers.get(name)!r} != {value!r}")
    retry_after = reply.headers.get("retry-after")
    if expected.retry_after:
        if retry_after is None or not retry_after.isdigit() or not (
                1 <= int(retry_after) <= settings.jwks_refetch_cooldown):
            problems.append(f"retry-after {retry_after!r} is not 1..cooldown seconds")
    elif retry_after is not None:
        problems.append(f"unexpected retry-after {retry_after!r}")
    return problems


def _guard_view(reply: Reply, expected: Expected) -> tuple[Any, ...]:
    """The part of a reply every framework must agree on (success bodies are each app's own, and
    so is the answer to a request the guard let through without a status in mind)."""
    if expected.status is None:
        return (reply.headers.get("www-authenticate"),)
    body = reply.body if reply.status >= 400 else type(reply.body).__name__
    return (reply.status, reply.headers.get("www-authenticate"),
            reply.headers.get("retry-after"), body)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_every_framework_answers_per_contract(
        case: Case, issuer: KeySetServer, signing_keys: dict[str, SigningKey],
        make_settings: Callable[..., GuardSettings]) -> None:
    assert DRIVERS, "no contract drivers found"
    settings = make_settings(public_paths=("/health",), **case.settings)
    replies: dict[str, Reply] = {}
    problems: dict[str, list[str]] = {}
    for name, factory in sorted(DRIVERS.items()):
        if case.issuer_down_from_start:
            issuer.stop()
        try:
            with factory(settings) as driver:
                assert driver.name == name, f"driver {name!r} calls itself {driver.name!r}"
                reply = case.run(World(driver, issuer, signing_keys))
        except Exception as exc:  # one broken framework must not hide the others' answers
            problems[name] = [f"raised {type(exc).__name__}: {exc}"]
            continue
        finally:
            issuer.start()
        replies[name] = reply
        found = _mismatches(reply, case.expected, settings)
        if found:
            problems[name] = found
    views = {name: _guard_view(reply, case.expected) for name, reply in replies.items()}
    disagreeing = {name: view for name, view in views.items()
                   if view != next(iter(views.values()))}
    assert not problems, "frameworks breaking the contract: " + "; ".join(
        f"{name}: {', '.join(found)}" for name, found in problems.items())
    assert not disagreeing, f"frameworks disagree: {views}"
