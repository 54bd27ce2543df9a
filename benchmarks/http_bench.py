"""Throughput over HTTP with `wrk` (one thread, 32 connections, fixed short durations): uvicorn
with one worker for the ASGI variants, waitress for the WSGI ones. Skipped when `wrk` is not on
PATH. All servers run at once (idle between measurements) and the rounds alternate between them.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from .apps import ASGI_VARIANTS, WSGI_VARIANTS, wsgi_guard_class
from .harness import Config, Spread
from .inprocess_bench import ASGI_NAMES, WSGI_NAMES
from .report import Row

CONNECTIONS = 32
_RATE = re.compile(r"Requests/sec:\s*([0-9.]+)")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s*([0-9]+)")


def wrk_path() -> str | None:
    return shutil.which("wrk")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _token_script(directory: Path, name: str, tokens: list[str]) -> Path:
    path = directory / f"{name}.lua"
    listed = ",\n".join(f'"{token}"' for token in tokens)
    path.write_text(
        f"local tokens = {{\n{listed}\n}}\nlocal i = 0\n"
        "request = function()\n  i = (i % #tokens) + 1\n"
        '  return wrk.format("GET", "/", {["Authorization"] = "Bearer " .. tokens[i]})\nend\n',
        encoding="utf-8")
    return path


class _Server:
    def __init__(self, kind: str, variant: str, issuer: str, cache_size: int | None) -> None:
        self.port = _free_port()
        env = dict(os.environ, BENCH_VARIANT=variant, BENCH_ISSUER=issuer,
                   BENCH_CACHE_SIZE="" if cache_size is None else str(cache_size))
        if kind == "asgi":
            command = [sys.executable, "-m", "uvicorn", "--factory", "benchmarks.apps:make_asgi",
                       "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
                       "--log-level", "warning", "--no-access-log"]
        else:
            command = [sys.executable, "-m", "waitress", "--host=127.0.0.1",
                       f"--port={self.port}", "--call", "benchmarks.apps:make_wsgi"]
        # A file, not a pipe: a server that logs a lot (waitress's queue warnings) must never
        # block on a full pipe in the middle of a measurement.
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(command, env=env, cwd=Path(__file__).parent.parent,
                                        stdout=subprocess.DEVNULL, stderr=self.log)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.log.seek(0)
                error = self.log.read().decode(errors="replace")
                raise RuntimeError(f"benchmark server exited: {error[-500:]}")
            try:
                httpx.get(self.url, timeout=1.0)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("benchmark server did not start")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self.log.close()


def _wrk(url: str, seconds: float, script: Path | None, header: str | None) -> float:
    command = [wrk_path() or "wrk", "-t1", f"-c{CONNECTIONS}", f"-d{max(1, round(seconds))}s",
               "--timeout", "5s"]
    if script is not None:
        command += ["-s", str(script)]
    if header is not None:
        command += ["-H", header]
    output = subprocess.run([*command, url], capture_output=True, text=True, timeout=seconds + 30,
                            check=True).stdout
    failures = _NON_2XX.search(output)
    if failures and int(failures.group(1)) > 0:
        raise RuntimeError(f"wrk saw {failures.group(1)} refused requests at {url}")
    found = _RATE.search(output)
    if found is None or float(found.group(1)) <= 0:
        raise RuntimeError(f"wrk measured nothing at {url}: {output[-300:]}")
    return float(found.group(1))


def _measure(kind: str, variants: dict[str, str], issuer: str, tokens: list[str],
             config: Config) -> dict[str, Spread]:
    """Requests/s per variant name (median and spread of the rounds); the servers run
    together, the rounds alternate."""
    size = max(1, len(tokens) // 2)
    with tempfile.TemporaryDirectory() as scratch:
        script = _token_script(Path(scratch), "unique", tokens)
        servers = {name: _Server(kind, variant, issuer,
                                 size if variant == "m2m-unique" else None)
                   for variant, name in variants.items()}
        plans = {name: (None, None) if variant == "no-auth" else
                 (None, f"Authorization: Bearer {tokens[0]}") if variant == "m2m-repeated" else
                 (script, None) for variant, name in variants.items()}
        rates: dict[str, list[float]] = {name: [] for name in servers}
        try:
            for server in servers.values():
                server.wait_ready()
            names = list(servers)
            for name in names:  # warm: JWKS loaded, caches and lazy imports done
                _wrk(servers[name].url, 1, *plans[name])
            for round_no in range(config.http_rounds):
                shift = round_no % len(names)
                for name in names[shift:] + names[:shift]:
                    rates[name].append(_wrk(servers[name].url, config.http_seconds, *plans[name]))
        finally:
            for server in servers.values():
                server.stop()
    return {name: Spread.of(values) for name, values in rates.items()}


def run(issuer: str, tokens: list[str], config: Config, *, enabled: bool) -> list[Row]:
    asgi_section = "HTTP uvicorn 1 worker, wrk 32 conns (RS256)"
    wsgi_section = "HTTP waitress, wrk 32 conns (RS256)"
    asgi_names = dict(ASGI_NAMES)
    wsgi_names = dict(WSGI_NAMES)
    reason = None if enabled else "not run (--no-http)"
    if reason is None and wrk_path() is None:
        reason = "skipped: wrk not on PATH"
    if reason is not None:
        return [Row(asgi_section, name, None, "req/s", note=reason)
                for name in asgi_names.values()] + \
               [Row(wsgi_section, name, None, "req/s", note=reason)
                for name in wsgi_names.values()]
    rows: list[Row] = []
    rates = _measure("asgi", asgi_names, issuer, tokens, config)
    base = rates["no auth"].median
    for name, spread in rates.items():
        rate = spread.median
        row = Row.measured(asgi_section, name, spread, "req/s", ratio=rate / base,
                           baseline="no-auth")
        if name == "no auth":
            row.ratio, row.baseline, row.note = None, "", "baseline"
        elif name == "m2m_guard, repeated token":
            row.target, row.met = "≥ 0.75x no-auth", rate / base >= 0.75
        elif name == "m2m_guard, unique tokens":
            row.target, row.met = "≥ 0.38x no-auth", rate / base >= 0.38
        rows.append(row)
    speedup = rates["m2m_guard, unique tokens"].median / rates["BaseHTTPMiddleware + PyJWT"].median
    rows.append(Row(asgi_section, "unique tokens: times BaseHTTPMiddleware + PyJWT", speedup, "x",
                    target="≥ 3x", met=speedup >= 3))
    available = wsgi_guard_class() is not None
    measured = {variant: name for variant, name in wsgi_names.items()
                if available or not variant.startswith("m2m")}
    rates = _measure("wsgi", measured, issuer, tokens, config)
    base = rates["no auth"].median
    for variant in WSGI_VARIANTS:
        name = wsgi_names[variant]
        if name not in rates:
            rows.append(Row(wsgi_section, name, None, "req/s",
                            note="m2m_guard WSGI: not available in this build"))
            continue
        row = Row.measured(wsgi_section, name, rates[name], "req/s",
                           ratio=rates[name].median / base, baseline="no-auth")
        if name == "no auth":
            row.ratio, row.baseline, row.note = None, "", "baseline"
        rows.append(row)
    return rows


__all__ = ["ASGI_VARIANTS", "run", "wrk_path"]
