"""Scaling with workers: real uvicorn, `--workers 1` against `--workers 2`, over loopback, one
token repeated (a cache hit in every worker after its first request).

Each worker builds its own middleware, so it holds its own key set and verified-token cache and
fetches the key set once, at startup (the issuer's request count is checked). Both servers run
together and the rounds alternate between them (the order rotates); the ratio of 2 workers to
1 worker is taken within each round.

The load comes from `benchmarks.loadgen` (pipelined keep-alive connections, responses counted
not parsed), whose own CPU time is reported: on a 2-core machine a generator that spent a core
itself would cap two workers at one core. Server CPU time (from /proc, Linux only) shows how many
cores each server actually got: on a machine shared with other work, 2 workers cannot double the
throughput if the second core is not free, and the per-CPU-second ratio then tells whether the
guard itself scales (1.0: each request costs the same CPU with two workers as with one).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from .harness import Config, Spread
from .http_bench import _free_port
from .loadgen import LoadResult, connect, pipelined_load
from .report import Row

__all__ = ["SCALING_TARGET", "run"]

SCALING_TARGET = 1.8
CONNECTIONS = 8
WINDOW = 128
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
SECTION = "HTTP uvicorn --workers, repeated token (RS256)"


def _cpu_seconds(pid: int) -> float | None:
    """utime + stime of `pid` and its children (one level: uvicorn's workers), from /proc."""
    try:
        pids = [pid] + [int(entry) for entry in os.listdir("/proc") if entry.isdigit()
                        and _parent(int(entry)) == pid]
        return sum(_own_cpu(child) for child in pids)
    except OSError:
        return None


def _stat(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
        text = stat.read()
    return text[text.rindex(")") + 2:].split()  # the fields after "(comm)"


def _parent(pid: int) -> int:
    try:
        return int(_stat(pid)[1])
    except (OSError, ValueError, IndexError):
        return -1


def _own_cpu(pid: int) -> float:
    try:
        fields = _stat(pid)
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def _workers(pid: int) -> list[int]:
    """uvicorn's worker processes under supervisor `pid` (multiprocessing children, not its
    resource tracker)."""
    found = []
    try:
        for entry in os.listdir("/proc"):
            if entry.isdigit() and _parent(int(entry)) == pid:
                try:
                    with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                        if b"spawn_main" in cmdline.read():
                            found.append(int(entry))
                except OSError:
                    continue
    except OSError:
        return []
    return found


class _Uvicorn:
    def __init__(self, workers: int, issuer: str) -> None:
        self.port = _free_port()
        self.workers = workers
        env = dict(os.environ, BENCH_VARIANT="m2m-repeated", BENCH_ISSUER=issuer,
                   BENCH_CACHE_SIZE="")
        command = [sys.executable, "-m", "uvicorn", "--factory", "benchmarks.apps:make_asgi",
                   "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(workers),
                   "--log-level", "warning", "--no-access-log"]
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(command, env=env, cwd=Path(__file__).parent.parent,
                                        stdout=subprocess.DEVNULL, stderr=self.log)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.log.seek(0)
                raise RuntimeError("uvicorn exited: "
                                   + self.log.read().decode(errors="replace")[-500:])
            try:
                httpx.get(f"http://127.0.0.1:{self.port}/", timeout=1.0)
                if self.workers == 1 or len(_workers(self.process.pid)) >= self.workers:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("uvicorn did not start")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self.log.close()


def _server_inode(client: socket.socket) -> int | None:
    """The inode of the server side of `client`'s connection (IPv4 loopback), from
    /proc/net/tcp: the entry whose remote port is the client's local port."""
    client_port = client.getsockname()[1]
    server_port = client.getpeername()[1]
    try:
        with open("/proc/net/tcp", encoding="ascii") as table:
            next(table)
            for line in table:
                fields = line.split()
                local, remote = fields[1], fields[2]
                if (int(local.rsplit(":", 1)[1], 16) == server_port
                        and int(remote.rsplit(":", 1)[1], 16) == client_port):
                    return int(fields[9])
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return None


def _owner(inode: int, pids: list[int]) -> int | None:
    target = f"socket:[{inode}]"
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                        return pid
                except OSError:
                    continue
        except OSError:
            continue
    return None


def balanced_connections(server: _Uvicorn, count: int) -> tuple[list[socket.socket], bool]:
    """`count` connections to `server`, as evenly spread over its workers as the kernel lets us
    find out: each new connection's owner is looked up (/proc), and one landing on a worker that
    already has its share is closed and made again (at most 40 tries per connection). With one
    worker, or where /proc cannot tell, plain connections; the flag says whether they are known
    to be balanced.

    Why: uvicorn's workers share one listening socket and an idle worker accepts every
    connection that is waiting, so a burst of connections can all land on one worker, which then
    measures one worker twice."""
    if server.workers == 1:
        return [connect("127.0.0.1", server.port) for _ in range(count)], True
    workers = _workers(server.process.pid)
    share = -(-count // len(workers)) if workers else count
    held: dict[int, int] = dict.fromkeys(workers, 0)
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            for _attempt in range(40):
                sock = connect("127.0.0.1", server.port)
                owner = None
                deadline = time.monotonic() + 1.0
                while owner is None and time.monotonic() < deadline:
                    inode = _server_inode(sock)
                    owner = _owner(inode, workers) if inode is not None else None
                    if owner is None:
                        time.sleep(0.005)  # not accepted yet
                if owner is None:  # /proc cannot tell: keep what we have, unbalanced
                    sockets.append(sock)
                    return sockets + [connect("127.0.0.1", server.port)
                                      for _ in range(count - len(sockets))], False
                if held[owner] < share:
                    held[owner] += 1
                    sockets.append(sock)
                    break
                sock.close()
            else:
                return sockets + [connect("127.0.0.1", server.port)
                                  for _ in range(count - len(sockets))], False
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets, True


def _request(token: str) -> bytes:
    return (f"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n"
            .encode("ascii"))


def _round(server: _Uvicorn, request: bytes, seconds: float
           ) -> tuple[LoadResult, float | None, bool]:
    """One measured load on `server`: the result, the server's CPU seconds meanwhile, and
    whether the connections were known to be spread evenly over its workers."""
    sockets, balanced = balanced_connections(server, CONNECTIONS)
    before = _cpu_seconds(server.process.pid)
    result = pipelined_load("127.0.0.1", server.port, request, window=WINDOW, seconds=seconds,
                            sockets=sockets)
    after = _cpu_seconds(server.process.pid)
    if result.refused:
        raise RuntimeError(f"uvicorn refused {result.refused} benchmark requests")
    cpu = after - before if before is not None and after is not None else None
    return result, cpu, balanced


def run(issuer: Any, token: str, config: Config) -> list[Row]:
    """`issuer`: the running `KeySetServer` (its request counts show the fetches)."""
    request = _request(token)
    fetches_before = issuer.requests["/keys"]
    one = _Uvicorn(1, issuer.url)
    one.wait_ready()
    fetches_one = issuer.requests["/keys"] - fetches_before
    two = _Uvicorn(2, issuer.url)
    servers = {1: one, 2: two}
    loads: dict[int, list[LoadResult]] = {1: [], 2: []}
    cpus: dict[int, list[float]] = {1: [], 2: []}
    unbalanced = 0
    try:
        two.wait_ready()
        for server in servers.values():  # warm: every worker verified the token once
            _round(server, request, min(1.0, config.worker_seconds))
        for round_no in range(config.worker_rounds):
            for count in ((1, 2) if round_no % 2 == 0 else (2, 1)):
                result, cpu, balanced = _round(servers[count], request, config.worker_seconds)
                unbalanced += not balanced
                loads[count].append(result)
                if cpu is not None:
                    cpus[count].append(cpu / result.seconds)
        fetches_two = issuer.requests["/keys"] - fetches_before - fetches_one
    finally:
        one.stop()
        two.stop()
    rates = {count: Spread.of([load.rate for load in results])
             for count, results in loads.items()}
    generator = max(load.cpu_share for results in loads.values() for load in results)
    rows = []
    for count in (1, 2):
        cores = f"server used {Spread.of(cpus[count]).median:.2f} cores" if cpus[count] \
            else "server CPU not measurable here"
        rows.append(Row.measured(SECTION, f"{count} worker{'s' if count > 1 else ''}",
                                 rates[count], "req/s", note=cores))
    ratios = Spread.of([b.rate / a.rate for a, b in zip(loads[1], loads[2], strict=True)])
    load_avg = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rows.append(Row.measured(
        SECTION, "2 workers vs 1: throughput", ratios, "x",
        note=f"load average {load_avg:.1f} on {os.cpu_count()} cores at the end"
             + (f"; {unbalanced} rounds with connections not known to be balanced"
                if unbalanced else "; connections balanced over the workers"),
    ).at_least(SCALING_TARGET, f"≥ {SCALING_TARGET}x"))
    if len(cpus[1]) == len(loads[1]) and len(cpus[2]) == len(loads[2]) and cpus[1]:
        per_cpu = Spread.of([(b.rate / cb) / (a.rate / ca) for a, b, ca, cb in
                             zip(loads[1], loads[2], cpus[1], cpus[2], strict=True)
                             if ca > 0 and cb > 0] or [float("nan")])
        rows.append(Row.measured(SECTION, "2 workers vs 1: requests per server CPU-second",
                                 per_cpu, "x", note="1.0: no per-request cost from scaling"))
    rows.append(Row(SECTION, "key-set fetches (1 worker, 2 workers)", fetches_two, "",
                    target="= 1 per worker", met=fetches_one == 1 and fetches_two == 2,
                    note=f"1 worker: {fetches_one}, 2 workers: {fetches_two}"))
    rows.append(Row(SECTION, "load generator CPU (share of one core)", generator, "x",
                    note=f"pipelined: {CONNECTIONS} connections x {WINDOW} in flight"))
    return rows


def main(argv: list[str] | None = None) -> int:
    """`python -m benchmarks.workers_bench [--quick | --tiny]`: this section alone."""
    import argparse

    from m2m_guard.local_issuer import KeySetServer, SigningKey, scalekit_claims

    from .report import SPREAD_NOTE, text_table

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # test suite
    args = parser.parse_args(argv)
    config = Config.tiny() if args.tiny else Config.quick_run() if args.quick else Config()
    key = SigningKey.generate("RS256")
    with KeySetServer([key]) as issuer:
        rows = run(issuer, key.sign(scalekit_claims(issuer.url)), config)
    print(text_table(rows))
    print(SPREAD_NOTE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
