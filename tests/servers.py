"""Real servers for end-to-end tests: uvicorn on a free loopback port, in a thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def uvicorn_server(app: Any, *, port: int | None = None, **options: Any) -> Iterator[int]:
    """Serve `app` with uvicorn on 127.0.0.1 (lifespan on), on `port` or a free one; yield the
    port; stop on exit."""
    config = uvicorn.Config(app, host="127.0.0.1", port=free_port() if port is None else port,
                            log_level="warning", lifespan="on", **options)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.started, "uvicorn did not start"
        yield int(server.servers[0].sockets[0].getsockname()[1])
    finally:
        server.should_exit = True
        thread.join(10)
    assert not thread.is_alive(), "uvicorn did not stop"


@contextmanager
def waitress_server(app: Any, *, threads: int = 4) -> Iterator[int]:
    """Serve the WSGI `app` with waitress on 127.0.0.1 (`threads` worker threads), in a thread;
    yield the port; stop on exit."""
    import waitress.server  # a test dependency; imported here so ASGI-only runs need it not

    server = waitress.server.create_server(app, host="127.0.0.1", port=0, threads=threads,
                                           channel_timeout=5, asyncore_loop_timeout=0.05)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield int(server.effective_port)
    finally:
        # waitress has no stop(): close every dispatcher (listener, trigger, open channels) from
        # the loop's own thread, so its map is empty and the loop returns; then stop the workers.
        def close_all() -> None:
            for dispatcher in list(server._map.values()):
                dispatcher.close()

        server.trigger.pull_trigger(close_all)
        thread.join(10)
        server.task_dispatcher.shutdown()
    assert not thread.is_alive(), "waitress did not stop"


def tls_extension_protocol() -> type[Any]:
    """uvicorn's h11 protocol, giving apps the ASGI TLS extension (``scope["extensions"]
    ["tls"]``), which uvicorn itself does not provide: the client certificate the handshake
    verified, as PEM, first in ``client_cert_chain``. It stands for a server that implements
    the extension, over a real TLS handshake."""
    import ssl

    from uvicorn.protocols.http.h11_impl import H11Protocol

    class TlsExtensionProtocol(H11Protocol):
        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            ssl_object = transport.get_extra_info("ssl_object")
            der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
            tls = {"server_cert": None, "client_cert_name": None, "client_cert_error": None,
                   "tls_version": None, "cipher_suite": None,
                   "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else []}
            inner = self.app

            async def app(scope: Any, receive: Any, send: Any) -> None:
                scope.setdefault("extensions", {})["tls"] = tls
                await inner(scope, receive, send)

            self.app = app

    return TlsExtensionProtocol


@contextmanager
def werkzeug_server(app: Any, **options: Any) -> Iterator[int]:
    """Serve the WSGI `app` with Werkzeug's server on 127.0.0.1 (threaded; `options` such as
    ``ssl_context``), in a thread; yield the port; stop on exit."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True, **options)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield int(server.server_port)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
    assert not thread.is_alive(), "werkzeug did not stop"


@contextmanager
def tls_terminating_proxy(context: Any, upstream_port: int) -> Iterator[int]:
    """A minimal TLS-terminating reverse proxy on 127.0.0.1, as Envoy is configured for
    certificate-bound tokens (``SANITIZE_SET``): it ends the client's TLS with `context`
    (which verifies client certificates), drops any ``x-forwarded-client-cert`` the client sent,
    sets its own with the verified certificate (``Hash=`` and ``Cert=``), and forwards one
    request per connection to plain HTTP on `upstream_port`. Yields its port."""
    import hashlib
    import socketserver
    import ssl
    from urllib.parse import quote

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            try:
                conn = context.wrap_socket(self.request, server_side=True)
            except (OSError, ssl.SSLError):
                return  # a failed handshake: nothing to forward
            with conn:
                head = b""
                while b"\r\n\r\n" not in head and len(head) < 65536:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    head += chunk
                head, _, body = head.partition(b"\r\n\r\n")
                request_line, *lines = head.split(b"\r\n")
                kept = [line for line in lines if line.split(b":", 1)[0].strip().lower()
                        not in (b"x-forwarded-client-cert", b"connection")]
                length = next((int(line.split(b":", 1)[1]) for line in kept
                               if line.split(b":", 1)[0].strip().lower() == b"content-length"),
                              0)
                while len(body) < length:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    body += chunk
                der = conn.getpeercert(binary_form=True)
                if der:
                    pem = ssl.DER_cert_to_PEM_cert(der)
                    kept.append(b'x-forwarded-client-cert: By=spiffe://proxy;Hash='
                                + hashlib.sha256(der).hexdigest().encode() + b';Cert="'
                                + quote(pem).encode() + b'"')
                kept.append(b"connection: close")
                with socket.create_connection(("127.0.0.1", upstream_port), timeout=10) as up:
                    up.sendall(b"\r\n".join([request_line, *kept]) + b"\r\n\r\n" + body)
                    while True:
                        chunk = up.recv(65536)
                        if not chunk:
                            break
                        conn.sendall(chunk)

    class Server(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True

    server = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
    assert not thread.is_alive(), "the proxy did not stop"
