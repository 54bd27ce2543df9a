"""The behaviour contract (docs/architecture.md) across every framework: the same requests
give the same status, `WWW-Authenticate` header and JSON body in Starlette, FastAPI, Flask,
plain WSGI, Django (sync and async views) and Django REST framework.

Every `drivers_*.py` module next to this file contributes drivers (see `harness.py`). The set of
driver names is fixed: a framework whose driver is missing or fails to import fails the suite,
it is never skipped. Each case runs through every driver against a real key-set server on
loopback; each reply is compared with the contract and with the replies of the other frameworks.

Operability is part of the contract: the health endpoint (`health_path`) and the RFC 9728
document (`resource`) are answered alike, before authentication, and only when configured; the
challenges carry ``resource_metadata`` exactly when configured.
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
HEALTH = "/.well-known/m2m-guard/health"
RESOURCE = "https://api.example.com/deployments-api"
METADATA_PATH = "/.well-known/oauth-protected-resource/deployments-api"
METADATA_URL = "https://api.example.com" + METADATA_PATH
OPERABLE = {"health_path": HEALTH, "resource": RESOURCE,
            "resource_scopes": ("read:deployments", "deploy:applications")}


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
               realm: str = "api", resource_metadata: str | None = None) -> str:
    value = f'Bearer realm="{realm}"'
    if error is not None:
        value += f', error="{error}", error_description="{description}"'
    if scope is not None:
        value += f', scope="{scope}"'
    if resource_metadata is not None:
        value += f', resource_metadata="{resource_metadata}"'
    return value


@dataclass(frozen=True)
class Expected:
    """What the contract demands. `challenge` None means no `WWW-Authenticate` header; `body`
    None means "a JSON object" (success bodies are the app's own). `status` None means "whatever
    the framework answers, as long as the guard did not" (CORS preflight: each framework has its
    own OPTIONS handling).

    For the guard's own answers: `cache_control` is the expected ``Cache-Control`` (checked with
    `body`), `headers` more headers with their exact values, `summary` the part of a JSON body
    that is compared (a health document holds timings), `empty` a HEAD answer (no body)."""

    status: int | None
    challenge: str | None = None
    body: Mapping[str, Any] | None = None
    retry_after: bool = False
    cache_control: str = "no-store"
    headers: Mapping[str, str] = field(default_factory=dict)
    summary: Callable[[Any], Any] | None = None
    empty: bool = False


def _refusal(status: int, error: str, description: str, *, code: str | None = None,
             scope: str | None = None, realm: str = "api",
             resource_metadata: str | None = None) -> Expected:
    body: dict[str, Any] = {"error": error, "error_description": description}
    if scope is not None:
        body["scope"] = scope
    return Expected(status, _challenge(code, description, scope, realm, resource_metadata), body)


MISSING = _refusal(401, "missing_token", "A bearer token is required.")


def _invalid_request(description: str) -> Expected:
    return _refusal(400, "invalid_request", description, code="invalid_request")


def _invalid_token(description: str) -> Expected:
    return _refusal(401, "invalid_token", description, code="invalid_token")


MALFORMED = "The access token is malformed: "
NO_TOKEN = "the Authorization header has the Bearer scheme but no token."
CHARACTERS = "it contains characters a bearer token cannot contain (RFC 6750 b64token)."
MALFORMED_CREDENTIALS = [
    ("bearer-without-token", "Bearer", NO_TOKEN),
    ("bearer-and-spaces-only", "Bearer    ", NO_TOKEN),
    ("inner-spaces", "Bearer a b",
     "it contains whitespace; send exactly one token after Bearer."),
    ("json-serialized-jws", 'Bearer {"protected":"e30","payload":"e30","signature":"c2ln"}',
     "it is JSON (a JSON-serialized JWS?); send the compact form header.payload.signature."),
    ("exclamation-marks", "Bearer !!!!", CHARACTERS),
    ("question-mark", "Bearer ?", CHARACTERS),
    ("quoted-token", 'Bearer "abc.def.ghi"', "it is quoted; send the token without quotes."),
    ("inner-padding", "Bearer ab=cd", "it has '=' inside; padding may only end a token."),
    ("tab-separator", "Bearer\tabc.def.ghi",
     "Bearer and the token must be separated by a space, not a tab."),
]


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


def _warm_then(method: str, path: str) -> Callable[[World], Reply]:
    """A verified request first (so every framework holds the key set), then `method` `path`
    without credentials."""
    def run(world: World) -> Reply:
        warm = world.get("/deployments", bearer(world.issuer.mint()))
        assert warm.status == 200, warm
        return world.driver.request(method, path)
    return run


def _head_like_get(path: str, *, warm: bool = False) -> Callable[[World], Reply]:
    """HEAD `path`, checked against GET: the same status and headers, no body. Content-Length
    is the GET body's, compared exactly unless the document holds timings (health)."""
    def run(world: World) -> Reply:
        if warm:
            assert world.get("/deployments", bearer(world.issuer.mint())).status == 200
        got = world.get(path)
        head = world.driver.request("HEAD", path)
        assert head.status == got.status, (head, got)
        for name in ("content-type", "cache-control"):
            assert head.headers.get(name) == got.headers.get(name), (name, head, got)
        length = head.headers.get("content-length", "")
        assert length.isdigit() and int(length) > 0, head
        if not warm:
            assert length == got.headers.get("content-length"), (head, got)
        return head
    return run


def _health_summary(document: Any) -> Any:
    """What every framework's health document agrees on (ages and times differ)."""
    return {"status": document["status"], "ready": document["ready"],
            "issuers": [{key: entry[key] for key in ("status", "usable", "keys", "key_ids")}
                        for entry in document["issuers"].values()]}


def _not_ready_summary(document: Any) -> Any:
    # A cold issuer is "cold" where nothing tried it yet and "unavailable" where the app's
    # startup warm-up (ASGI lifespan) already failed: both are not usable.
    return {"status": document["status"], "ready": document["ready"],
            "issuers": [{"usable": entry["usable"], "keys": entry["keys"],
                         "cold_or_unavailable": entry["status"] in ("cold", "unavailable")}
                        for entry in document["issuers"].values()]}


READY = {"status": "ready", "ready": True, "issuers": [
    {"status": "fresh", "usable": True, "keys": 4,
     "key_ids": ["snk_rs256", "snk_ps256", "snk_es256", "snk_eddsa"]}]}
NOT_READY = {"status": "not_ready", "ready": False, "issuers": [
    {"usable": False, "keys": 0, "cold_or_unavailable": True}]}


def _metadata_document(world: World) -> Reply:
    reply = world.get(METADATA_PATH)
    # The issuer's URL is the fixture's: checked here, the rest by the expectation.
    assert isinstance(reply.body, dict), reply
    assert reply.body.get("authorization_servers") == [world.issuer.url], reply
    return reply


def _metadata_summary(document: Any) -> Any:
    return {key: value for key, value in document.items() if key != "authorization_servers"}


MTLS_MISSING = ("The access token is bound to a client certificate (RFC 8705) and the "
                "request presented none.")


def _bound(world: World) -> str:
    # The SHA-256 thumbprint of a certificate no test client presents.
    return world.issuer.mint(cnf={"x5t#S256": "q" * 42 + "A"})


def _twice_bound(world: World) -> Reply:
    """The same bound token twice: the second is a cache hit, and must still be refused (no
    fast path lets a token with cnf skip its check)."""
    token = _bound(world)
    first = world.get("/deployments", bearer(token))
    second = world.get("/deployments", bearer(token))
    assert (first.status, first.body) == (second.status, second.body), (first, second)
    return second


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
    # A Bearer credential that is not a well-formed token: 401 invalid_token (RFC 6750 §3.1),
    # the description naming the defect without repeating the input.
    *(Case(name, (lambda value: lambda w: w.get("/deployments",
                                                {"Authorization": value}))(value),
           _invalid_token(MALFORMED + defect))
      for name, value, defect in MALFORMED_CREDENTIALS),
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
    # -- certificate-bound tokens (RFC 8705): no test client brings a client certificate -----
    Case("mtls-bound-without-certificate", lambda w: w.get("/deployments", bearer(_bound(w))),
         _invalid_token(MTLS_MISSING)),
    Case("mtls-bound-cached-without-certificate", _twice_bound, _invalid_token(MTLS_MISSING)),
    Case("mtls-untrusted-certificate-header", lambda w: w.get("/deployments", {
        **bearer(_bound(w)), "x-forwarded-client-cert": f"Hash={'ab' * 32}"}),
        _invalid_token(MTLS_MISSING)),
    Case("mtls-cnf-not-an-object", lambda w: w.get("/deployments", bearer(w.issuer.mint(
        cnf="x5t"))), _invalid_token("The token's cnf claim is not a non-empty JSON object.")),
    # -- operability: the health endpoint, the RFC 9728 document, resource_metadata ----------
    Case("health-ready", _warm_then("GET", HEALTH),
         Expected(200, body=READY, summary=_health_summary), settings=OPERABLE),
    Case("health-cold-and-down", lambda w: w.get(HEALTH),
         Expected(503, body=NOT_READY, summary=_not_ready_summary),
         issuer_down_from_start=True, settings={**OPERABLE, "http_timeout": 0.5}),
    Case("health-ignores-credentials", lambda w: w.get(HEALTH, {"Authorization": "Bearer a b"}),
         Expected(503, body=NOT_READY, summary=_not_ready_summary),
         issuer_down_from_start=True, settings={**OPERABLE, "http_timeout": 0.5}),
    Case("health-head", _head_like_get(HEALTH, warm=True), Expected(200, empty=True),
         settings=OPERABLE),
    Case("health-post", _warm_then("POST", HEALTH),
         Expected(405, body={"error": "method_not_allowed"}, headers={"allow": "GET, HEAD"}),
         settings=OPERABLE),
    Case("resource-metadata-document", _metadata_document,
         Expected(200, body={"resource": RESOURCE, "bearer_methods_supported": ["header"],
                             "scopes_supported": ["read:deployments", "deploy:applications"]},
                  cache_control="public, max-age=3600", summary=_metadata_summary),
         settings=OPERABLE),
    Case("resource-metadata-head", _head_like_get(METADATA_PATH),
         Expected(200, cache_control="public, max-age=3600", empty=True), settings=OPERABLE),
    Case("resource-metadata-post", lambda w: w.driver.request("POST", METADATA_PATH),
         Expected(405, body={"error": "method_not_allowed"}, headers={"allow": "GET, HEAD"}),
         settings=OPERABLE),
    Case("resource-metadata-missing-token", lambda w: w.get("/deployments"),
         _refusal(401, "missing_token", "A bearer token is required.",
                  resource_metadata=METADATA_URL), settings=OPERABLE),
    Case("resource-metadata-invalid-token", lambda w: w.get("/deployments",
                                                            bearer(_expired(w))),
         _refusal(401, "invalid_token", "The token has expired.", code="invalid_token",
                  resource_metadata=METADATA_URL), settings=OPERABLE),
    Case("resource-metadata-malformed", lambda w: w.get("/deployments",
                                                        {"Authorization": "Bearer"}),
         _refusal(401, "invalid_token", MALFORMED + NO_TOKEN,
                  code="invalid_token", resource_metadata=METADATA_URL), settings=OPERABLE),
    Case("resource-metadata-insufficient-scope", lambda w: w.get(
        "/admin/audit", bearer(w.issuer.mint())),
        _refusal(403, "insufficient_scope", "The access token lacks the scope: admin:platform",
                 code="insufficient_scope", scope="admin:platform",
                 resource_metadata=METADATA_URL), settings=OPERABLE),
    Case("resource-metadata-insufficient-scope-post", lambda w: w.driver.request(
        "POST", "/deployments", headers=bearer(w.issuer.mint(scopes=["read:deployments"])),
        json={"service": "billing"}),
        _refusal(403, "insufficient_scope",
                 "The access token lacks the scope: deploy:applications",
                 code="insufficient_scope", scope="deploy:applications",
                 resource_metadata=METADATA_URL), settings=OPERABLE),
    Case("resource-metadata-url-only", lambda w: w.get("/admin/audit", bearer(w.issuer.mint())),
         _refusal(403, "insufficient_scope", "The access token lacks the scope: admin:platform",
                  code="insufficient_scope", scope="admin:platform",
                  resource_metadata="https://meta.example/rs"),
         settings={"resource_metadata_url": "https://meta.example/rs"}),
    Case("resource-metadata-not-with-503", lambda w: w.get("/deployments",
                                                           bearer(w.issuer.mint())),
         Expected(503, None, {"error": "temporarily_unavailable", "error_description":
                              "The token issuer cannot be reached and no keys are cached."},
                  retry_after=True),
         issuer_down_from_start=True, settings={**OPERABLE, "http_timeout": 0.5}),
]


# -- rules beyond scopes (examples/rules.py): claim values, client allow-lists, predicates ----
# A verified token failing a rule that is not about scopes: 403, a bare challenge (RFC 6750 has
# no error code for it), body access_denied naming the failed rule (docs/decisions.md).

def _denied(rule: str, *, resource_metadata: str | None = None) -> Expected:
    return _refusal(403, "access_denied", f"The token does not satisfy the rule {rule}",
                    resource_metadata=resource_metadata)


PRODUCTION_US = {"environment": "production_us"}
OTHER_CLIENT = "m2morg_99999999999999999"
RELEASE_RULE = "any_of(scopes:admin:platform, release-service)"

RULE_CASES = [
    Case("claim-rule-met", lambda w: w.get("/production/deployments", bearer(w.issuer.mint(
        custom_claims=PRODUCTION_US))), Expected(200)),
    Case("claim-rule-other-value", lambda w: w.get("/production/deployments",
                                                   bearer(w.issuer.mint())),
         _denied("claim:custom_claims.environment")),
    Case("claim-rule-array-is-not-the-value", lambda w: w.get(
        "/production/deployments", bearer(w.issuer.mint(
            custom_claims={"environment": ["production_us"]}))),
        _denied("claim:custom_claims.environment")),
    Case("claim-rule-claim-absent", lambda w: w.get("/production/deployments", bearer(
        w.issuer.mint(custom_claims=None))), _denied("claim:custom_claims.environment")),
    Case("claim-rule-scope-part-first", lambda w: w.get("/production/deployments", bearer(
        w.issuer.mint(scopes=["read:deployments"], custom_claims=PRODUCTION_US))),
        _refusal(403, "insufficient_scope",
                 "The access token lacks the scope: deploy:applications",
                 code="insufficient_scope", scope="deploy:applications")),
    Case("client-rule-met", lambda w: w.get("/admin/clients", bearer(w.issuer.mint())),
         Expected(200)),
    Case("client-rule-other-client", lambda w: w.get("/admin/clients", bearer(w.issuer.mint(
        client_id=OTHER_CLIENT, sub=OTHER_CLIENT))), _denied("clients")),
    Case("any-of-rule-scope", lambda w: w.get("/releases", bearer(w.issuer.mint(
        scopes=["admin:platform"]))), Expected(200)),
    Case("any-of-rule-predicate", lambda w: w.get("/releases", bearer(w.issuer.mint(
        custom_claims={"environment": "production", "service": "release"}))), Expected(200)),
    Case("any-of-rule-neither", lambda w: w.get("/releases", bearer(w.issuer.mint())),
         _denied(RELEASE_RULE)),
    Case("rule-missing-token", lambda w: w.get("/production/deployments"), MISSING),
    Case("rule-denied-with-resource-metadata", lambda w: w.get(
        "/admin/clients", bearer(w.issuer.mint(client_id=OTHER_CLIENT, sub=OTHER_CLIENT))),
        _denied("clients", resource_metadata=METADATA_URL), settings=OPERABLE),
    Case("rule-denied-configured-realm", lambda w: w.get("/releases", bearer(w.issuer.mint())),
         _refusal(403, "access_denied", f"The token does not satisfy the rule {RELEASE_RULE}",
                  realm="deployments"), settings={"realm": "deployments"}),
]
CASES += RULE_CASES


def _refused_twice(path: str, **claims: Any) -> Callable[[World], Reply]:
    """The same refused token twice: a token failing an app-wide rule is never cached, so the
    second answer is the first one again (and not the cache's)."""
    def run(world: World) -> Reply:
        token = world.issuer.mint(**claims)
        first = world.get(path, bearer(token))
        second = world.get(path, bearer(token))
        assert (first.status, first.headers.get("www-authenticate"), first.body) == (
            second.status, second.headers.get("www-authenticate"), second.body), (first, second)
        return second
    return run


PRODUCTION_ONLY = {"required_claim_values": {"custom_claims.environment": ["production_us"]}}

# App-wide rules (settings): checked inside verification, before the token is cached.
APP_RULE_CASES = [
    Case("app-allowed-clients-met", lambda w: w.get("/deployments", bearer(w.issuer.mint())),
         Expected(200), settings={"allowed_clients": (CLIENT_ID, OTHER_CLIENT)}),
    Case("app-allowed-clients-refused", _refused_twice("/deployments"),
         _denied("allowed_clients"), settings={"allowed_clients": (OTHER_CLIENT,)}),
    Case("app-claim-values-met", lambda w: w.get("/deployments", bearer(w.issuer.mint(
        custom_claims=PRODUCTION_US))), Expected(200), settings=PRODUCTION_ONLY),
    Case("app-claim-values-refused", _refused_twice("/deployments"),
         _denied("claim:custom_claims.environment"), settings=PRODUCTION_ONLY),
    Case("app-claim-values-before-route-scopes", lambda w: w.get("/admin/audit", bearer(
        w.issuer.mint())), _denied("claim:custom_claims.environment"),
        settings=PRODUCTION_ONLY),
    Case("app-rule-with-resource-metadata", lambda w: w.get("/deployments", bearer(
        w.issuer.mint())), _denied("allowed_clients", resource_metadata=METADATA_URL),
        settings={**OPERABLE, "allowed_clients": (OTHER_CLIENT,)}),
]
CASES += APP_RULE_CASES


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
    if expected.empty:
        if reply.body is not None:
            problems.append(f"body {reply.body!r} is not empty")
    elif expected.body is None:
        if not isinstance(reply.body, dict):
            problems.append(f"body {reply.body!r} is not a JSON object")
    else:
        body = _compared_body(reply, expected)
        if body != dict(expected.body):
            problems.append(f"body {body!r} != {dict(expected.body)!r}")
    if expected.body is not None or expected.empty:
        for name, value in (("content-type", "application/json"),
                            ("cache-control", expected.cache_control)):
            if reply.headers.get(name, "").split(";")[0].strip() != value:
                problems.append(f"{name} {reply.headers.get(name)!r} != {value!r}")
    for name, value in expected.headers.items():
        if reply.headers.get(name) != value:
            problems.append(f"{name} {reply.headers.get(name)!r} != {value!r}")
    retry_after = reply.headers.get("retry-after")
    if expected.retry_after:
        if retry_after is None or not retry_after.isdigit() or not (
                1 <= int(retry_after) <= settings.jwks_refetch_cooldown):
            problems.append(f"retry-after {retry_after!r} is not 1..cooldown seconds")
    elif retry_after is not None:
        problems.append(f"unexpected retry-after {retry_after!r}")
    return problems


def _compared_body(reply: Reply, expected: Expected) -> Any:
    if expected.summary is not None and isinstance(reply.body, dict):
        try:
            return expected.summary(reply.body)
        except (KeyError, TypeError, AttributeError):
            return reply.body  # not the expected document: shown whole in the mismatch
    return reply.body


def _guard_view(reply: Reply, expected: Expected) -> tuple[Any, ...]:
    """The part of a reply every framework must agree on (success bodies are each app's own, and
    so is the answer to a request the guard let through without a status in mind)."""
    if expected.status is None:
        return (reply.headers.get("www-authenticate"),)
    guards_own = expected.body is not None or expected.empty  # the guard answered
    body = _compared_body(reply, expected) if reply.status >= 400 or guards_own \
        else type(reply.body).__name__
    # The app's own answers carry its own Cache-Control; DRF adds Allow to every answer.
    names = ["www-authenticate", "retry-after", *sorted(expected.headers)]
    if guards_own:
        names.append("cache-control")
    headers = tuple(reply.headers.get(name) for name in names)
    return (reply.status, headers, body)


def assert_one_answer(replies: Mapping[str, Reply], problems: Mapping[str, list[str]],
                      expected: Expected) -> None:
    """Every set-up kept the contract (`problems` is empty) and gave the same answer."""
    views = {name: _guard_view(reply, expected) for name, reply in replies.items()}
    disagreeing = {name: view for name, view in views.items()
                   if view != next(iter(views.values()))}
    assert not problems, "frameworks breaking the contract: " + "; ".join(
        f"{name}: {', '.join(found)}" for name, found in problems.items())
    assert not disagreeing, f"frameworks disagree: {views}"


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
    assert_one_answer(replies, problems, case.expected)


def test_operational_paths_are_ordinary_paths_when_not_configured(
        issuer: KeySetServer, make_settings: Callable[..., GuardSettings]) -> None:
    """Without `health_path` and `resource`, nothing is served at their usual paths: each is
    answered exactly like a path the app does not route (401 where a middleware guards every
    path, the framework's 404 where routes are guarded one by one), and with a valid token the
    request reaches the app, which has no such route (404)."""
    settings = make_settings(public_paths=("/health",))
    problems: dict[str, list[str]] = {}
    anonymous_statuses: dict[str, int] = {}
    for name, factory in sorted(DRIVERS.items()):
        found: list[str] = []
        with factory(settings) as driver:
            token = bearer(issuer.mint())
            unknown = driver.request("GET", "/no-such-route")
            unknown_with_token = driver.request("GET", "/no-such-route", headers=token)
            for path in (HEALTH, "/.well-known/oauth-protected-resource"):
                anonymous = driver.request("GET", path)
                with_token = driver.request("GET", path, headers=token)
                for got, like in ((anonymous, unknown), (with_token, unknown_with_token)):
                    if (got.status, got.headers.get("www-authenticate"), got.body) != (
                            like.status, like.headers.get("www-authenticate"), like.body):
                        found.append(f"{path}: {got} differs from an unrouted path's {like}")
                if with_token.status != 404:
                    found.append(f"{path} with a token: {with_token.status} != 404")
                if anonymous.status == 401:
                    found += [f"{path}: {problem}"
                              for problem in _mismatches(anonymous, MISSING, settings)]
                elif anonymous.status != 404:
                    found.append(f"{path} without a token: {anonymous.status}")
                anonymous_statuses[name] = anonymous.status
        if found:
            problems[name] = found
    assert not problems, problems
    assert set(anonymous_statuses) == EXPECTED_DRIVERS
