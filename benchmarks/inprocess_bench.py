"""Request cost in process: the application called directly (no server, no sockets), so the
figures are the frameworks' and the guards' own work.

"unique tokens" cycle through a pool larger than the guard's cache, so every request is a full
verification (and a cache insertion with eviction); "repeated token" sends one token, a cache hit.
The naive contenders cache nothing, so they get the unique tokens too.
"""

from __future__ import annotations

import asyncio
import io
import itertools
from collections.abc import Awaitable, Callable
from typing import Any

from m2m_guard import TokenVerifier

from .apps import ASGI_VARIANTS, WSGI_VARIANTS, build_asgi, build_wsgi, guard_settings
from .harness import Config, Result, interleave, interleave_async, per_round
from .report import Row

ASGI_NAMES = {
    "no-auth": "no auth",
    "m2m-unique": "m2m_guard, unique tokens",
    "m2m-repeated": "m2m_guard, repeated token",
    "naive-pyjwt": "naive PyJWT middleware",
    "basehttp-pyjwt": "BaseHTTPMiddleware + PyJWT",
}
# Targets (ratios within one run): a cache hit through the middleware keeps this share of the
# no-auth throughput; every token new is this many times the naive PyJWT middleware's.
REPEATED_TARGET = 0.85
UNIQUE_TARGET = 2.0
WSGI_NAMES = {key: value for key, value in ASGI_NAMES.items() if key in WSGI_VARIANTS}


def _scope(headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
            "scheme": "http", "path": "/", "raw_path": b"/", "query_string": b"",
            "root_path": "", "headers": headers, "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000)}


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


class _Sink:
    """The server's `send`: remembers the status, so a refused request is noticed."""

    def __init__(self) -> None:
        self.status = 0

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]


def _asgi_runner(app: Any, header_lists: list[list[tuple[bytes, bytes]]]
                 ) -> Callable[[int], Awaitable[None]]:
    source = itertools.cycle(header_lists)
    sink = _Sink()

    async def run(batch: int) -> None:
        for _ in range(batch):
            await app(_scope(next(source)), _receive, sink)
        if sink.status != 200:
            raise RuntimeError(f"the benchmark app answered {sink.status}")

    return run


def _headers(token: str | None) -> list[tuple[bytes, bytes]]:
    headers = [(b"host", b"bench.local"), (b"user-agent", b"bench"), (b"accept", b"*/*")]
    if token is not None:
        headers.append((b"authorization", b"Bearer " + token.encode("ascii")))
    return headers


def run_asgi(issuer: str, key: Any, alg: str, tokens: list[str], config: Config) -> list[Row]:
    unique = [_headers(token) for token in tokens]
    repeated = [_headers(tokens[0])]

    async def measure() -> dict[str, Result]:
        apps: dict[str, Callable[[int], Awaitable[None]]] = {}
        verifiers = []
        for variant in ASGI_VARIANTS:
            verifier = None
            if variant.startswith("m2m"):
                size = max(1, len(tokens) // 2) if variant == "m2m-unique" else None
                verifier = TokenVerifier(guard_settings(issuer, size))
                await verifier.warm_up()
                verifiers.append(verifier)
            app = build_asgi(variant, issuer=issuer, key=key, alg=alg, verifier=verifier)
            headers = ([_headers(None)] if variant == "no-auth" else
                       repeated if variant == "m2m-repeated" else unique)
            apps[ASGI_NAMES[variant]] = _asgi_runner(app, headers)
        results = await interleave_async(apps, config)
        for verifier in verifiers:
            await verifier.aclose()
        return results

    results = asyncio.run(measure())
    section = f"ASGI in-process (Starlette, {alg})"
    base = results["no auth"]
    rows = []
    for name, result in results.items():
        row = Row.measured(section, name, result.spread.scaled(1e6), "µs",
                           ratio=base.median / result.median, baseline="no-auth throughput")
        if name == "no auth":
            row.ratio, row.baseline, row.note = None, "", "baseline"
        rows.append(row)
    rows.append(Row.measured(
        section, "repeated token: throughput vs no auth",
        per_round(lambda b, m: b / m, base, results["m2m_guard, repeated token"]), "x",
        note="a cache hit").at_least(REPEATED_TARGET, f"≥ {REPEATED_TARGET}x"))
    rows.append(Row.measured(
        section, "unique tokens: times naive PyJWT throughput",
        per_round(lambda n, m: n / m, results["naive PyJWT middleware"],
                  results["m2m_guard, unique tokens"]), "x",
    ).at_least(UNIQUE_TARGET, f"≥ {UNIQUE_TARGET}x"))
    return rows


def _environ(token: str | None) -> dict[str, Any]:
    environ = {"REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": "/", "QUERY_STRING": "",
               "SERVER_NAME": "bench.local", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
               "HTTP_HOST": "bench.local", "HTTP_USER_AGENT": "bench", "HTTP_ACCEPT": "*/*",
               "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.errors": io.StringIO(),
               "wsgi.multithread": True, "wsgi.multiprocess": False, "wsgi.run_once": False}
    if token is not None:
        environ["HTTP_AUTHORIZATION"] = "Bearer " + token
    return environ


def _wsgi_runner(app: Any, environs: list[dict[str, Any]]) -> Callable[[int], None]:
    source = itertools.cycle(environs)
    status = [""]

    def start_response(line: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        status[0] = line
        return None

    def run(batch: int) -> None:
        for _ in range(batch):
            environ = dict(next(source))
            environ["wsgi.input"] = io.BytesIO(b"")
            body = app(environ, start_response)
            for _chunk in body:
                pass
            close = getattr(body, "close", None)
            if close is not None:
                close()
        if not status[0].startswith("200"):
            raise RuntimeError(f"the benchmark app answered {status[0]}")

    return run


def run_wsgi(issuer: str, key: Any, alg: str, tokens: list[str], config: Config) -> list[Row]:
    section = f"WSGI in-process (plain WSGI app, {alg})"
    runners: dict[str, Callable[[int], None]] = {}
    missing: list[str] = []
    for variant in WSGI_VARIANTS:
        size = max(1, len(tokens) // 2) if variant == "m2m-unique" else None
        try:
            app = build_wsgi(variant, issuer=issuer, key=key, alg=alg, cache_size=size)
        except LookupError:
            missing.append(WSGI_NAMES[variant])
            continue
        environs = ([_environ(None)] if variant == "no-auth" else
                    [_environ(tokens[0])] if variant == "m2m-repeated" else
                    [_environ(token) for token in tokens])
        runners[WSGI_NAMES[variant]] = _wsgi_runner(app, environs)
    results = interleave(runners, config)
    base = results["no auth"]
    rows = []
    for name in WSGI_NAMES.values():
        if name in missing:
            rows.append(Row(section, name, None, "µs",
                            note="m2m_guard WSGI: not available in this build"))
            continue
        result = results[name]
        row = Row.measured(section, name, result.spread.scaled(1e6), "µs",
                           ratio=base.median / result.median, baseline="no-auth throughput")
        if name == "no auth":
            row.ratio, row.baseline, row.note = None, "", "baseline"
        rows.append(row)
    unique = results.get("m2m_guard, unique tokens")
    if unique is not None:  # reported, no target (the issue sets them for ASGI only)
        rows.append(Row.measured(section, "unique tokens: times naive PyJWT throughput",
                                 per_round(lambda n, m: n / m, results["naive PyJWT middleware"],
                                           unique), "x"))
    return rows
