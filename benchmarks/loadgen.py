"""A load generator that stays out of the way of the server it measures.

On a 2-core machine, a load generator that spends a core of its own (a Python HTTP client, or
`wrk` with its parsing) leaves the server one core: two workers could then never show twice one
worker's throughput, whatever the server does. This one keeps its own work per request to a few
hundred nanoseconds:

- HTTP/1.1 keep-alive connections with **pipelining**: each connection keeps `window` requests
  in flight; the requests are prebuilt bytes, and `n` answered requests are replaced by one
  `send` of `n` copies;
- responses are **counted, not parsed**: every response of the benchmark app is a status line
  and a fixed-size body, so the status lines are counted in each received buffer at C speed
  (`bytes.count`), carrying the few bytes a status line may be split across;
- one thread, one `selectors` loop over non-blocking sockets: no task or coroutine per request.

Its own CPU time is measured (`time.process_time`) and reported next to the figures, so a reader
can check it stayed small. The load is bounded: `seconds` of wall time and at most `max_requests`
requests; loopback addresses only.
"""

from __future__ import annotations

import selectors
import socket
import time
from dataclasses import dataclass

__all__ = ["LoadResult", "connect", "pipelined_load"]

_STATUS = b"HTTP/1.1 "
_OK = b"HTTP/1.1 200 "


@dataclass(frozen=True)
class LoadResult:
    """Requests answered in `seconds` (wall), how many were not 200, and the generator's own CPU
    seconds in that time."""

    answered: int
    refused: int
    seconds: float
    cpu_seconds: float

    @property
    def rate(self) -> float:
        return self.answered / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_share(self) -> float:
        """The generator's CPU time as a fraction of one core over the run."""
        return self.cpu_seconds / self.seconds if self.seconds > 0 else 0.0


class _Connection:
    __slots__ = ("answered", "ok", "sent", "sock", "tail")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sent = 0
        self.answered = 0
        self.ok = 0
        self.tail = b""


def connect(host: str, port: int) -> socket.socket:
    """One TCP connection to a loopback `host` (`ValueError` for any other host)."""
    if host not in ("127.0.0.1", "::1", "localhost"):
        raise ValueError("the load generator only targets loopback addresses")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.connect((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def pipelined_load(host: str, port: int, request: bytes, *, connections: int = 8,
                   window: int = 128, seconds: float = 2.0, pause: float = 0.01,
                   max_requests: int = 1_000_000,
                   sockets: list[socket.socket] | None = None) -> LoadResult:
    """Send `request` (one complete HTTP/1.1 request, keep-alive) over `connections` pipelined
    connections for `seconds`; return what was answered. After each pass over the ready
    connections the generator sleeps `pause` seconds, so that answers pile up and one `recv`
    collects many (`window` must cover what the server answers meanwhile). Raises
    `ConnectionError` if the server closes a connection, `ValueError` for a non-loopback host.

    `sockets`: connections made by the caller (e.g. spread evenly over a server's workers)
    instead of `connections` new ones; they are closed at the end either way."""
    selector = selectors.DefaultSelector()
    conns: list[_Connection] = [_Connection(sock) for sock in sockets or ()]
    try:
        if sockets is None:
            for _ in range(connections):
                conns.append(_Connection(connect(host, port)))
        for conn in conns:
            conn.sock.setblocking(False)
        cpu_start, started = time.process_time(), time.perf_counter()
        deadline = started + seconds
        budget = max_requests
        for conn in conns:
            burst = min(window, budget)
            budget -= burst
            conn.sock.sendall(request * burst)
            conn.sent = burst
            selector.register(conn.sock, selectors.EVENT_READ, conn)
        keep = len(_OK) - 1  # a status line may be split across two buffers
        open_conns = len(conns)
        stopping = False
        while open_conns:
            now = time.perf_counter()
            if now >= deadline:
                stopping = True  # no new requests; drain what is in flight (bounded below)
                if now >= deadline + 5.0:
                    raise TimeoutError("the server stopped answering pipelined requests")
            for key, _ in selector.select(timeout=0.5):
                conn = key.data
                data = conn.sock.recv(262144)
                if not data:
                    raise ConnectionError("the server closed a benchmark connection")
                # The carried tail was scanned before: count only the lines that end past it.
                scan = conn.tail + data
                answered = scan.count(_STATUS) - conn.tail.count(_STATUS)
                conn.ok += scan.count(_OK)  # (the tail is too short to hold a whole one)
                conn.tail = scan[-keep:]
                conn.answered += answered
                if answered and not stopping and budget > 0:
                    more = min(answered, budget)
                    budget -= more
                    conn.sock.sendall(request * more)  # a few hundred bytes: never blocks long
                    conn.sent += more
                if conn.answered >= conn.sent and (stopping or budget <= 0):
                    selector.unregister(conn.sock)
                    open_conns -= 1
            if pause and not stopping:
                time.sleep(pause)
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_start
    finally:
        selector.close()
        for conn in conns:
            conn.sock.close()
    answered = sum(conn.answered for conn in conns)
    refused = answered - sum(conn.ok for conn in conns)
    return LoadResult(answered, refused, elapsed, cpu)
