"""Serving a `LocalIssuer` with uvicorn in a background thread (tests, demos, the CLI's peers).

```python
with serve_issuer(LocalIssuer()) as running:
    running.url                  # "http://127.0.0.1:PORT": the issuer URL and token `iss`
    with running.outage():       # every route answers 503 meanwhile
        ...
    running.stop(); running.start()   # a restart on the same port
```
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .issuer import LocalIssuer

__all__ = ["RunningIssuer", "serve_issuer"]

_START_TIMEOUT = 10.0


class RunningIssuer:
    """A `LocalIssuer` served by uvicorn on `host`:`port` (0: a free port, kept across restarts).

    `start()` / `stop()` really open and close the listening socket (connections are refused
    while stopped); `outage()` keeps it open and answers 503 to everything.
    """

    def __init__(self, issuer: LocalIssuer, *, host: str = "127.0.0.1", port: int = 0,
                 log_level: str = "warning") -> None:
        self.issuer = issuer
        self.host = host
        self.port = port
        self.log_level = log_level
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> RunningIssuer:
        """Start serving (again); raise `RuntimeError` when uvicorn cannot start."""
        if self._server is not None:
            return self
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

    def stop(self) -> None:
        """Stop serving and close the listening socket (idempotent)."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
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
                 log_level: str = "warning") -> Iterator[RunningIssuer]:
    """Serve `issuer` with uvicorn in a background thread for the duration of the block.

    Sets `issuer.issuer_url` to the served URL when it was None. The issuer itself stays open
    (close it yourself).
    """
    running = RunningIssuer(issuer, host=host, port=port, log_level=log_level)
    running.start()
    try:
        yield running
    finally:
        running.stop()
