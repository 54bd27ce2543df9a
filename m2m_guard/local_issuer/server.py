"""`KeySetServer`: publishes signing keys over loopback HTTP, with discovery, and fails on demand.

It serves ``/.well-known/openid-configuration`` (issuer = the server's URL) and ``/keys`` (the
public JWKS, with ``Cache-Control: max-age``). `fault` makes every response misbehave:

- ``"500"``: HTTP 500; ``"garbage"``: 200 with a body that is not JSON;
- ``"hang"``: no answer until the fault is cleared or the server stops;
- ``"slow"``: answer after `delay` seconds; ``"down"``: use `stop()` / `start()` instead, which
  really closes and reopens the listening socket on the same port (connection refused);
- ``"blackhole"``: the same as ``"hang"`` (the connection is accepted, nothing ever comes back);
- ``"drip"``: the whole answer (status line, headers, body) trickles out one byte every `delay`
  seconds, so no single read ever times out;
- ``"404"``; ``"429"``: Too Many Requests with ``Retry-After: <retry_after>``;
- ``"not_jwks"``: 200 with JSON that is not a key set; ``"huge"``: 200 with a 10 MB body;
- ``"flap"``: every other request fails with 500, starting with the next one.

`fault_paths`, when set, limits the fault to those paths (e.g. only the key set, so discovery
still works). The key set is also served at every path of `jwks_aliases` (a target for
same-host redirects).

Hostile key-set content is published with `extra_jwks`; `hostile_jwk(kind)` and `key_flood(n)`
make the usual shapes (``use: enc``, private members, symmetric, short RSA, a point off its
curve, a duplicate kid, ten thousand keys).

`requests` counts requests per path, so tests can assert how many fetches happened. The key set
carries an `ETag`; a request with the matching `If-None-Match` gets 304 (counted in
`not_modified`).

For discovery tests: `discovery_paths` lists the paths that serve the discovery document
(remove the OpenID Connect one to force the RFC 8414 fallback), `discovery_extra` members are
merged into that document (a wrong ``issuer``, a foreign ``jwks_uri``, padding), and `redirects`
maps a path to the ``Location`` of a 302 answer.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

from .._core.encoding import b64url_encode
from .signing import SigningKey, scalekit_claims

__all__ = ["HOSTILE_KINDS", "KeySetServer", "hostile_jwk", "key_flood"]

HOSTILE_KINDS = ("enc", "private", "symmetric", "short_rsa", "bad_ec_point", "duplicate_kid")
HUGE_BODY_BYTES = 10 * 1024 * 1024


def hostile_jwk(kind: str, key: SigningKey | None = None) -> dict[str, Any]:
    """A JWK an issuer should never publish for verification, of one of `HOSTILE_KINDS`.

    `key` is the key whose public (or private) numbers are used: a token signed with it and
    carrying the JWK's `kid` is what an attacker or a broken issuer would present. For
    ``"duplicate_kid"`` it is a second key published under an existing `kid`; for ``"symmetric"``
    the `k` is `key`'s kid encoded (HS256 tokens can be made with that secret).
    """
    if kind == "enc":
        assert key is not None
        return key.public_jwk(use="enc")
    if kind == "private":
        assert key is not None
        from cryptography.hazmat.primitives.asymmetric import ec, rsa
        private = key.private_key
        if isinstance(private, rsa.RSAPrivateKey):
            d = private.private_numbers().d
        elif isinstance(private, ec.EllipticCurvePrivateKey):
            d = private.private_numbers().private_value
        else:
            raise ValueError("private: give an RSA or EC key")
        return key.public_jwk(d=b64url_encode(d.to_bytes((d.bit_length() + 7) // 8, "big")))
    if kind == "symmetric":
        secret = (key.kid if key is not None else "hostile-secret").encode()
        return {"kty": "oct", "kid": key.kid if key is not None else "hostile_oct",
                "k": b64url_encode(secret), "use": "sig", "alg": "HS256"}
    if kind == "short_rsa":
        assert key is not None
        return key.public_jwk()  # the caller gives a key made with rsa_bits=1024
    if kind == "bad_ec_point":
        assert key is not None
        jwk = key.public_jwk()
        if jwk.get("kty") != "EC":
            raise ValueError("bad_ec_point: give an EC key")
        y = bytearray(jwk["y"].encode())
        y[5] = ord("A") if y[5] != ord("A") else ord("B")  # y no longer matches x on the curve
        jwk["y"] = y.decode()
        return jwk
    if kind == "duplicate_kid":
        assert key is not None
        return key.public_jwk()  # the caller gives a second key reusing a published kid
    raise ValueError(f"unknown hostile key kind {kind!r}")


def key_flood(count: int, key: SigningKey) -> list[dict[str, Any]]:
    """`count` copies of `key`'s public JWK, each with its own kid (a key-count bomb)."""
    jwk = key.public_jwk()
    return [{**jwk, "kid": f"flood_{i}"} for i in range(count)]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class KeySetServer:
    """A real HTTP server on 127.0.0.1 publishing the public halves of `keys`.

    Use as a context manager, or call `start()` / `stop()`. `mint(...)` signs Scalekit-shaped
    tokens for this issuer with the first key (or the one given).
    """

    def __init__(self, keys: list[SigningKey] | None = None, *, host: str = "127.0.0.1",
                 port: int = 0, max_age: int | None = 300) -> None:
        self.keys: list[SigningKey] = list(keys) if keys is not None else [SigningKey.generate()]
        self.extra_jwks: list[dict[str, Any]] = []
        self.max_age = max_age
        self.fault: str | None = None
        self.delay = 0.0
        self.requests: Counter[str] = Counter()
        self.not_modified = 0  # key-set requests answered 304 (the client's ETag matched)
        self.send_etag = True  # False: no ETag, so every refresh gets the whole set (200)
        self.jwks_path = "/keys"
        self.discovery_paths: set[str] = {"/.well-known/openid-configuration"}
        self.discovery_extra: dict[str, Any] = {}
        self.redirects: dict[str, str] = {}
        self.jwks_aliases: set[str] = set()
        self.fault_paths: set[str] | None = None
        self.retry_after = 30
        self._flap = 0
        self._host = host
        self._port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._release = threading.Event()
        self._lock = threading.Lock()

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> KeySetServer:
        if self._server is not None:
            return self
        self._release.clear()
        server = _Server((self._host, self._port), self._handler_class())
        self._port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="m2m-guard-keyset-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        self._release.set()
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> KeySetServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what it serves ------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The issuer URL (also the `iss` of minted tokens)."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}"

    @property
    def jwks_url(self) -> str:
        return self.url + self.jwks_path

    def jwks(self) -> dict[str, Any]:
        with self._lock:
            return {"keys": [key.public_jwk() for key in self.keys] + list(self.extra_jwks)}

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.url,
            "jwks_uri": self.jwks_url,
            "token_endpoint": self.url + "/oauth/token",
            "grant_types_supported": ["client_credentials"],
            "id_token_signing_alg_values_supported": sorted({k.alg for k in self.keys}),
            **self.discovery_extra,
        }

    def set_fault(self, fault: str | None, *, delay: float = 0.0) -> None:
        """Make responses misbehave (see the module doc); None restores normal service."""
        self.fault = fault
        self.delay = delay
        self._flap = 0
        if fault is None:
            self._release.set()
        else:
            self._release.clear()

    def publish(self, *keys: SigningKey) -> None:
        """Replace the published keys."""
        with self._lock:
            self.keys = list(keys)

    def mint(self, key: SigningKey | None = None, *, typ: str | None = "JWT",
             headers: dict[str, Any] | None = None, **claims: Any) -> str:
        """A Scalekit-shaped token from this issuer; `claims` override or add claims
        (a value of None removes the claim)."""
        signer = key or self.keys[0]
        base = scalekit_claims(self.url)
        for name, value in claims.items():
            if value is None:
                base.pop(name, None)
            else:
                base[name] = value
        return signer.sign(base, typ=typ, headers=headers)

    # -- HTTP ----------------------------------------------------------------------------
    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                outer.requests[path] += 1
                fault = outer.fault
                if outer.fault_paths is not None and path not in outer.fault_paths:
                    fault = None
                if fault in ("hang", "blackhole"):
                    outer._release.wait(60)
                    if outer.fault in ("hang", "blackhole"):
                        return
                    fault = outer.fault
                if fault == "slow":
                    time.sleep(outer.delay)
                if fault == "flap":
                    with outer._lock:
                        outer._flap += 1
                        failing = outer._flap % 2 == 1
                    fault = "500" if failing else None
                if fault == "500":
                    self._send(500, b'{"error":"server_error"}')
                    return
                if fault == "404":
                    self._send(404, b'{"error":"not_found"}')
                    return
                if fault == "429":
                    self._send(429, b'{"error":"slow_down"}',
                               extra={"Retry-After": str(outer.retry_after)})
                    return
                if fault == "garbage":
                    self._send(200, b"<html>this is not json</html>")
                    return
                if fault == "not_jwks":
                    self._send(200, b'{"issuer":"x","keys":{"kty":"RSA"}}')
                    return
                if fault == "huge":
                    self._send(200, b'{"keys":[' + b" " * HUGE_BODY_BYTES + b"]}")
                    return
                if path in outer.redirects:
                    self.send_response(302)
                    self.send_header("Location", outer.redirects[path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif path in outer.discovery_paths:
                    self._send(200, json.dumps(outer.discovery()).encode(), drip=fault == "drip")
                elif path == outer.jwks_path or path in outer.jwks_aliases:
                    cache = f"public, max-age={outer.max_age}" if outer.max_age is not None \
                        else None
                    body = json.dumps(outer.jwks()).encode()
                    etag = ('"' + hashlib.sha256(body).hexdigest()[:32] + '"'
                            if outer.send_etag else None)
                    if etag is not None and self.headers.get("If-None-Match") == etag:
                        outer.not_modified += 1
                        self._send(304, b"", cache, etag, drip=fault == "drip")
                    else:
                        self._send(200, body, cache, etag, drip=fault == "drip")
                else:
                    self._send(404, b'{"error":"not_found"}')

            def _send(self, status: int, body: bytes, cache_control: str | None = None,
                      etag: str | None = None, *, extra: dict[str, str] | None = None,
                      drip: bool = False) -> None:
                if drip:  # headers are buffered (not sent) until end_headers flushes them
                    self.wfile = cast(Any, _Drip(self.wfile, outer))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                if cache_control:
                    self.send_header("Cache-Control", cache_control)
                if etag:
                    self.send_header("ETag", etag)
                for name, value in (extra or {}).items():
                    self.send_header(name, value)
                try:
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError, _Released):
                    # The client gave up (e.g. timed out on a "hang" fault), or the server is
                    # stopping: not an error.
                    self.close_connection = True

        return Handler


class _Released(Exception):
    """The fault was cleared or the server stopped while a response was dripping."""


class _Drip:
    """A write-only stream that sends one byte every `server.delay` seconds."""

    def __init__(self, raw: Any, server: KeySetServer) -> None:
        self.raw = raw
        self.server = server

    def write(self, data: bytes) -> int:
        for i in range(len(data)):
            self.raw.write(data[i:i + 1])
            self.raw.flush()
            if self.server._release.wait(self.server.delay) and self.server.fault is None:
                self.raw.write(data[i + 1:])  # released: send the rest at once
                self.raw.flush()
                break
            if self.server._server is None:
                raise _Released
        return len(data)

    def flush(self) -> None:
        self.raw.flush()

    def __getattr__(self, name: str) -> Any:  # closed, fileno, ...: those of the real stream
        return getattr(self.raw, name)
