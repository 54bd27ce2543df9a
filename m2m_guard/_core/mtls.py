"""Certificate-bound access tokens (RFC 8705 §3): a token whose ``cnf`` claim holds
``x5t#S256`` is accepted only from the client whose TLS certificate hashes to it.

The certificate of a request comes from one of two places, never both:

- a configured **trusted proxy** (`trusted_proxies`: addresses and networks) that terminated the
  client's TLS: then only the proxy's header counts (`client_cert_header`), read in the format
  its name implies: Envoy's ``x-forwarded-client-cert`` (the ``Cert=`` URL-encoded PEM, else the
  ``Hash=`` hex SHA-256; exactly one element), RFC 9440's ``client-cert`` (a structured-field
  byte sequence of the DER), or any other name (nginx ``$ssl_client_escaped_cert``, AWS ALB,
  Traefik: URL-encoded or plain PEM, or base64 DER). The connection's own TLS is the proxy's
  and is not looked at;
- otherwise the **server** (`RequestView.client_cert`: the ASGI TLS extension, a WSGI server's
  ``SSL_CLIENT_CERT``). A proxy header from an untrusted peer is ignored.

Everything here is pure: `client_thumbprint` reads a `RequestView`, `check_binding` compares;
`confirmation.CertificateConfirmation` puts them in the gate's one hook for ``cnf`` members
(for every adapter, always on). The certificate itself is not validated here: the server or
the proxy verified it in the TLS handshake; the token's binding is what this module enforces.
See docs/mtls.md.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import ipaddress
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from ..errors import InvalidToken
from .encoding import b64url_encode, is_b64url

if TYPE_CHECKING:
    from .request import RequestView

__all__ = ["CNF_X5T", "ENVOY_HEADER", "RFC9440_HEADER", "TrustedProxies", "Unreadable",
           "certificate_thumbprint", "check_binding", "client_thumbprint", "der_from_pem",
           "forwarded_thumbprint", "parse_xfcc"]

#: The confirmation member of a certificate-bound token (RFC 8705 §3.1).
CNF_X5T = "x5t#S256"
ENVOY_HEADER = "x-forwarded-client-cert"
RFC9440_HEADER = "client-cert"
# A certificate in a header is a few KiB; a value far larger is not one we read.
MAX_HEADER_CHARS = 65536

_PEM = re.compile(r"-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]+?)-----END CERTIFICATE-----")
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_WHITESPACE = re.compile(r"\s+")
_HEX_SHA256 = re.compile(r"[0-9A-Fa-f]{64}")


class Unreadable(ValueError):
    """A certificate was passed on but cannot be read (the message says how)."""


def certificate_thumbprint(der: bytes) -> str:
    """RFC 8705 §3.1: base64url (unpadded) of the SHA-256 of the certificate's DER."""
    return b64url_encode(hashlib.sha256(der).digest())


def _der(text: str) -> bytes:
    """Strict standard base64 (whitespace dropped) of what should be a DER SEQUENCE."""
    compact = _WHITESPACE.sub("", text)
    if not compact or len(compact) % 4 or _BASE64.fullmatch(compact) is None:
        raise Unreadable("the certificate is not base64")
    try:
        der = binascii.a2b_base64(compact)  # the alphabet and padding are checked above
    except binascii.Error:
        raise Unreadable("the certificate is not base64") from None
    if len(der) < 64 or der[0] != 0x30:
        raise Unreadable("the certificate is not DER")
    return der


def der_from_pem(pem: str) -> bytes:
    """The DER of the one (first) ``CERTIFICATE`` block of `pem`; `Unreadable` otherwise. Line
    breaks may have become spaces or tabs (Apache, nginx's ``$ssl_client_cert``)."""
    match = _PEM.search(pem)
    if match is None:
        raise Unreadable("no PEM certificate")
    return _der(match.group(1))


def parse_xfcc(value: str) -> list[dict[str, str]]:
    """Envoy's ``x-forwarded-client-cert``: elements (one per proxy, comma-separated) of
    ``key=value`` pairs (``;``-separated; a value may be double-quoted, with ``\\"`` inside).
    Keys are lower-cased; `Unreadable` for a malformed value."""
    elements: list[dict[str, str]] = []
    pairs: dict[str, str] = {}
    key: str | None = None
    buffer: list[str] = []
    quoted = False
    index, end = 0, len(value)

    def finish_pair() -> None:
        nonlocal key
        text = "".join(buffer)
        buffer.clear()
        if key is None:
            if text.strip():
                raise Unreadable("an x-forwarded-client-cert pair has no '='")
            return
        name = key.strip().lower()
        if not name or name in pairs:
            raise Unreadable("an x-forwarded-client-cert key is empty or repeated")
        pairs[name] = text.strip() if not was_quoted else text
        key = None

    was_quoted = False
    while index < end:
        char = value[index]
        if quoted:
            if char == "\\" and index + 1 < end:
                buffer.append(value[index + 1])
                index += 2
                continue
            if char == '"':
                quoted = False
            else:
                buffer.append(char)
        elif char == '"' and key is not None and not was_quoted and \
                (not buffer or not any(not c.isspace() for c in buffer)):
            buffer.clear()
            quoted = was_quoted = True
        elif char == "=" and key is None:
            key = "".join(buffer)
            buffer.clear()
            was_quoted = False
        elif char in ";,":
            finish_pair()
            was_quoted = False
            if char == ",":
                if not pairs:
                    raise Unreadable("an x-forwarded-client-cert element is empty")
                elements.append(pairs)
                pairs = {}
        else:
            buffer.append(char)
        index += 1
    if quoted:
        raise Unreadable("an x-forwarded-client-cert value has an unclosed quote")
    finish_pair()
    if not pairs:
        raise Unreadable("an x-forwarded-client-cert element is empty")
    elements.append(pairs)
    return elements


def _envoy_thumbprint(value: str) -> str | None:
    elements = parse_xfcc(value)
    if len(elements) != 1:
        # Several proxies appended theirs: which one saw the client is configuration, not
        # something to guess (the proxy facing clients should SANITIZE_SET, the rest forward).
        raise Unreadable(f"x-forwarded-client-cert holds {len(elements)} elements, not one")
    element = elements[0]
    digest = element.get("hash")
    if digest is not None and _HEX_SHA256.fullmatch(digest) is None:
        raise Unreadable("the x-forwarded-client-cert Hash is not a hex SHA-256")
    cert = element.get("cert")
    if cert is not None:
        der = der_from_pem(unquote(cert))
        if digest is not None and not hmac.compare_digest(
                hashlib.sha256(der).hexdigest(), digest.lower()):
            raise Unreadable("the x-forwarded-client-cert Hash and Cert disagree")
        return certificate_thumbprint(der)
    if digest is not None:
        return b64url_encode(bytes.fromhex(digest))
    return None  # the proxy saw no client certificate (it may still name itself in By=)


def _rfc9440_der(value: str) -> bytes:
    text = value.strip()
    if len(text) < 2 or text[0] != ":" or text[-1] != ":":
        raise Unreadable("client-cert is not a structured-field byte sequence (:base64:)")
    return _der(text[1:-1])


def forwarded_thumbprint(header: str, values: list[str]) -> str | None:
    """The thumbprint of the certificate a proxy forwarded in `header` (`values`: every value
    sent), None when it forwarded none; `Unreadable` when it cannot be read or is ambiguous."""
    if not values:
        return None
    if len(values) > 1:
        raise Unreadable(f"{header} was sent {len(values)} times")
    value = values[0]
    if len(value) > MAX_HEADER_CHARS:
        raise Unreadable(f"{header} is too large")
    if not value.strip():
        return None
    if header == ENVOY_HEADER:
        return _envoy_thumbprint(value)
    if header == RFC9440_HEADER:
        return certificate_thumbprint(_rfc9440_der(value))
    text = unquote(value) if "%" in value else value
    if "-----BEGIN" in text:
        return certificate_thumbprint(der_from_pem(text))
    return certificate_thumbprint(_der(text))  # PEM without its delimiters (Traefik)


class TrustedProxies:
    """The peers whose certificate header is believed (addresses and networks)."""

    __slots__ = ("networks",)

    def __init__(self, entries: Iterable[str]) -> None:
        self.networks = tuple(ipaddress.ip_network(entry) for entry in entries)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, peer: str | None) -> bool:
        """True when `peer` (an address as the server reports it) is in a trusted network."""
        if not peer or not self.networks:
            return False
        try:
            address = ipaddress.ip_address(peer.split("%", 1)[0])  # drop an IPv6 zone
        except ValueError:
            return False  # a Unix socket path, a name: not an address we trust
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address.version == network.version and address in network
                   for network in self.networks)


def client_thumbprint(request: RequestView, proxies: TrustedProxies,
                      header: str) -> str | None:
    """The thumbprint of `request`'s client certificate (see the module doc for the sources),
    None without one; `Unreadable` when one was passed on but cannot be read."""
    if proxies and proxies.trusts(request.peer):
        return forwarded_thumbprint(header, request.headers(header))
    pem = request.client_cert
    return None if pem is None else certificate_thumbprint(der_from_pem(pem))


def check_binding(request: RequestView, bound: Any, proxies: TrustedProxies,
                  header: str) -> None:
    """Refuse (`InvalidToken`, 401) a request without the client certificate whose thumbprint
    `bound` (the token's ``cnf["x5t#S256"]``) names. The request's certificate is read only
    here, so only for a token bound to one."""
    if not isinstance(bound, str) or len(bound) != 43 or not is_b64url(bound):
        raise InvalidToken("The token's cnf x5t#S256 is not a base64url SHA-256 thumbprint.",
                           reason="invalid_cnf")
    try:
        presented = client_thumbprint(request, proxies, header)
    except Unreadable as exc:
        raise InvalidToken(f"The access token is bound to a client certificate and the "
                           f"certificate passed on cannot be read: {exc}.",
                           reason="client_certificate_unreadable") from None
    if presented is None:
        raise InvalidToken("The access token is bound to a client certificate (RFC 8705) and "
                           "the request presented none.", reason="client_certificate_missing")
    if not hmac.compare_digest(presented.encode("ascii"), bound.encode("ascii")):
        raise InvalidToken("The access token is bound to another client certificate than the "
                           "request's.", reason="client_certificate_mismatch")
