"""TLS for the local issuer: the local CA and server certificate, HTTPS with ALPN (HTTP/1.1 and
HTTP/2 on one port), the guard trusting the CA through its ca_bundle setting, and the CLI."""

from __future__ import annotations

import datetime
import os
import socket
import ssl
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from m2m_guard import GuardSettings, TokenVerifier
from m2m_guard.errors import ConfigurationError, GuardError
from m2m_guard.local_issuer import LocalIssuer, serve_issuer
from m2m_guard.local_issuer.tls import (
    RENEW_BEFORE,
    SERVER_DAYS,
    ensure_certificates,
    export_lines,
    tls_directory,
)
from tests.packages import require_package

from .conftest import ADMIN_ID, ADMIN_SECRET, ORG

require_package("hypercorn")  # TLS serving


def _names(path: Path) -> tuple[set[str], set[str]]:
    certificate = x509.load_pem_x509_certificate(path.read_bytes())
    alternative = certificate.extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    return (set(alternative.get_values_for_type(x509.DNSName)),
            {str(ip) for ip in alternative.get_values_for_type(x509.IPAddress)})


def test_certificates_are_made_once_kept_private_and_reused(tmp_path: Path) -> None:
    files = ensure_certificates(tmp_path / "tls")
    dns, ips = _names(files.cert)
    assert dns == {"localhost"} and ips == {"127.0.0.1", "::1"}
    for private in (files.key, files.ca_key):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    constraints = ca.extensions.get_extension_for_class(x509.NameConstraints)
    assert constraints.critical
    assert constraints.value.permitted_subtrees == [x509.DNSName("localhost")]
    server = x509.load_pem_x509_certificate(files.cert.read_bytes())
    server.verify_directly_issued_by(ca)
    assert files.cert_chain.read_bytes() == files.cert.read_bytes() + files.ca_cert.read_bytes()
    before = {path: path.read_bytes() for path in (files.ca_cert, files.cert, files.key)}
    again = ensure_certificates(tmp_path / "tls")  # a restart: nothing changes
    assert {path: path.read_bytes() for path in before} == before
    assert again == files


def test_server_certificate_renewed_by_the_same_ca(tmp_path: Path) -> None:
    files = ensure_certificates(tmp_path)
    ca, cert = files.ca_cert.read_bytes(), files.cert.read_bytes()
    late = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(
        days=SERVER_DAYS, seconds=-RENEW_BEFORE + 60)
    ensure_certificates(tmp_path, now=late)
    assert files.ca_cert.read_bytes() == ca  # clients keep trusting the same CA
    assert files.cert.read_bytes() != cert
    ensure_certificates(tmp_path, hosts=("devbox.localhost",))  # a new name: a new certificate
    assert "devbox.localhost" in _names(files.cert)[0]
    assert files.ca_cert.read_bytes() == ca


def test_damaged_files_are_replaced(tmp_path: Path) -> None:
    files = ensure_certificates(tmp_path)
    ca = files.ca_cert.read_bytes()
    files.key.write_bytes(b"not a key")
    ensure_certificates(tmp_path)
    assert files.ca_cert.read_bytes() == ca
    x509.load_pem_x509_certificate(files.cert.read_bytes())
    files.ca_key.write_bytes(b"")
    ensure_certificates(tmp_path)
    assert files.ca_cert.read_bytes() != ca  # a new CA, and a server certificate it signed
    server = x509.load_pem_x509_certificate(files.cert.read_bytes())
    server.verify_directly_issued_by(x509.load_pem_x509_certificate(files.ca_cert.read_bytes()))


def test_tls_directory_and_export_lines(tmp_path: Path) -> None:
    assert tls_directory(":memory:") is None
    directory = tls_directory(str(tmp_path / "issuer.db"))
    assert directory == tmp_path / "issuer.db.tls" and directory.is_absolute()
    lines = export_lines(ensure_certificates(tmp_path / "x"))
    ca = str(tmp_path / "x" / "ca.pem")
    assert lines == [f"export SSL_CERT_FILE={ca}", f"export REQUESTS_CA_BUNDLE={ca}",
                     f"export GRPC_DEFAULT_SSL_ROOTS_FILE_PATH={ca}",
                     f"export NODE_EXTRA_CA_CERTS={ca}"]


def _alpn(port: int, ca: Path, offer: list[str]) -> str | None:
    context = ssl.create_default_context(cafile=str(ca))
    context.set_alpn_protocols(offer)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        return tls.selected_alpn_protocol()


def test_https_serves_the_rest_api_over_http1_and_http2(tmp_path: Path) -> None:
    db = str(tmp_path / "issuer.db")
    issuer = LocalIssuer(db, admin_client_id=ADMIN_ID, admin_client_secret=ADMIN_SECRET)
    try:
        with serve_issuer(issuer, tls=True) as running:
            assert running.url.startswith("https://127.0.0.1:")
            assert running.tls is not None and running.tls.directory == Path(db + ".tls")
            ca = running.tls.ca_cert
            assert _alpn(running.port, ca, ["h2", "http/1.1"]) == "h2"
            assert _alpn(running.port, ca, ["http/1.1"]) == "http/1.1"
            context = ssl.create_default_context(cafile=str(ca))
            for http2 in (False, True):
                with httpx.Client(base_url=running.url, verify=context, http2=http2) as http:
                    discovery = http.get("/.well-known/openid-configuration")
                    assert discovery.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
                    assert discovery.json()["issuer"] == running.url
                    token = http.post("/oauth/token", auth=(ADMIN_ID, ADMIN_SECRET),
                                      data={"grant_type": "client_credentials"})
                    assert token.status_code == 200, token.text
                    created = http.post(f"/api/v1/organizations/{ORG}/clients",
                                        json={"name": "CI", "scopes": ["read:x"]},
                                        headers={"Authorization": "Bearer "
                                                 + token.json()["access_token"]})
                    assert created.status_code == 201, created.text
            with pytest.raises(httpx.ConnectError):  # not trusted without the CA
                httpx.get(running.url + "/keys")
            first = ca.read_bytes()
            running.stop()
            running.start()  # a restart: same port, same certificates
            assert ca.read_bytes() == first
            assert httpx.get(running.url + "/keys", verify=context).status_code == 200
    finally:
        issuer.close()


def test_the_guard_trusts_the_local_ca_through_ca_bundle(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    issuer = LocalIssuer(":memory:", admin_client_id=ADMIN_ID, admin_client_secret=ADMIN_SECRET)
    try:
        with serve_issuer(issuer, tls=tmp_path) as running:
            client, secret = issuer.create_client(ORG, name="CI", scopes=["read:x"],
                                                  audience=["api"])
            assert running.tls is not None
            context = ssl.create_default_context(cafile=str(running.tls.ca_cert))
            token = httpx.post(running.url + "/oauth/token", verify=context, data={
                "grant_type": "client_credentials", "client_id": client["client_id"],
                "client_secret": secret}).json()["access_token"]
            trusting = TokenVerifier(GuardSettings(issuer=running.url, audience="api",
                                                   ca_bundle=str(running.tls.ca_cert)))
            assert trusting.verify_sync(token).client_id == client["client_id"]
            trusting.close()
            untrusting = TokenVerifier(GuardSettings(issuer=running.url, audience="api"))
            with pytest.raises(GuardError, match="cannot be reached"):
                untrusting.verify_sync(token)
            untrusting.close()
            assert "CERTIFICATE_VERIFY_FAILED" in caplog.text
    finally:
        issuer.close()


def test_ca_bundle_setting_is_validated(tmp_path: Path) -> None:
    files = ensure_certificates(tmp_path)
    settings = GuardSettings.from_env(environ={"M2M_GUARD_ISSUER": "https://id.example.com",
                                               "M2M_GUARD_AUDIENCE": "api",
                                               "M2M_GUARD_CA_BUNDLE": str(files.ca_cert)})
    assert settings.ca_bundle == str(files.ca_cert)
    with pytest.raises(ConfigurationError, match="not a file"):
        GuardSettings(issuer="https://id.example.com", audience="api",
                      ca_bundle=str(tmp_path / "missing.pem"))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("hello")
    with pytest.raises(ConfigurationError, match="cannot be read"):
        GuardSettings(issuer="https://id.example.com", audience="api", ca_bundle=str(garbage))
    with pytest.raises(ConfigurationError, match="ca_bundle must be"):
        GuardSettings(issuer="https://id.example.com", audience="api", ca_bundle="")
    with pytest.raises(ConfigurationError, match="M2M_GUARD_CA_BUNDLE"):
        GuardSettings.from_env(environ={"M2M_GUARD_ISSUER": "https://id.example.com",
                                        "M2M_GUARD_AUDIENCE": "api",
                                        "M2M_GUARD_CA_BUNDLE": " "})


def test_doctor_uses_the_ca_bundle(tmp_path: Path) -> None:
    issuer = LocalIssuer(":memory:", admin_client_id=ADMIN_ID, admin_client_secret=ADMIN_SECRET)
    try:
        with serve_issuer(issuer, tls=tmp_path) as running:
            assert running.tls is not None
            env = {key: value for key, value in os.environ.items()
                   if not key.startswith(("M2M_GUARD_", "SSL_CERT", "REQUESTS_CA"))}
            env.update(M2M_GUARD_ISSUER=running.url, M2M_GUARD_VERIFY_AUDIENCE="false")
            plain = subprocess.run([sys.executable, "-m", "m2m_guard", "doctor"], env=env,
                                   capture_output=True, text=True, timeout=60)
            trusted = subprocess.run([sys.executable, "-m", "m2m_guard", "doctor"],
                                     env={**env, "M2M_GUARD_CA_BUNDLE": str(running.tls.ca_cert)},
                                     capture_output=True, text=True, timeout=60)
    finally:
        issuer.close()
    assert plain.returncode == 1, plain.stdout
    assert "CERTIFICATE_VERIFY_FAILED" in plain.stdout or "certificate" in plain.stdout.lower()
    assert trusted.returncode == 0, trusted.stdout + trusted.stderr
