"""`KeySetServer`: publishes signing keys over loopback HTTP, with discovery, and fails on demand.

It serves ``/.well-known/openid-configuration`` (issuer = the server's URL) and ``/keys`` (the
public JWKS, with ``Cache-Control: max-age``). `fault` makes every response misbehave:

- ``"500"``: HTTP 500; ``"garbage"``: 200 with a body that is not JSON;
- ``"hang"``: no answer until the fault is cleared or the server stops;
- ``"slow"``: answer after `delay` seconds; ``"down"``: use `stop()` / `start()` instead, which
  really closes and reopens the listening socket on the same port (connection refused).

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
from typing import Any

from .signing import SigningKey, scalekit_claims

__all__ = ["KeySetServer"]


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
                if fault == "hang":
                    outer._release.wait(60)
                    if outer.fault == "hang":
                        return
                    fault = outer.fault
                if fault == "slow":
                    time.sleep(outer.delay)
                if fault == "500":
                    self._send(500, b'{"error":"server_error"}')
                    return
                if fault == "garbage":
                    self._send(200, b"<html>this is not json</html>")
                    return
                if path in outer.redirects:
                    self.send_response(302)
                    self.send_header("Location", outer.redirects[path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif path in outer.discovery_paths:
                    self._send(200, json.dumps(outer.discovery()).encode())
                elif path == outer.jwks_path:
                    cache = f"public, max-age={outer.max_age}" if outer.max_age is not None \
                        else None
                    body = json.dumps(outer.jwks()).encode()
                    etag = ('"' + hashlib.sha256(body).hexdigest()[:32] + '"'
                            if outer.send_etag else None)
                    if etag is not None and self.headers.get("If-None-Match") == etag:
                        outer.not_modified += 1
                        self._send(304, b"", cache, etag)
                    else:
                        self._send(200, body, cache, etag)
                else:
                    self._send(404, b'{"error":"not_found"}')

            def _send(self, status: int, body: bytes, cache_control: str | None = None,
                      etag: str | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                if cache_control:
                    self.send_header("Cache-Control", cache_control)
                if etag:
                    self.send_header("ETag", etag)
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (e.g. timed out on a "hang" fault): not an error

        return Handler
