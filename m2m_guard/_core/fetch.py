"""Fetching discovery documents and key sets: pure request/response rules, thin httpx drivers.

`discovery_urls`, `read_discovery`, `redirect_target` and `read_key_set` are pure; the async
(`fetch_key_set_async`) and sync (`fetch_key_set_sync`) drivers only move bytes, with the same
limits: `http_timeout` for the whole exchange, at most `jwks_max_bytes` per document (checked while
streaming), redirects followed only within the same origin (at most 3), decoded size counted (so a
compressed bomb stops at the limit). httpx's environment handling (proxies, CA bundle) applies.
Every failure raises `FetchError` with a message fit for logs and `health()`.

The async driver never parses on the event loop what could hold it: a document larger than
`OFF_LOOP_BYTES` (64 KiB, the default `jwks_max_bytes`) is parsed, and its keys loaded, on a
worker thread (`anyio.to_thread`), so no size the settings allow stalls the loop. Smaller ones
(a few milliseconds of work at most) are parsed in place, sparing the thread hop.
"""

from __future__ import annotations

import dataclasses
import socket
import ssl
import threading
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar
from urllib.parse import urljoin, urlsplit

import anyio
import anyio.to_thread
import httpcore  # noqa: F401 - httpx imports it lazily on first use: not on the event loop
import httpx

from ..settings import GuardSettings, IssuerSettings
from .encoding import loads_json
from .jwks import parse_max_age
from .keys import KeySet, parse_jwks

__all__ = [
    "OFF_LOOP_BYTES",
    "FetchError",
    "FetchResult",
    "discovery_urls",
    "fetch_key_set_async",
    "FetchedDocument",
    "fetch_key_set_sync",
    "get_document_sync",
    "shared_tls_context",
    "parse_retry_after",
    "read_discovery",
    "read_token_endpoint",
    "read_key_set",
    "redirect_target",
]

_T = TypeVar("_T")
_MAX_REDIRECTS = 3
# httpx's is_redirect also counts 304 Not Modified, which is an answer here, not a redirect.
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_USER_AGENT = "m2m-guard"
#: Documents larger than this are parsed off the event loop by the async driver.
OFF_LOOP_BYTES = 64 * 1024


class FetchError(Exception):
    """Discovery or the key set could not be fetched or used; the message says why.

    `retry_after` holds the seconds an issuer's 429 or 503 answer asked to wait, if it said.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a `Retry-After` header (RFC 9110 §10.2.3): delta-seconds or an HTTP-date."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(min(int(value[:10]), 86400))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, min(when.timestamp() - time.time(), 86400.0))


def _http_error(what: str, status: int, headers: Mapping[str, str]) -> FetchError:
    retry_after = parse_retry_after(headers.get("retry-after")) if status in (429, 503) else None
    return FetchError(f"{what} answered HTTP {status}", retry_after=retry_after)


@dataclass(frozen=True, slots=True)
class FetchResult:
    """A fetched key set (`keys` None for 304 Not Modified) and its caching headers."""

    keys: KeySet | None
    max_age: float | None
    etag: str | None
    jwks_url: str
    # the discovery document's `token_endpoint`, when this fetch ran discovery and it had one
    token_endpoint: str | None = None


@dataclass(frozen=True, slots=True)
class FetchedDocument:
    """A fetched document: its final URL (after same-origin redirects), status, headers (names
    in lower case: a plain mapping, or httpx's case-insensitive one), body."""

    url: str
    status: int
    headers: Mapping[str, str]
    body: bytes


def _discovery(issuer: IssuerSettings) -> Generator[str, FetchedDocument, FetchedDocument]:
    """Discovery, sans-IO: yields each URL to GET and is sent its document; returns the first
    that is not a 404 (for `read_discovery`). OpenID Connect first, then RFC 8414."""
    errors = []
    for url in discovery_urls(issuer.issuer):
        response = yield url
        if response.status == 404:
            errors.append(f"{url} answered 404")
            continue
        return response
    raise FetchError("no discovery document: " + "; ".join(errors))


def discovery_urls(issuer: str) -> tuple[str, str]:
    """OpenID Connect discovery first, then RFC 8414 (well-known inserted before the path)."""
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")
    oidc = issuer.rstrip("/") + "/.well-known/openid-configuration"
    rfc8414 = f"{parts.scheme}://{parts.netloc}/.well-known/oauth-authorization-server{path}"
    return oidc, rfc8414


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc.lower()


def redirect_target(current: str, status: int, location: str | None) -> str:
    """The URL to follow for a redirect response; `FetchError` when it leaves the origin."""
    if not location:
        raise FetchError(f"{current} answered {status} without a Location header")
    target = urljoin(current, location)
    if _origin(target) != _origin(current):
        raise FetchError(f"{current} redirects to another host ({_origin(target)[1]}); refused")
    return target


def read_discovery(issuer: IssuerSettings, url: str, status: int, body: bytes,
                   settings: GuardSettings, headers: Mapping[str, str] | None = None) -> str:
    """The `jwks_uri` of a discovery document, after checking that its `issuer` matches."""
    return _read_discovery(issuer, url, status, body, headers)[0]


def read_token_endpoint(issuer: IssuerSettings, doc: dict[str, Any]) -> str | None:
    """The discovery document's `token_endpoint`, or None when absent or unfit.

    Only documentation uses it (an OpenAPI client-credentials flow), never verification; still
    it must be an absolute URL that is https or on the issuer's own origin, at most 2048 bytes.
    """
    value = doc.get("token_endpoint")
    if not isinstance(value, str) or not value or len(value) > 2048 or not value.isprintable() \
            or any(c.isspace() for c in value):
        return None
    parts = urlsplit(value)
    if not parts.netloc or parts.scheme not in ("https", "http"):
        return None
    if parts.scheme != "https" and _origin(value) != _origin(issuer.issuer):
        return None
    return value


def _read_discovery(issuer: IssuerSettings, url: str, status: int, body: bytes,
                    headers: Mapping[str, str] | None = None) -> tuple[str, str | None]:
    """`read_discovery` plus the document's token endpoint (see `read_token_endpoint`)."""
    if status != 200:
        raise _http_error(f"discovery at {url}", status, headers or {})
    try:
        doc: Any = loads_json(body)
    except ValueError as exc:
        raise FetchError(f"discovery at {url} is not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise FetchError(f"discovery at {url} is not a JSON object")
    if doc.get("issuer") != issuer.issuer:
        raise FetchError(
            f"discovery at {url} names issuer {str(doc.get('issuer'))[:200]!r}, "
            f"not the configured {issuer.issuer!r}"
        )
    jwks_uri = doc.get("jwks_uri")
    if not isinstance(jwks_uri, str) or not jwks_uri:
        raise FetchError(f"discovery at {url} has no jwks_uri")
    scheme, host = _origin(jwks_uri)
    issuer_scheme, issuer_host = _origin(issuer.issuer)
    if (scheme, host) != (issuer_scheme, issuer_host) and scheme != "https":
        raise FetchError(f"discovery at {url} points jwks_uri at {jwks_uri!r}: not https")
    if urlsplit(jwks_uri).hostname != urlsplit(issuer.issuer).hostname:
        raise FetchError(
            f"discovery at {url} points jwks_uri at another host ({host}); refused. "
            f"Set jwks_url (M2M_GUARD_JWKS_URL) explicitly if that host is trusted."
        )
    return jwks_uri, read_token_endpoint(issuer, doc)


def read_key_set(url: str, status: int, headers: Mapping[str, str], body: bytes,
                 settings: GuardSettings) -> FetchResult:
    """Interpret a key-set response: 200 with a JWKS, or 304 Not Modified (header names in
    lower case)."""
    max_age = parse_max_age(headers.get("cache-control"))
    etag = headers.get("etag")
    if status == 304:
        return FetchResult(None, max_age, etag, url)
    if status != 200:
        raise _http_error(f"key set at {url}", status, headers)
    try:
        keys = parse_jwks(body, max_keys=settings.jwks_max_keys)
    except ValueError as exc:
        raise FetchError(f"key set at {url} is unusable: {exc}") from None
    return FetchResult(keys, max_age, etag, url)


_tls_context: ssl.SSLContext | None = None


_bundle_contexts: dict[str, ssl.SSLContext] = {}


def _tls(ca_bundle: str | None = None) -> ssl.SSLContext:
    """The TLS context shared by every fetch. Building one reads the CA bundle (tens of
    milliseconds of blocking work), so it is built once, and off the event loop by the async
    driver, instead of by each new client. With `ca_bundle` (the `ca_bundle` setting) the
    certificates of that file are the ones trusted, one shared context per file."""
    global _tls_context
    if ca_bundle is not None:
        context = _bundle_contexts.get(ca_bundle)
        if context is None:
            context = _bundle_contexts[ca_bundle] = ssl.create_default_context(cafile=ca_bundle)
        return context
    if _tls_context is None:
        _tls_context = httpx.create_ssl_context()
    return _tls_context


def _ready_tls(ca_bundle: str | None) -> ssl.SSLContext | None:
    """The shared context if it is built already (no blocking work), else None."""
    return _tls_context if ca_bundle is None else _bundle_contexts.get(ca_bundle)


def shared_tls_context(ca_bundle: str | None = None) -> ssl.SSLContext:
    """The TLS context every fetch uses (built on first use; blocking: call it off the loop)."""
    return _tls(ca_bundle)


def _timeout(settings: GuardSettings) -> httpx.Timeout:
    return httpx.Timeout(settings.http_timeout)


def _headers(etag: str | None) -> dict[str, str]:
    headers = {"accept": "application/json", "user-agent": _USER_AGENT}
    if etag:
        headers["if-none-match"] = etag
    return headers


# -- async driver ----------------------------------------------------------------------------

async def _get_async(client: httpx.AsyncClient, url: str, settings: GuardSettings,
                     etag: str | None = None) -> FetchedDocument:
    for _ in range(_MAX_REDIRECTS + 1):
        try:
            async with client.stream("GET", url, headers=_headers(etag)) as response:
                if response.status_code in _REDIRECTS:
                    url = redirect_target(url, response.status_code,
                                          response.headers.get("location"))
                    continue
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > settings.jwks_max_bytes:
                        raise FetchError(f"{url} sent more than {settings.jwks_max_bytes} bytes")
                return FetchedDocument(url, response.status_code, response.headers, bytes(body))
        except httpx.HTTPError as exc:
            raise FetchError(f"{url} could not be fetched: {type(exc).__name__}: {exc}") from None
    raise FetchError(f"{url}: too many redirects")


async def _off_loop_if_large(body: bytes, parse: Callable[..., _T], *args: Any) -> _T:
    """`parse(*args)`, on a worker thread when `body` is larger than `OFF_LOOP_BYTES`."""
    if len(body) > OFF_LOOP_BYTES:
        return await anyio.to_thread.run_sync(parse, *args)
    return parse(*args)


async def fetch_key_set_async(issuer: IssuerSettings, settings: GuardSettings, *,
                              jwks_url: str | None, etag: str | None) -> FetchResult:
    """Discover (when `jwks_url` is None) and fetch the issuer's key set, within the timeout."""
    try:
        with anyio.fail_after(settings.http_timeout * (1 if jwks_url else 2)):
            tls = _ready_tls(settings.ca_bundle)
            if tls is None:
                tls = await anyio.to_thread.run_sync(_tls, settings.ca_bundle)
            async with httpx.AsyncClient(timeout=_timeout(settings), verify=tls,
                                         follow_redirects=False) as client:
                token_endpoint = None
                if jwks_url is None:
                    jwks_url, token_endpoint = await _discover_async(client, issuer, settings)
                    etag = None
                response = await _get_async(client, jwks_url, settings, etag)
    except TimeoutError:
        raise FetchError(f"fetching the key set of {issuer.issuer} timed out "
                         f"after {settings.http_timeout:g} s") from None
    result = await _off_loop_if_large(response.body, read_key_set, response.url,
                                      response.status, response.headers, response.body, settings)
    return dataclasses.replace(result, token_endpoint=token_endpoint) if token_endpoint \
        else result


async def _discover_async(client: httpx.AsyncClient, issuer: IssuerSettings,
                          settings: GuardSettings) -> tuple[str, str | None]:
    steps = _discovery(issuer)
    url = next(steps)
    try:
        while True:
            url = steps.send(await _get_async(client, url, settings))
    except StopIteration as done:
        response: FetchedDocument = done.value
    return await _off_loop_if_large(response.body, _read_discovery, issuer, response.url,
                                    response.status, response.body, response.headers)


# -- sync driver -----------------------------------------------------------------------------

class _Deadline:
    """Ends a blocking fetch at its deadline by shutting its sockets down.

    httpx's timeouts bound each network operation, not the whole exchange: a server that sends
    one byte of its status line or headers per read (a slow drip) would hold a blocking fetch for
    ever. The sockets are learnt from httpx's ``trace`` extension; at the deadline a timer shuts
    them down, the pending read fails, and the fetch reports a timeout.
    """

    __slots__ = ("_lock", "_streams", "_timer", "expired")

    def __init__(self, deadline: float) -> None:
        self._lock = threading.Lock()
        self._streams: list[Any] = []
        self.expired = False
        self._timer = threading.Timer(max(0.0, deadline - time.monotonic()), self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()

    def trace(self, name: str, info: dict[str, Any]) -> None:
        if name.endswith(("connect_tcp.complete", "start_tls.complete")):
            with self._lock:
                self._streams.append(info.get("return_value"))
                expired = self.expired
            if expired:
                self._expire()

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            streams = list(self._streams)
        for stream in streams:
            sock = stream.get_extra_info("socket") if stream is not None else None
            if isinstance(sock, socket.socket):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:  # already closed: nothing left to interrupt
                    pass


def _get_sync(client: httpx.Client, url: str, settings: GuardSettings, deadline: float,
              etag: str | None = None, watchdog: _Deadline | None = None) -> FetchedDocument:
    extensions = {"trace": watchdog.trace} if watchdog is not None else None
    for _ in range(_MAX_REDIRECTS + 1):
        try:
            with client.stream("GET", url, headers=_headers(etag),
                               extensions=extensions) as response:
                if response.status_code in _REDIRECTS:
                    url = redirect_target(url, response.status_code,
                                          response.headers.get("location"))
                    continue
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > settings.jwks_max_bytes:
                        raise FetchError(f"{url} sent more than {settings.jwks_max_bytes} bytes")
                    if time.monotonic() > deadline:
                        raise FetchError(f"{url} timed out after {settings.http_timeout:g} s")
                return FetchedDocument(url, response.status_code, response.headers, bytes(body))
        except httpx.HTTPError as exc:
            if (watchdog is not None and watchdog.expired) or time.monotonic() > deadline:
                raise FetchError(f"{url} timed out after {settings.http_timeout:g} s") from None
            raise FetchError(f"{url} could not be fetched: {type(exc).__name__}: {exc}") from None
    raise FetchError(f"{url}: too many redirects")


def get_document_sync(client: httpx.Client, url: str, settings: GuardSettings) -> FetchedDocument:
    """One blocking GET under the guard's fetch rules, for tools such as `m2m-guard doctor`:
    redirects only within the same origin, at most `jwks_max_bytes`, and the whole exchange
    ended after `http_timeout` even when the server drips its answer. Raises `FetchError`."""
    deadline = time.monotonic() + settings.http_timeout
    with _Deadline(deadline) as watchdog:
        return _get_sync(client, url, settings, deadline, None, watchdog)


def fetch_key_set_sync(issuer: IssuerSettings, settings: GuardSettings, *,
                       jwks_url: str | None, etag: str | None) -> FetchResult:
    """The blocking twin of `fetch_key_set_async` (same rules, `httpx.Client`); the whole
    exchange ends at the same deadline even when the server drips its answer byte by byte."""
    deadline = time.monotonic() + settings.http_timeout * (1 if jwks_url else 2)
    token_endpoint = None
    with _Deadline(deadline) as watchdog, httpx.Client(
            timeout=_timeout(settings), verify=_tls(settings.ca_bundle),
            follow_redirects=False) as client:
        if jwks_url is None:
            steps = _discovery(issuer)
            url = next(steps)
            try:
                while True:
                    url = steps.send(_get_sync(client, url, settings, deadline,
                                               watchdog=watchdog))
            except StopIteration as done:
                found: FetchedDocument = done.value
            jwks_url, token_endpoint = _read_discovery(issuer, found.url, found.status,
                                                       found.body, found.headers)
            etag = None
        response = _get_sync(client, jwks_url, settings, deadline, etag, watchdog)
    result = read_key_set(response.url, response.status, response.headers, response.body,
                          settings)
    return dataclasses.replace(result, token_endpoint=token_endpoint) if token_endpoint \
        else result
