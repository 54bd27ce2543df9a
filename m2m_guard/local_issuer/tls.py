"""A local certificate authority and server certificate for serving the local issuer over HTTPS.

```python
files = ensure_certificates("issuer.db.tls")   # created once, reused while valid
files.ca_cert      # trust this file: SSL_CERT_FILE, GRPC_DEFAULT_SSL_ROOTS_FILE_PATH, ...
files.cert_chain, files.key   # what the server presents (server certificate, then the CA)
client = issue_client_certificate(files, "billing-worker")   # for mutual TLS (RFC 8705)
client.cert, client.key, client.thumbprint   # thumbprint: the token's cnf x5t#S256
```

The CA is made for this one purpose: its name constraints allow the host name ``localhost``
only, so even a copied CA key cannot vouch for a named site (IP address constraints are left out:
gRPC's TLS library refuses certificates under them). The server
certificate names ``localhost``, ``127.0.0.1`` and ``::1`` (plus any extra `hosts` given). Both
keys are ECDSA P-256, written with mode 0600. Files are reused while they are readable, match
each other, name every host asked for, and stay valid for at least `RENEW_BEFORE` seconds; a
server certificate failing that is issued anew by the same CA (clients keep trusting it), and a
CA failing that is replaced together with its server certificate.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .._core.mtls import certificate_thumbprint

__all__ = ["CA_DAYS", "RENEW_BEFORE", "SERVER_DAYS", "ClientCertificate", "TlsFiles",
           "ensure_certificates", "export_lines", "issue_client_certificate", "tls_directory"]

CA_DAYS = 3650
SERVER_DAYS = 397  # below the 398-day limit some TLS clients put on server certificates
RENEW_BEFORE = 7 * 86400
DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")
_CA_NAME = "m2m-guard local issuer CA"


@dataclass(frozen=True)
class TlsFiles:
    """Paths of the PEM files in `directory`."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca-key.pem"

    @property
    def cert(self) -> Path:
        return self.directory / "server.pem"

    @property
    def cert_chain(self) -> Path:
        """The server certificate followed by the CA's (what the server sends)."""
        return self.directory / "server-chain.pem"

    @property
    def key(self) -> Path:
        return self.directory / "server-key.pem"


def tls_directory(db: str) -> Path | None:
    """Where the certificates of the issuer database `db` live: ``<db>.tls`` beside the file;
    None for an in-memory database (nothing to keep them beside)."""
    if db == ":memory:" or db.startswith("file:"):
        return None
    return Path(db + ".tls").absolute()


def ensure_certificates(directory: str | os.PathLike[str], *,
                        hosts: tuple[str, ...] = (),
                        now: datetime.datetime | None = None) -> TlsFiles:
    """The CA and server certificate in `directory`, created or renewed as the module doc says.

    Raises `OSError` when the directory cannot be created or written.
    """
    files = TlsFiles(Path(directory))
    files.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    moment = now or datetime.datetime.now(datetime.timezone.utc)
    names = tuple(dict.fromkeys(DEFAULT_HOSTS + tuple(hosts)))
    ca = _load_ca(files, moment)
    if ca is None:
        ca = _new_ca(files, moment)
        _new_server(files, ca, names, moment)
    elif not _server_usable(files, ca[0], names, moment):
        _new_server(files, ca, names, moment)
    return files


@dataclass(frozen=True)
class ClientCertificate:
    """A client certificate issued by the local CA (`issue_client_certificate`): PEM files and
    the RFC 8705 thumbprint a token bound to it carries as ``cnf["x5t#S256"]``."""

    cert: Path
    key: Path
    thumbprint: str


def issue_client_certificate(files: TlsFiles, name: str, *, days: int = 30,
                             now: datetime.datetime | None = None) -> ClientCertificate:
    """A new client certificate for `name` (its common name, and a
    ``spiffe://m2m-guard.local/<name>`` URI), signed by the CA of `files` (made first with
    `ensure_certificates`), for mutual TLS; written as ``client-<name>.pem`` and
    ``client-<name>-key.pem`` (0600) beside the CA. A new key and certificate at every call."""
    if not name or not all(char.isalnum() or char in "-_." for char in name):
        raise ValueError(f"a client name of letters, digits, '-', '_' and '.', got {name!r}")
    moment = now or datetime.datetime.now(datetime.timezone.utc)
    ca = _load_ca(files, moment)
    if ca is None:
        raise ValueError(f"no usable CA in {files.directory}: call ensure_certificates first")
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(moment - datetime.timedelta(minutes=5))
        .not_valid_after(min(moment + datetime.timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName([
            x509.UniformResourceIdentifier(f"spiffe://m2m-guard.local/{name}")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=False, crl_sign=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256()))
    issued = ClientCertificate(files.directory / f"client-{name}.pem",
                               files.directory / f"client-{name}-key.pem",
                               certificate_thumbprint(
                                   certificate.public_bytes(serialization.Encoding.DER)))
    _write(issued.key, _key_pem(key), private=True)
    _write(issued.cert, _pem(certificate))
    return issued


def export_lines(files: TlsFiles) -> list[str]:
    """Shell lines that make Python (requests, httpx, urllib), grpcio and Node trust the CA."""
    ca = str(files.ca_cert)
    return [f"export SSL_CERT_FILE={ca}", f"export REQUESTS_CA_BUNDLE={ca}",
            f"export GRPC_DEFAULT_SSL_ROOTS_FILE_PATH={ca}", f"export NODE_EXTRA_CA_CERTS={ca}"]


# -- internals ---------------------------------------------------------------------------------
_Ca = tuple[x509.Certificate, ec.EllipticCurvePrivateKey]


def _write(path: Path, data: bytes, *, private: bool = False) -> None:
    temporary = path.with_name(path.name + ".tmp")
    descriptor = os.open(temporary, os.O_CREAT | os.O_WRONLY | os.O_TRUNC,
                         0o600 if private else 0o644)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
    os.replace(temporary, path)  # readers never see half a file


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _valid_for(certificate: x509.Certificate, moment: datetime.datetime) -> bool:
    return (certificate.not_valid_before_utc <= moment
            and certificate.not_valid_after_utc - moment > datetime.timedelta(
                seconds=RENEW_BEFORE))


def _same_key(certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> bool:
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ours = key.public_key().public_bytes(*spki)
    return bool(certificate.public_key().public_bytes(*spki) == ours)


def _load_ca(files: TlsFiles, moment: datetime.datetime) -> _Ca | None:
    try:
        certificate = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
        key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not _same_key(certificate, key) \
            or not _valid_for(certificate, moment):
        return None
    return certificate, key


def _server_usable(files: TlsFiles, ca: x509.Certificate, names: tuple[str, ...],
                   moment: datetime.datetime) -> bool:
    try:
        certificate = x509.load_pem_x509_certificate(files.cert.read_bytes())
        key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
        chain = files.cert_chain.read_bytes()
        certificate.verify_directly_issued_by(ca)
        alternative = certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value
    except Exception:  # noqa: BLE001 - any unreadable or foreign file means "issue a new one"
        return False
    present = set(alternative.get_values_for_type(x509.DNSName)) | {
        str(address) for address in alternative.get_values_for_type(x509.IPAddress)}
    wanted = {str(ipaddress.ip_address(name)) if _is_ip(name) else name for name in names}
    return (isinstance(key, ec.EllipticCurvePrivateKey) and _same_key(certificate, key)
            and _valid_for(certificate, moment) and wanted <= present
            and chain == _pem(certificate) + _pem(ca))


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _new_ca(files: TlsFiles, moment: datetime.datetime) -> _Ca:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, _CA_NAME),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "m2m-guard (development)")])
    constraints = x509.NameConstraints(
        permitted_subtrees=[x509.DNSName("localhost")],
        excluded_subtrees=None)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(moment - datetime.timedelta(minutes=5))
        .not_valid_after(moment + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(constraints, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256()))
    _write(files.ca_key, _key_pem(key), private=True)
    _write(files.ca_cert, _pem(certificate))
    return certificate, key


def _new_server(files: TlsFiles, ca: _Ca, names: tuple[str, ...],
                moment: datetime.datetime) -> None:
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    alternative = [x509.IPAddress(ipaddress.ip_address(name)) if _is_ip(name)
                   else x509.DNSName(name) for name in names]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(moment - datetime.timedelta(minutes=5))
        .not_valid_after(min(moment + datetime.timedelta(days=SERVER_DAYS),
                             ca_cert.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName(alternative), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=False, crl_sign=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256()))
    _write(files.key, _key_pem(key), private=True)
    _write(files.cert, _pem(certificate))
    _write(files.cert_chain, _pem(certificate) + _pem(ca_cert))
