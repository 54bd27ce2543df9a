"""The gate's side of DPoP, unit by unit: the request URI a proof must name (the same from an
ASGI scope and a WSGI environ; forwarded headers only when configured), server nonces on a fake
clock, the challenges, and one replay store per verifier whatever the number of gates."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from m2m_guard import GuardSettings, TokenVerifier
from m2m_guard._core.confirmation import Confirmation, DPoPConfirmation, NonceSource, request_target
from m2m_guard._core.gate import Check, Gate
from m2m_guard._core.request import AsgiRequest, WsgiRequest
from m2m_guard.dpop import DPoPKey
from m2m_guard.errors import GuardError, InvalidDPoPProof, InvalidToken, UseDPoPNonce, render_error
from m2m_guard.local_issuer import KeySetServer, SigningKey, scalekit_claims

from .conftest import AUDIENCE

BASE = {"issuer": "https://issuer.example", "audience": "api"}


def asgi(path: str, *, root: str = "", host: str = "api.example.com", scheme: str = "https",
         headers: list[tuple[str, str]] | None = None) -> AsgiRequest:
    raw = [(b"host", host.encode())] + [(k.encode(), v.encode("latin-1"))
                                        for k, v in headers or []]
    return AsgiRequest({"type": "http", "method": "GET", "scheme": scheme, "path": root + path,
                        "root_path": root, "headers": raw, "query_string": b"a=1"})


def wsgi(path: str, *, root: str = "", host: str = "api.example.com", scheme: str = "https",
         headers: dict[str, str] | None = None) -> WsgiRequest:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET", "wsgi.url_scheme": scheme, "HTTP_HOST": host,
        "SCRIPT_NAME": root, "QUERY_STRING": "a=1",
        # PEP 3333: the path's bytes, decoded as latin-1
        "PATH_INFO": path.encode("utf-8").decode("latin-1")}
    for name, value in (headers or {}).items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    return WsgiRequest(environ)


@pytest.mark.parametrize(("path", "root", "expected"), [
    ("/deployments", "", "https://api.example.com/deployments"),
    ("/deployments", "/api", "https://api.example.com/api/deployments"),
    ("/a b/ü", "", "https://api.example.com/a%20b/%C3%BC"),
    ("/", "", "https://api.example.com/"),
])
def test_asgi_and_wsgi_give_the_same_uri(path: str, root: str, expected: str) -> None:
    assert request_target(asgi(path, root=root)) == expected
    assert request_target(wsgi(path, root=root)) == expected


def test_asgi_servers_that_give_the_path_below_root_path() -> None:
    request = AsgiRequest({"type": "http", "scheme": "http", "path": "/x", "root_path": "/api",
                           "headers": [(b"host", b"h")]})
    assert request_target(request) == "http://h/api/x"


def test_websocket_schemes_are_http_ones() -> None:
    assert request_target(asgi("/ws", scheme="wss")) == "https://api.example.com/ws"


FORWARDED = [("x-forwarded-proto", "https"), ("x-forwarded-host", "public.example"),
             ("x-forwarded-port", "8443"), ("x-forwarded-prefix", "/v1")]


def test_forwarded_headers_are_ignored_unless_configured() -> None:
    request = asgi("/d", host="10.0.0.5:8000", scheme="http", headers=FORWARDED)
    assert request_target(request) == "http://10.0.0.5:8000/d"


def test_configured_forwarded_headers() -> None:
    names = ("x-forwarded-proto", "x-forwarded-host", "x-forwarded-port", "x-forwarded-prefix")
    request = asgi("/d", host="10.0.0.5:8000", scheme="http", headers=FORWARDED)
    assert request_target(request, names) == "https://public.example:8443/v1/d"
    same = wsgi("/d", host="10.0.0.5:8000", scheme="http", headers=dict(FORWARDED))
    assert request_target(same, names) == "https://public.example:8443/v1/d"
    # only the named ones: the proto alone
    assert request_target(request, ("x-forwarded-proto",)) == "https://10.0.0.5:8000/d"
    # the last value is the nearest proxy's
    chained = asgi("/d", scheme="http", headers=[("x-forwarded-proto", "http, https")])
    assert request_target(chained, ("x-forwarded-proto",)) == "https://api.example.com/d"


def test_rfc7239_forwarded() -> None:
    request = asgi("/d", scheme="http", headers=[
        ("forwarded", 'for=1.2.3.4;proto=http;host=evil.example, for=5.6.7.8;proto=https;'
                      'host="public.example"')])
    assert request_target(request, ("forwarded",)) == "https://public.example/d"


@pytest.mark.parametrize("header", [
    ("x-forwarded-proto", "javascript"), ("x-forwarded-host", "evil.example/path"),
    ("x-forwarded-host", "a@b"), ("x-forwarded-port", "99999x"), ("x-forwarded-prefix", "v1"),
])
def test_malformed_forwarded_values_are_ignored(header: tuple[str, str]) -> None:
    request = asgi("/d", headers=[header])
    assert request_target(request, (header[0],)) == "https://api.example.com/d"


def test_settings_validate_forwarded_headers() -> None:
    GuardSettings(**BASE, dpop_forwarded_headers=["X-Forwarded-Proto"],
                  trusted_proxies=["10.0.0.0/8"])
    with pytest.raises(Exception, match="dpop_forwarded_headers needs trusted_proxies"):
        GuardSettings(**BASE, dpop_forwarded_headers=["x-forwarded-proto"])
    with pytest.raises(Exception, match="dpop_forwarded_headers contains 'x-real-ip'"):
        GuardSettings(**BASE, dpop_forwarded_headers=["x-real-ip"])
    with pytest.raises(Exception, match="dpop must be one of off, allowed, required"):
        GuardSettings(**BASE, dpop="on")
    with pytest.raises(Exception, match="dpop_algorithms"):
        GuardSettings(**BASE, dpop_algorithms=["HS256"])
    with pytest.raises(Exception, match="dpop_nonce_secret"):
        GuardSettings(**BASE, dpop_nonce_secret="short")
    env = GuardSettings.from_env({"M2M_GUARD_ISSUER": BASE["issuer"], "M2M_GUARD_AUDIENCE": "api",
                                  "M2M_GUARD_DPOP": "required",
                                  "M2M_GUARD_DPOP_IAT_WINDOW": "30s",
                                  "M2M_GUARD_DPOP_ALGORITHMS": "ES256,EdDSA"})
    assert (env.dpop, env.dpop_iat_window, env.dpop_algorithms) == (
        "required", 30.0, ("ES256", "EdDSA"))


class Clock:
    now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_nonces_rotate_and_the_previous_one_stays_valid() -> None:
    clock = Clock()
    source = NonceSource("s" * 32, 300, clock=clock)
    first, _ = source.valid()
    assert source.valid()[0] == first  # the same within a period
    clock.now += 300
    second, previous = source.valid()
    assert second != first and previous == first
    clock.now += 300
    assert first not in source.valid()
    # the same secret on another worker agrees; another secret does not
    assert NonceSource("s" * 32, 300, clock=clock).valid() == source.valid()
    assert NonceSource("t" * 32, 300, clock=clock).valid()[0] != source.valid()[0]


ALGS = 'algs="ES256 EdDSA"'


@pytest.mark.parametrize(("error", "options", "expected"), [
    (InvalidToken("bad"), {}, 'Bearer realm="api", error="invalid_token", error_description="bad"'),
    (InvalidToken("bad"), {"dpop_algs": ("ES256", "EdDSA")},
     f'Bearer realm="api", error="invalid_token", error_description="bad", DPoP realm="api", '
     f'{ALGS}'),
    (InvalidDPoPProof("bad"), {"dpop_algs": ("ES256", "EdDSA")},
     f'DPoP realm="api", {ALGS}, error="invalid_dpop_proof", error_description="bad", '
     f'Bearer realm="api"'),
    (InvalidToken("bad"), {"dpop_algs": ("ES256", "EdDSA"), "bearer": False},
     f'DPoP realm="api", {ALGS}, error="invalid_token", error_description="bad"'),
])
def test_challenges(error: Any, options: dict[str, Any], expected: str) -> None:
    rendered = render_error(error, realm="api", **options)
    assert dict(rendered.headers)["www-authenticate"] == expected


def test_use_dpop_nonce_sends_the_nonce() -> None:
    rendered = render_error(UseDPoPNonce("n-1"), realm="api", dpop_algs=("ES256",),
                            bearer=False)
    headers = dict(rendered.headers)
    assert headers["dpop-nonce"] == "n-1"
    assert headers["www-authenticate"] == (
        'DPoP realm="api", algs="ES256", error="use_dpop_nonce", '
        'error_description="Resource server requires nonce in DPoP proof."')


def test_every_gate_of_a_verifier_shares_one_replay_store() -> None:
    verifier = TokenVerifier(GuardSettings(**BASE, dpop="allowed"))
    first, second = Gate(verifier), Gate(verifier)
    assert first.confirmations["jkt"] is second.confirmations["jkt"]
    other = Gate(TokenVerifier(GuardSettings(**BASE, dpop="allowed")))
    assert other.confirmations["jkt"] is not first.confirmations["jkt"]


def test_the_fast_path_stays_on_unless_dpop_is_required() -> None:
    for mode, fast in (("off", True), ("allowed", True), ("required", False)):
        assert Gate(TokenVerifier(GuardSettings(**BASE, dpop=mode))).fast_path is fast, mode


class _Broken(Confirmation):
    member = "jkt"

    def confirm(self, request: Any, scheme: str, token: str, access: Any, value: Any) -> None:
        raise RuntimeError("a bug in a confirmation")


def test_a_bug_in_a_confirmation_is_a_401_never_a_500(
        issuer: KeySetServer, signing_keys: dict[str, SigningKey],
        caplog: pytest.LogCaptureFixture) -> None:
    verifier = TokenVerifier(GuardSettings(issuer=issuer.url, audience=AUDIENCE,
                                           http_timeout=2.0, dpop="allowed"))
    gate = Gate(verifier, confirmations={"jkt": _Broken()})
    token = signing_keys["RS256"].sign(scalekit_claims(issuer.url, audience=[AUDIENCE],
                                                       cnf={"jkt": "x" * 43}))
    request = wsgi("/d", headers={"authorization": f"DPoP {token}", "dpop": "p"})
    with caplog.at_level(logging.ERROR, logger="m2m_guard"):
        with pytest.raises(InvalidToken) as sync:
            gate.authenticate_sync(request)
        with pytest.raises(InvalidToken) as async_:
            asyncio.run(gate.authenticate(request))
    for refused in (sync.value, async_.value):
        assert (refused.reason, refused.challenge) == ("internal_error", "DPoP")
    assert any("unexpected error confirming" in r.getMessage() for r in caplog.records)
    assert token not in caplog.text
    verifier.close()


class _Seen(Check):
    def __init__(self) -> None:
        self.tokens: list[str] = []

    def check(self, request: Any, token: str, access: Any) -> None:
        self.tokens.append(token)


@pytest.mark.parametrize("view", ["asgi", "wsgi"])
def test_a_cached_bound_token_gets_the_full_paths_answers(
        view: str, issuer: KeySetServer, signing_keys: dict[str, SigningKey]) -> None:
    """The gate's lean DPoP path (a bound token the cache holds, sent as exactly ``DPoP
    <token>``) skips only credential parsing and verification: the proof, the binding, the
    replay store and the checks decide as on the first, uncached request."""
    key = DPoPKey.generate()
    verifier = TokenVerifier(GuardSettings(issuer=issuer.url, audience=AUDIENCE,
                                           http_timeout=2.0, dpop="allowed"))
    seen = _Seen()
    gate = Gate(verifier, checks=[seen])
    sign = signing_keys["RS256"].sign
    bound = sign(scalekit_claims(issuer.url, audience=[AUDIENCE], cnf={"jkt": key.thumbprint}))
    plain = sign(scalekit_claims(issuer.url, audience=[AUDIENCE]))
    url = "https://api.example.com/d"
    make = asgi if view == "asgi" else wsgi

    def request(authorization: str, proof: str | None = None, query: str = "a=1") -> Any:
        headers = {"authorization": authorization, **({"dpop": proof} if proof else {})}
        built = make("/d", headers=list(headers.items()) if view == "asgi" else headers)
        if view == "asgi":
            built.scope["query_string"] = query.encode()
        else:
            built.environ["QUERY_STRING"] = query  # type: ignore[index]
        return built

    def reason(req: Any) -> tuple[str, str | None]:
        with pytest.raises(GuardError) as caught:
            gate.authenticate_sync(req)
        return caught.value.reason, caught.value.challenge

    try:
        fresh = key.proof("GET", url, access_token=bound)
        cases = [
            (request(f"DPoP {bound}", key.proof("GET", url + "x", access_token=bound)),
             ("dpop_url_mismatch", "DPoP")),
            (request(f"DPoP {bound}"), ("dpop_proof_missing", "DPoP")),
            (request(f"DPoP {bound}", key.proof("GET", url, access_token=plain)),
             ("dpop_ath_mismatch", "DPoP")),
            (request(f"DPoP {bound}",
                     DPoPKey.generate().proof("GET", url, access_token=bound)),
             ("dpop_key_mismatch", "DPoP")),
            (request(f"Bearer {bound}"), ("bound_token_as_bearer", "Bearer")),
            (request(f"DPoP {plain}", key.proof("GET", url, access_token=plain)),
             ("dpop_unbound_token", "DPoP")),
            (request(f"DPoP {bound}", key.proof("GET", url, access_token=bound),
                     query="access_token=x"), ("token_in_header_and_query", "Bearer")),
        ]
        first = [reason(req) for req, _ in cases]  # the tokens are not cached yet: full path
        assert gate.authenticate_sync(request(f"DPoP {bound}", fresh)) is not None
        assert gate.authenticate_sync(request(f"Bearer {plain}")) is not None
        assert verifier.cached_token(bound, bound=True) is not None  # the lean path applies
        assert verifier.cached_token(bound) is None  # never the Bearer fast path
        assert verifier.cached_token(plain, bound=True) is None
        assert [reason(req) for req, _ in cases] == first == [want for _, want in cases]
        assert reason(request(f"DPoP {bound}", fresh)) == ("dpop_replayed", "DPoP")
        again = key.proof("GET", url, access_token=bound)
        assert asyncio.run(gate.authenticate(request(f"DPoP {bound}", again))) is not None
        assert reason(request(f"DPoP {bound}", again)) == ("dpop_replayed", "DPoP")
        # another spelling of the scheme takes the full path, with the same outcome
        assert gate.authenticate_sync(request(f"dpop {bound}", key.proof(
            "GET", url, access_token=bound))) is not None
        assert seen.tokens.count(bound) == 3  # the checks ran on every accepted request
    finally:
        verifier.close()


@pytest.mark.parametrize(("peer", "expected"), [
    ("10.0.0.7", "https://public.example:8443/v1/d"),   # the proxy: its headers decide
    ("203.0.113.9", "http://10.0.0.5:8000/d"),          # anyone else: the URL as served
    (None, "http://10.0.0.5:8000/d"),                   # no peer known: not a proxy
])
def test_forwarded_headers_are_read_only_from_trusted_proxies(
        peer: str | None, expected: str) -> None:
    settings = GuardSettings(**BASE, dpop="allowed", trusted_proxies=["10.0.0.0/24"],
                             dpop_forwarded_headers=["x-forwarded-proto", "x-forwarded-host",
                                                     "x-forwarded-port", "x-forwarded-prefix"])
    confirmation = DPoPConfirmation(settings)
    request = asgi("/d", host="10.0.0.5:8000", scheme="http", headers=FORWARDED)
    if peer is not None:
        request.scope["client"] = (peer, 50000)
    assert request_target(request, confirmation._forwarded_from(request)) == expected
    environ_request = wsgi("/d", host="10.0.0.5:8000", scheme="http", headers=dict(FORWARDED))
    if peer is not None:
        environ_request.environ["REMOTE_ADDR"] = peer
    assert request_target(environ_request,
                          confirmation._forwarded_from(environ_request)) == expected
