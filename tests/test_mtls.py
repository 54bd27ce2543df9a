"""Certificate-bound tokens (RFC 8705 §3): a token whose ``cnf`` holds ``x5t#S256`` is accepted
only with the client certificate it is bound to, read from the server (the ASGI TLS extension,
a WSGI server's ``SSL_CLIENT_CERT``) or, from a trusted proxy only, from its header.

End to end with real TLS on 127.0.0.1: a CA, a server certificate and two client certificates
made here with `cryptography` (the local issuer's CA, `local_issuer.tls`); uvicorn requiring or
accepting client certificates, Werkzeug's WSGI server, and plain uvicorn behind a "proxy" that
sends the certificate header. The cache-hit fast path never lets a bound token through."""

from __future__ import annotations

import base64
import hashlib
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from flask import Flask, jsonify
from hypothesis import given
from hypothesis import strategies as st

from m2m_guard import ConfigurationError, GuardSettings, InvalidToken, TokenVerifier
from m2m_guard._core import mtls
from m2m_guard._core.confirmation import CertificateConfirmation, default_confirmations
from m2m_guard._core.gate import Gate
from m2m_guard._core.request import AsgiRequest, WsgiRequest
from m2m_guard.flask import M2MGuard
from m2m_guard.local_issuer import KeySetServer
from m2m_guard.local_issuer.tls import (
    ClientCertificate,
    TlsFiles,
    ensure_certificates,
    issue_client_certificate,
)

from .conftest import deployment_app
from .servers import tls_extension_protocol, tls_terminating_proxy, uvicorn_server, werkzeug_server

MISSING = "The access token is bound to a client certificate (RFC 8705) and the request " \
          "presented none."
MISMATCH = "The access token is bound to another client certificate than the request's."


class Pki:
    def __init__(self, files: TlsFiles, alice: ClientCertificate,
                 bob: ClientCertificate) -> None:
        self.files, self.alice, self.bob = files, alice, bob

    def der(self, client: ClientCertificate) -> bytes:
        return mtls.der_from_pem(client.cert.read_text())

    def client(self, client: ClientCertificate | None = None) -> httpx.Client:
        """An HTTPS client trusting the CA, presenting `client`'s certificate (if any)."""
        context = ssl.create_default_context(cafile=str(self.files.ca_cert))
        if client is not None:
            context.load_cert_chain(str(client.cert), str(client.key))
        return httpx.Client(verify=context, trust_env=False, timeout=10)

    def server_tls(self, required: bool) -> dict[str, Any]:
        return {"ssl_certfile": str(self.files.cert_chain), "ssl_keyfile": str(self.files.key),
                "ssl_ca_certs": str(self.files.ca_cert),
                "ssl_cert_reqs": ssl.CERT_REQUIRED if required else ssl.CERT_OPTIONAL}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    files = ensure_certificates(tmp_path_factory.mktemp("pki"))
    return Pki(files, issue_client_certificate(files, "alice"),
               issue_client_certificate(files, "bob"))


def bound(issuer: KeySetServer, client: ClientCertificate) -> str:
    return issuer.mint(scopes=["read:deployments"], cnf={"x5t#S256": client.thumbprint})


def _error(response: httpx.Response) -> tuple[int, str | None, str | None]:
    body = response.json()
    return response.status_code, body.get("error"), body.get("error_description")


# -- the pure parts --------------------------------------------------------------------------

def test_the_thumbprint_is_rfc_8705s(pki: Pki) -> None:
    der = pki.der(pki.alice)
    expected = base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()
    assert mtls.certificate_thumbprint(der) == expected == pki.alice.thumbprint
    assert pki.alice.thumbprint != pki.bob.thumbprint and len(expected) == 43


def test_every_forwarded_form_gives_the_same_thumbprint(pki: Pki) -> None:
    pem = pki.alice.cert.read_text()
    der = pki.der(pki.alice)
    digest = hashlib.sha256(der).hexdigest()
    forms = {
        "x-forwarded-client-cert": [
            f'By=spiffe://proxy;Hash={digest};Cert="{quote(pem)}";Subject="CN=alice";URI=',
            f"Hash={digest.upper()}",
            f'Cert="{quote(pem)}"',
            f"hash={digest};subject=\"CN=a\\\",b;c\""],
        "client-cert": [":" + base64.b64encode(der).decode() + ":"],
        "ssl-client-cert": [quote(pem), pem.strip().replace("\n", "\n\t"),
                            pem.strip().replace("\n", " ")],
        "x-forwarded-tls-client-cert": [quote("".join(pem.strip().splitlines()[1:-1]))],
    }
    for header, values in forms.items():
        for value in values:
            assert mtls.forwarded_thumbprint(header, [value]) == pki.alice.thumbprint, value
    # A proxy that saw no certificate: nothing (and no header at all, nothing either).
    assert mtls.forwarded_thumbprint("x-forwarded-client-cert", ["By=spiffe://proxy"]) is None
    assert mtls.forwarded_thumbprint("ssl-client-cert", []) is None
    assert mtls.forwarded_thumbprint("ssl-client-cert", [""]) is None


@pytest.mark.parametrize(("header", "value", "why"), [
    ("x-forwarded-client-cert", "Hash=aa;Hash=bb", "repeated"),
    ("x-forwarded-client-cert", "By=a,By=b", "2 elements"),
    ("x-forwarded-client-cert", "Hash=" + "0" * 63, "hex SHA-256"),
    ("x-forwarded-client-cert", 'Cert="abc', "unclosed quote"),
    ("x-forwarded-client-cert", "Cert=abc", "no PEM"),
    ("x-forwarded-client-cert", "justtext", "no '='"),
    ("client-cert", "MIIB", "byte sequence"),
    ("client-cert", ":not base64!:", "not base64"),
    ("ssl-client-cert", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----",
     "not DER"),
    ("ssl-client-cert", "%ZZ%%", "not base64"),
    ("ssl-client-cert", "x" * 70000, "too large"),
])
def test_unreadable_forwarded_certificates_are_named(header: str, value: str, why: str) -> None:
    with pytest.raises(mtls.Unreadable, match=why):
        mtls.forwarded_thumbprint(header, [value])


def test_a_certificate_header_sent_twice_is_unreadable(pki: Pki) -> None:
    value = quote(pki.alice.cert.read_text())
    with pytest.raises(mtls.Unreadable, match="2 times"):
        mtls.forwarded_thumbprint("ssl-client-cert", [value, value])
    digest = hashlib.sha256(pki.der(pki.bob)).hexdigest()
    with pytest.raises(mtls.Unreadable, match="disagree"):
        mtls.forwarded_thumbprint("x-forwarded-client-cert", [f'Hash={digest};Cert="{value}"'])


def test_trusted_proxies_match_addresses_and_networks() -> None:
    proxies = mtls.TrustedProxies(["10.0.0.0/8", "::1/128", "192.0.2.7/32"])
    assert proxies.trusts("10.200.1.2") and proxies.trusts("::1") and proxies.trusts("192.0.2.7")
    assert proxies.trusts("::ffff:10.0.0.1")  # an IPv4 peer on a dual-stack socket
    for peer in ("11.0.0.1", "192.0.2.8", "::2", "testclient", "/run/app.sock", "", None):
        assert not proxies.trusts(peer), peer
    assert not mtls.TrustedProxies([]).trusts("127.0.0.1")


def test_settings_validate_proxies_and_header(issuer: KeySetServer) -> None:
    base = {"issuer": issuer.url, "audience": "deployment-api"}
    settings = GuardSettings(**base, trusted_proxies=["10.0.0.0/8", "127.0.0.1", "10.0.0.0/8"],
                             client_cert_header="SSL-Client-Cert")
    assert settings.trusted_proxies == ("10.0.0.0/8", "127.0.0.1/32")
    assert settings.client_cert_header == "ssl-client-cert"
    assert GuardSettings(**base).trusted_proxies == ()
    assert GuardSettings(**base).client_cert_header == "x-forwarded-client-cert"
    with pytest.raises(ConfigurationError, match=r"did you mean 10\.0\.0\.0/8"):
        GuardSettings(**base, trusted_proxies=["10.0.0.1/8"])
    with pytest.raises(ConfigurationError, match="trusted_proxies contains 'proxy.internal'"):
        GuardSettings(**base, trusted_proxies=["proxy.internal"])
    with pytest.raises(ConfigurationError, match="client_cert_header must be an HTTP header"):
        GuardSettings(**base, client_cert_header="x client cert")
    env = {"M2M_GUARD_ISSUER": issuer.url, "M2M_GUARD_AUDIENCE": "deployment-api",
           "M2M_GUARD_TRUSTED_PROXIES": "10.1.0.0/16, ::1",
           "M2M_GUARD_CLIENT_CERT_HEADER": "client-cert"}
    from_env = GuardSettings.from_env(env)
    assert from_env.trusted_proxies == ("10.1.0.0/16", "::1/128")
    assert from_env.client_cert_header == "client-cert"
    with pytest.raises(ConfigurationError, match="M2M_GUARD_TRUSTED_PROXIES contains '300.1.1.1'"):
        GuardSettings.from_env({**env, "M2M_GUARD_TRUSTED_PROXIES": "300.1.1.1"})


def test_request_views_pass_on_only_verified_certificates() -> None:
    def scope(tls: Any) -> dict[str, Any]:
        return {"type": "http", "path": "/", "headers": [], "client": ("10.0.0.9", 5000),
                "extensions": {"tls": tls}}
    assert AsgiRequest(scope({"client_cert_chain": ["PEM", "CA"]})).client_cert == "PEM"
    for tls in ({"client_cert_chain": ["PEM"], "client_cert_error": "unknown ca"},
                {"client_cert_chain": []}, {"client_cert_chain": "PEM"}, None, "tls",
                {"client_cert_chain": [b"PEM"]}):
        assert AsgiRequest(scope(tls)).client_cert is None, tls
    assert AsgiRequest(scope(None)).peer == "10.0.0.9"
    assert AsgiRequest({"path": "/", "extensions": None, "client": None}).peer is None
    assert AsgiRequest({"path": "/", "extensions": None}).client_cert is None
    environ = {"REQUEST_METHOD": "GET", "SSL_CLIENT_CERT": "PEM", "REMOTE_ADDR": "10.0.0.9"}
    assert WsgiRequest(environ).client_cert == "PEM"
    assert WsgiRequest({**environ, "SSL_CLIENT_VERIFY": "SUCCESS"}).client_cert == "PEM"
    for verify in ("NONE", "GENEROUS", "FAILED:unable to get issuer certificate"):
        assert WsgiRequest({**environ, "SSL_CLIENT_VERIFY": verify}).client_cert is None
    assert WsgiRequest(environ).peer == "10.0.0.9"
    assert WsgiRequest({"REQUEST_METHOD": "GET"}).peer is None


@pytest.mark.parametrize("cnf", ["abc", None, ["x"], {"x5t#S256": 7},
                                 {"x5t#S256": "too-short"}, {"x5t#S256": "A" * 42 + "="}])
def test_a_malformed_binding_is_refused(issuer: KeySetServer, settings: GuardSettings,
                                        cnf: Any) -> None:
    verifier = TokenVerifier(settings)
    gate = Gate(verifier)
    token = issuer.mint(cnf=cnf) if cnf is not None else issuer.mint(cnf=None)
    request = WsgiRequest({"REQUEST_METHOD": "GET", "HTTP_AUTHORIZATION": f"Bearer {token}"})
    if cnf is None:  # no cnf at all: an ordinary bearer token
        assert gate.authenticate_sync(request) is not None
        return
    with pytest.raises(InvalidToken) as refused:
        gate.authenticate_sync(request)
    assert refused.value.reason == "invalid_cnf"


def test_the_certificate_binding_is_always_on_and_keeps_the_fast_path(
        issuer: KeySetServer, settings: GuardSettings, pki: Pki) -> None:
    """Whatever the settings, the gate confirms ``x5t#S256``; bearer tokens keep the cache-hit
    fast path, and a cached bound token is never answered there."""
    assert isinstance(default_confirmations(settings)["x5t#S256"], CertificateConfirmation)
    verifier = TokenVerifier(settings)
    gate = Gate(verifier)
    assert gate.fast_path is True
    plain, tied = issuer.mint(), bound(issuer, pki.alice)
    environ = {"REQUEST_METHOD": "GET", "SSL_CLIENT_CERT": pki.alice.cert.read_text()}
    for token in (plain, tied):
        assert gate.authenticate_sync(WsgiRequest({**environ,
                                                   "HTTP_AUTHORIZATION": f"Bearer {token}"}))
    assert gate.cached_bearer(f"Bearer {plain}".encode(), b"") is not None
    assert gate.cached_bearer(f"Bearer {tied}".encode(), b"") is None
    assert gate.cached_bearer(f"Bearer {tied}", "") is None
    with pytest.raises(InvalidToken) as refused:  # the cached bound token, without its cert
        gate.authenticate_sync(WsgiRequest({"REQUEST_METHOD": "GET",
                                            "HTTP_AUTHORIZATION": f"Bearer {tied}"}))
    assert refused.value.reason == "client_certificate_missing"
    again = gate.authenticate_sync(WsgiRequest({**environ,
                                                "HTTP_AUTHORIZATION": f"Bearer {tied}"}))
    assert again is not None and again.cnf == {"x5t#S256": pki.alice.thumbprint}


# -- end to end: uvicorn over real TLS -------------------------------------------------------

@pytest.fixture
def tls_app(pki: Pki, issuer: KeySetServer,
            settings: GuardSettings) -> Iterator[tuple[str, KeySetServer]]:
    """The Starlette deployment API on uvicorn over TLS with the ASGI TLS extension, client
    certificates optional (verified against the CA when sent)."""
    with uvicorn_server(deployment_app(settings), http=tls_extension_protocol(),
                        **pki.server_tls(required=False)) as port:
        yield f"https://127.0.0.1:{port}", issuer


def test_a_bound_token_needs_its_certificate_over_real_tls(
        pki: Pki, tls_app: tuple[str, KeySetServer]) -> None:
    url, issuer = tls_app
    token = bound(issuer, pki.alice)
    headers = {"Authorization": f"Bearer {token}"}
    with pki.client(pki.alice) as alice, pki.client(pki.bob) as bob, pki.client() as nobody:
        for _ in range(3):  # the second and third are cache hits: the binding still holds
            assert alice.get(url + "/deployments", headers=headers).status_code == 200
            assert _error(bob.get(url + "/deployments", headers=headers)) == (
                401, "invalid_token", MISMATCH)
            refused = nobody.get(url + "/deployments", headers=headers)
            assert _error(refused) == (401, "invalid_token", MISSING)
            assert refused.headers["www-authenticate"].startswith(
                'Bearer realm="api", error="invalid_token"')
        # An ordinary bearer token needs no certificate; Bob's own bound token works for Bob.
        plain = {"Authorization": f"Bearer {issuer.mint(scopes=['read:deployments'])}"}
        assert nobody.get(url + "/deployments", headers=plain).status_code == 200
        bobs = {"Authorization": f"Bearer {bound(issuer, pki.bob)}"}
        assert bob.get(url + "/deployments", headers=bobs).status_code == 200
        # A proxy header from a peer nobody trusts changes nothing.
        spoofed = {**headers, "x-forwarded-client-cert":
                   f"Hash={hashlib.sha256(pki.der(pki.alice)).hexdigest()}"}
        assert _error(nobody.get(url + "/deployments", headers=spoofed))[2] == MISSING


def test_uvicorn_alone_passes_no_client_certificate_so_bound_tokens_are_refused(
        pki: Pki, issuer: KeySetServer, settings: GuardSettings) -> None:
    """Stock uvicorn (and hypercorn) verify the client's certificate in the handshake but do
    not hand it to the app (no ASGI TLS extension): a bound token is refused, never let
    through; plain bearer tokens work. docs/mtls.md says to terminate TLS at a proxy."""
    with uvicorn_server(deployment_app(settings), **pki.server_tls(required=True)) as port:
        url = f"https://127.0.0.1:{port}/deployments"
        with pki.client(pki.alice) as alice:
            tied = {"Authorization": f"Bearer {bound(issuer, pki.alice)}"}
            refused = alice.get(url, headers=tied)
            assert _error(refused) == (401, "invalid_token", MISSING)
            plain = {"Authorization": f"Bearer {issuer.mint(scopes=['read:deployments'])}"}
            assert alice.get(url, headers=plain).status_code == 200
        with pki.client() as nobody, pytest.raises(httpx.HTTPError):
            nobody.get(url, headers=plain)  # the handshake itself needs a certificate


# -- end to end: behind a proxy ----------------------------------------------------------------

@pytest.mark.parametrize(("header", "form"), [
    ("x-forwarded-client-cert", "cert"), ("x-forwarded-client-cert", "hash"),
    ("ssl-client-cert", "pem"), ("client-cert", "rfc9440")])
def test_a_trusted_proxys_header_is_believed_and_an_untrusted_peers_is_not(
        pki: Pki, issuer: KeySetServer, settings: GuardSettings, header: str,
        form: str) -> None:
    """uvicorn on plain HTTP, as behind a TLS-terminating proxy on the same host: the proxy
    (127.0.0.1 here) forwards the client's certificate in its header."""
    def value(client: ClientCertificate) -> str:
        pem = client.cert.read_text()
        der = pki.der(client)
        return {"cert": f'By=spiffe://edge;Cert="{quote(pem)}"',
                "hash": f"By=spiffe://edge;Hash={hashlib.sha256(der).hexdigest()}",
                "pem": quote(pem), "rfc9440": ":" + base64.b64encode(der).decode() + ":"}[form]

    token = {"Authorization": f"Bearer {bound(issuer, pki.alice)}"}
    trusted = settings.replace(trusted_proxies=["127.0.0.0/8"], client_cert_header=header)
    with uvicorn_server(deployment_app(trusted), proxy_headers=False) as port, \
            httpx.Client(trust_env=False, timeout=10) as client:
        url = f"http://127.0.0.1:{port}/deployments"
        for _ in range(2):
            assert client.get(url, headers={**token, header: value(pki.alice)}).status_code == 200
            assert _error(client.get(url, headers={**token, header: value(pki.bob)})) == (
                401, "invalid_token", MISMATCH)
            assert _error(client.get(url, headers=token))[2] == MISSING
        garbled = client.get(url, headers={**token, header: "%%%garbage"})
        assert _error(garbled)[:2] == (401, "invalid_token")
        assert "cannot be read" in str(_error(garbled)[2])
    # The same request from a peer outside trusted_proxies: the header is ignored.
    elsewhere = settings.replace(trusted_proxies=["10.0.0.0/8"], client_cert_header=header)
    with uvicorn_server(deployment_app(elsewhere), proxy_headers=False) as port, \
            httpx.Client(trust_env=False, timeout=10) as client:
        url = f"http://127.0.0.1:{port}/deployments"
        refused = client.get(url, headers={**token, header: value(pki.alice)})
        assert _error(refused) == (401, "invalid_token", MISSING)


def test_behind_a_real_tls_terminating_proxy(pki: Pki, issuer: KeySetServer,
                                            settings: GuardSettings) -> None:
    """Client -> TLS with a client certificate -> proxy (verifies it, sanitizes and sets
    x-forwarded-client-cert) -> plain HTTP -> uvicorn: the whole chain, real TLS."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.files.ca_cert))
    context.load_cert_chain(str(pki.files.cert_chain), str(pki.files.key))
    context.verify_mode = ssl.CERT_OPTIONAL
    trusted = settings.replace(trusted_proxies=["127.0.0.1"])
    token = {"Authorization": f"Bearer {bound(issuer, pki.alice)}"}
    forged = {**token, "x-forwarded-client-cert":
              f"Hash={hashlib.sha256(pki.der(pki.alice)).hexdigest()}"}
    with uvicorn_server(deployment_app(trusted), proxy_headers=False) as app_port, \
            tls_terminating_proxy(context, app_port) as port, \
            pki.client(pki.alice) as alice, pki.client(pki.bob) as bob, pki.client() as nobody:
        url = f"https://127.0.0.1:{port}/deployments"
        assert alice.get(url, headers=token).status_code == 200
        assert _error(bob.get(url, headers=token))[2] == MISMATCH
        # Bob forges Alice's header: the proxy replaces it with his own certificate's.
        assert _error(bob.get(url, headers=forged))[2] == MISMATCH
        assert _error(nobody.get(url, headers=forged))[2] == MISSING
        plain = {"Authorization": f"Bearer {issuer.mint(scopes=['read:deployments'])}"}
        assert nobody.get(url, headers=plain).status_code == 200


# -- end to end: WSGI ------------------------------------------------------------------------

def _flask_app(settings: GuardSettings) -> Flask:
    app = Flask(__name__)

    @app.get("/deployments")
    def deployments() -> Any:
        return jsonify(deployments=[])

    M2MGuard(app, settings)
    return app


def test_wsgi_reads_the_servers_certificate_over_real_tls(
        pki: Pki, issuer: KeySetServer, settings: GuardSettings) -> None:
    """Werkzeug's server puts the verified client certificate in ``SSL_CLIENT_CERT`` (as
    mod_ssl and mod_wsgi do); Flask's guard reads it."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.files.ca_cert))
    context.load_cert_chain(str(pki.files.cert_chain), str(pki.files.key))
    context.verify_mode = ssl.CERT_OPTIONAL
    headers = {"Authorization": f"Bearer {bound(issuer, pki.alice)}"}
    with werkzeug_server(_flask_app(settings), ssl_context=context) as port, \
            pki.client(pki.alice) as alice, pki.client(pki.bob) as bob, \
            pki.client() as nobody:
        url = f"https://127.0.0.1:{port}/deployments"
        for _ in range(2):
            assert alice.get(url, headers=headers).status_code == 200
            assert _error(bob.get(url, headers=headers))[2] == MISMATCH
            assert _error(nobody.get(url, headers=headers))[2] == MISSING


def test_wsgi_behind_a_proxy(pki: Pki, issuer: KeySetServer, settings: GuardSettings) -> None:
    header = {"SSL-Client-Cert": quote(pki.alice.cert.read_text()),
              "Authorization": f"Bearer {bound(issuer, pki.alice)}"}
    trusted = _flask_app(settings.replace(trusted_proxies=["192.0.2.0/24"],
                                          client_cert_header="ssl-client-cert")).test_client()
    assert trusted.get("/deployments", headers=header,
                       environ_base={"REMOTE_ADDR": "192.0.2.10"}).status_code == 200
    refused = trusted.get("/deployments", headers=header,
                          environ_base={"REMOTE_ADDR": "198.51.100.1"})
    assert (refused.status_code, refused.get_json()["error_description"]) == (401, MISSING)


def test_client_certificates_are_issued_by_the_local_ca(pki: Pki, tmp_path: Path) -> None:
    from cryptography import x509

    certificate = x509.load_pem_x509_certificate(pki.alice.cert.read_bytes())
    assert certificate.subject.rfc4514_string() == "CN=alice"
    assert oct(pki.alice.key.stat().st_mode & 0o777) == "0o600"
    with pytest.raises(ValueError, match="client name"):
        issue_client_certificate(pki.files, "../etc")
    with pytest.raises(ValueError, match="ensure_certificates first"):
        issue_client_certificate(TlsFiles(tmp_path), "alice")


@given(header=st.sampled_from(["x-forwarded-client-cert", "client-cert", "ssl-client-cert"]),
       value=st.one_of(st.text(max_size=300), st.text(alphabet='=;,"\\ %:-BEGINCRTFA09+/',
                                                      max_size=300)))
def test_any_forwarded_value_is_read_or_refused_never_an_error(header: str, value: str) -> None:
    """Whatever a (trusted but broken) proxy sends: a thumbprint, nothing, or `Unreadable`."""
    try:
        found = mtls.forwarded_thumbprint(header, [value])
    except mtls.Unreadable:
        return
    assert found is None or (len(found) == 43 and found.isascii())


@given(pem=st.text(max_size=400))
def test_any_server_certificate_text_is_read_or_refused(pem: str) -> None:
    try:
        der = mtls.der_from_pem(pem)
    except mtls.Unreadable:
        return
    assert der[0] == 0x30


def test_a_garbled_certificate_from_the_server_is_a_401_not_a_500(
        issuer: KeySetServer, settings: GuardSettings, pki: Pki) -> None:
    gate = Gate(TokenVerifier(settings))
    token = bound(issuer, pki.alice)
    for pem in ("garbage", "-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----"):
        with pytest.raises(InvalidToken) as refused:
            gate.authenticate_sync(WsgiRequest({"REQUEST_METHOD": "GET", "SSL_CLIENT_CERT": pem,
                                                "HTTP_AUTHORIZATION": f"Bearer {token}"}))
        assert refused.value.reason == "client_certificate_unreadable"
