"""Serving an ASGI app with hypercorn in a background thread: HTTP/1.1 and HTTP/2 on one port.

Over TLS the protocol is chosen by ALPN (``h2``, then ``http/1.1``); over plain TCP a connection
opening with the HTTP/2 preface (prior knowledge, as gRPC clients do) speaks HTTP/2, any other
HTTP/1.1. HTTP/2 carries the response trailers gRPC needs.

The listening socket is bound here, before the server thread starts, so the port is known at
once (port 0: a free one) and a bind error is raised to the caller.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp

__all__ = ["HyperServer"]

_STOP_TIMEOUT = 10.0


class HyperServer:
    """`app` served by hypercorn on `host`:`port`; TLS with `certfile` (the chain) and `keyfile`.

    `start()` raises `RuntimeError` when hypercorn is missing, `OSError` when the address
    cannot be bound, `ssl.SSLError` for unusable certificate files.
    """

    def __init__(self, app: ASGIApp, *, host: str, port: int,
                 certfile: Path | None = None, keyfile: Path | None = None) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.certfile = certfile
        self.keyfile = keyfile
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._failure: BaseException | None = None

    def start(self) -> int:
        """Listen and serve; return the bound port."""
        try:
            from hypercorn.asyncio import serve
            from hypercorn.config import Config
        except ImportError:
            raise RuntimeError("HTTP/2 and TLS for the local issuer need hypercorn: "
                               "pip install 'm2m-guard[emulator]'") from None
        config = Config()
        config.loglevel = "WARNING"
        config.accesslog = None
        config.graceful_timeout = 1.0
        config.alpn_protocols = ["h2", "http/1.1"]
        if self.certfile is not None:
            config.certfile = str(self.certfile)
            config.keyfile = str(self.keyfile)
            config.create_ssl_context()  # raises here, in the caller's thread, for bad files
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.host, self.port))
            listener.listen(128)
            listener.set_inheritable(True)
        except OSError:
            listener.close()
            raise
        self.port = int(listener.getsockname()[1])
        # hypercorn gets its own descriptor of the listening socket and closes it when it stops;
        # ours is closed now (the socket stays open through the copy).
        config.bind = [f"fd://{os.dup(listener.fileno())}"]
        listener.close()
        ready = threading.Event()

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._loop.set_exception_handler(_quiet_cancellation)
            self._stop = asyncio.Event()
            ready.set()
            await serve(self.app, config, shutdown_trigger=self._stop.wait)  # type: ignore[arg-type]

        def run() -> None:
            try:
                asyncio.run(main())
            except BaseException as exc:  # noqa: BLE001 - reported by stop(), never lost
                self._failure = exc
            finally:
                ready.set()

        self._thread = threading.Thread(target=run, name="m2m-guard-local-issuer-h2",
                                        daemon=True)
        self._thread.start()
        ready.wait(_STOP_TIMEOUT)
        if self._failure is not None:
            raise RuntimeError(f"hypercorn could not start: {self._failure}")
        return self.port

    def stop(self) -> None:
        """Stop serving and close the listening socket (idempotent)."""
        loop, stop, thread = self._loop, self._stop, self._thread
        self._loop = self._stop = self._thread = None
        if loop is not None and stop is not None:
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:  # the loop has already ended
                pass
        if thread is not None:
            thread.join(_STOP_TIMEOUT)


def _quiet_cancellation(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Connections still open at shutdown are cancelled; asyncio's stream callback then reports
    the cancellation as an error (hypercorn on Python 3.11). Anything else is reported."""
    if isinstance(context.get("exception"), asyncio.CancelledError):
        return
    loop.default_exception_handler(context)
