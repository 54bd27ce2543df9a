"""Serving a `LocalIssuer` with uvicorn in a background thread (tests, demos, the CLI's peers).

```python
with serve_issuer(LocalIssuer()) as running:
    running.url                  # "http://127.0.0.1:PORT": the issuer URL and token `iss`
    with running.outage():       # every route answers 503 meanwhile
        ...
    running.stop(); running.start()   # a restart on the same port

with serve_issuer(issuer, tls=True, grpc=True) as running:   # the emulator extra
    running.url                  # "https://127.0.0.1:PORT", HTTP/1.1 and HTTP/2 (ALPN)
    running.tls.ca_cert          # the CA to trust (see tls.export_lines)
```

Plain HTTP is served by uvicorn, as without the extra. With `tls` (True: certificates kept in
``<db>.tls`` beside the database, or a temporary directory for ``:memory:``; or a directory) or
`grpc` (Scalekit's gRPC client-management service on the same port, `grpc_service`) the server
is hypercorn, speaking HTTP/1.1 and HTTP/2 on one port.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .issuer import LocalIssuer
from .tls import TlsFiles, ensure_certificates, tls_directory

__all__ = ["RunningIssuer", "serve_issuer"]

_START_TIMEOUT = 10.0


class RunningIssuer:
    """A `LocalIssuer` served by uvicorn on `host`:`port` (0: a free port, kept across restarts).

    `start()` / `stop()` really open and close the listening socket (connections are refused
    while stopped); `outage()` keeps it open and answers 503 to everything.
    """

    def __init__(self, issuer: LocalIssuer, *, host: str = "127.0.0.1", port: int = 0,
                 log_level: str = "warning", tls: bool | str | os.PathLike[str] = False,
                 grpc: bool = False) -> None:
        self.issuer = issuer
        self.host = host
        self.port = port
        self.log_level = log_level
        self.grpc = grpc
        self.tls: TlsFiles | None = None
        self._temporary: tempfile.TemporaryDirectory[str] | None = None
        if tls is True:
            directory = tls_directory(issuer.store.path)
            if directory is None:
                self._temporary = tempfile.TemporaryDirectory(prefix="m2m-guard-tls-")
                directory = Path(self._temporary.name)
            self.tls = ensure_certificates(directory, hosts=(host,))
        elif tls:
            self.tls = ensure_certificates(tls, hosts=(host,))
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> RunningIssuer:
        """Start serving (again); raise `RuntimeError` when uvicorn cannot start."""
        if self._server is not None:
            return self
        if self.tls is not None or self.grpc:
            return self._start_hypercorn()
        try:
            import uvicorn
        except ImportError:  # pragma: no cover - depends on the installation
            raise RuntimeError("serving the local issuer needs uvicorn: "
                               "pip install 'm2m-guard[server]'") from None
        config = uvicorn.Config(self.issuer.app, host=self.host, port=self.port,
                                log_level=self.log_level, lifespan="off", access_log=False)
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name="m2m-guard-local-issuer", daemon=True)
        thread.start()
        deadline = time.monotonic() + _START_TIMEOUT
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not server.started:
            server.should_exit = True
            thread.join(_START_TIMEOUT)
            raise RuntimeError(f"the local issuer could not listen on {self.host}:{self.port}")
        self.port = int(server.servers[0].sockets[0].getsockname()[1])
        if self.issuer.issuer_url is None:
            self.issuer.issuer_url = self.url
        self._server, self._thread = server, thread
        return self

    def _start_hypercorn(self) -> RunningIssuer:
        from .hyper import HyperServer

        app: Any = self.issuer.app
        if self.grpc:
            from .grpc_service import with_grpc

            app = with_grpc(app, self.issuer)
        server = HyperServer(app, host=self.host, port=self.port,
                             certfile=self.tls.cert_chain if self.tls else None,
                             keyfile=self.tls.key if self.tls else None)
        try:
            self.port = server.start()
        except OSError as exc:
            raise RuntimeError(f"the local issuer could not listen on {self.host}:{self.port}: "
                               f"{exc}") from None
        if self.issuer.issuer_url is None:
            self.issuer.issuer_url = self.url
        self._server = server
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket (idempotent)."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None and not hasattr(server, "should_exit"):
            server.stop()
        elif server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(_START_TIMEOUT)

    @contextmanager
    def outage(self, *, refuse: bool = False) -> Iterator[None]:
        """A simulated outage: every route answers 503 (`refuse`: the server is stopped, so
        connections are refused); normal service again on exit."""
        if refuse:
            self.stop()
        else:
            self.issuer.unavailable = True
        try:
            yield
        finally:
            if refuse:
                self.start()
            else:
                self.issuer.unavailable = False

    def __enter__(self) -> RunningIssuer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def serve_issuer(issuer: LocalIssuer, *, host: str = "127.0.0.1", port: int = 0,
                 log_level: str = "warning", tls: bool | str | os.PathLike[str] = False,
                 grpc: bool = False) -> Iterator[RunningIssuer]:
    """Serve `issuer` in a background thread for the duration of the block (uvicorn; hypercorn
    with `tls` or `grpc`, see the module doc).

    Sets `issuer.issuer_url` to the served URL when it was None. The issuer itself stays open
    (close it yourself).
    """
    running = RunningIssuer(issuer, host=host, port=port, log_level=log_level, tls=tls,
                            grpc=grpc)
    running.start()
    try:
        yield running
    finally:
        running.stop()
