"""`RequestView`: what the gate (and every check plugged into it) may read of a request,
whatever the framework: the method, the scheme, host and path as the application sees them,
the query string, header values (all of them, for a header sent more than once), the peer's
address and the client's TLS certificate when the server passes one on.

Two views cover every adapter: `AsgiRequest` over an ASGI scope (Starlette, FastAPI, Django
under ASGI) and `WsgiRequest` over a WSGI environ (any WSGI app, Flask, Django under WSGI).
Values are read when asked for, so a request that never reaches a check costs nothing more.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

from .bearer import authorization_from_environ, split_credentials

__all__ = ["AsgiRequest", "AsgiSplitRequest", "RequestView", "WsgiRequest"]


class RequestView:
    """The framework-neutral request (see the module doc). Subclasses fill in the readers."""

    __slots__ = ("method", "path")

    def __init__(self, method: str, path: str) -> None:
        #: The HTTP method, upper case (``"GET"``); ``"GET"`` for a websocket handshake.
        self.method = method
        #: The path as the application routes it (after any mount point / script name).
        self.path = path

    @property
    def scheme(self) -> str:
        """``http`` or ``https`` (``ws`` / ``wss`` for a websocket) as the server saw it."""
        raise NotImplementedError

    @property
    def host(self) -> str:
        """The `Host` the request was sent to (``host[:port]``), or the server's address."""
        raise NotImplementedError

    @property
    def root_path(self) -> str:
        """The mount point the application is served under (ASGI root_path, WSGI SCRIPT_NAME)."""
        raise NotImplementedError

    @property
    def query_string(self) -> bytes | str:
        """The raw query string (bytes for ASGI, str for WSGI)."""
        raise NotImplementedError

    def headers(self, name: str) -> list[str]:
        """Every value of header `name` (lower case), in order; [] when absent. A WSGI server
        joins repeated headers into one value (with commas) before the app sees them."""
        raise NotImplementedError

    def header(self, name: str) -> str | None:
        """The value of header `name` when it was sent exactly once, else None."""
        values = self.headers(name)
        return values[0] if len(values) == 1 else None

    def has_header(self, name: str) -> bool:
        return bool(self.headers(name))

    def authorization(self) -> list[str]:
        """The `Authorization` credentials, one per header (also when a WSGI server joined
        repeated headers: see `bearer.split_credentials`)."""
        raise NotImplementedError

    def single_authorization(self) -> str | bytes | None:
        """The raw value of the one `Authorization` header, unsplit and undecoded (bytes under
        ASGI), or None when there is none or more than one: for the cache-hit fast path."""
        raise NotImplementedError

    @property
    def client_cert(self) -> str | None:
        """The client's TLS certificate (PEM) when the server passes it on and verified it, else
        None: the ASGI TLS extension's first ``client_cert_chain`` entry (None when it reports
        a ``client_cert_error``), or a WSGI server's ``SSL_CLIENT_CERT`` (None when
        ``SSL_CLIENT_VERIFY`` is present and not ``SUCCESS``, as mod_ssl sets it)."""
        raise NotImplementedError

    @property
    def peer(self) -> str | None:
        """The address of the connection's other end as the server reports it (ASGI
        ``client``, WSGI ``REMOTE_ADDR``): a proxy's, behind one. None when unknown."""
        raise NotImplementedError

    @property
    def target_path(self) -> bytes:
        """The full path the client requested (mount point included, query excluded),
        percent-decoded, as bytes: the path of a DPoP proof's `htu`. The same for the same
        request under ASGI (UTF-8 text) and WSGI (latin-1 text, PEP 3333)."""
        raise NotImplementedError

    @property
    def url(self) -> str:
        """``scheme://host/root_path/path`` without the query: the URL as the client used it."""
        return f"{self.scheme}://{self.host}{self.root_path}{self.path}"


class AsgiRequest(RequestView):
    """A `RequestView` over an ASGI ``http`` or ``websocket`` scope."""

    __slots__ = ("scope",)

    def __init__(self, scope: MutableMapping[str, Any], path: str | None = None) -> None:
        super().__init__(scope.get("method", "GET"), scope["path"] if path is None else path)
        self.scope = scope

    @property
    def scheme(self) -> str:
        return str(self.scope.get("scheme") or
                   ("ws" if self.scope.get("type") == "websocket" else "http"))

    @property
    def host(self) -> str:
        host = self.header("host")
        if host:
            return host
        server = self.scope.get("server")
        if server:
            return f"{server[0]}:{server[1]}" if server[1] is not None else str(server[0])
        return ""

    @property
    def root_path(self) -> str:
        return str(self.scope.get("root_path", ""))

    @property
    def query_string(self) -> bytes | str:
        value = self.scope.get("query_string", b"")  # bytes per the spec; test clients vary
        return value if isinstance(value, (bytes, str)) else b""

    def headers(self, name: str) -> list[str]:
        wanted = name.lower().encode("latin-1")
        return [value.decode("latin-1") for key, value in self.scope.get("headers", ())
                if key == wanted]

    def has_header(self, name: str) -> bool:
        wanted = name.lower().encode("latin-1")
        return any(key == wanted for key, _ in self.scope.get("headers", ()))

    def authorization(self) -> list[str]:
        return [value.decode("latin-1") for key, value in self.scope.get("headers", ())
                if key == b"authorization"]

    def single_authorization(self) -> bytes | None:
        found = None
        for key, value in self.scope.get("headers", ()):
            if key == b"authorization":
                if found is not None:
                    return None
                found = value
        return found

    @property
    def target_path(self) -> bytes:
        # ASGI: `path` includes `root_path` (servers since the spec said so); older ones and
        # some test clients give the path below it.
        scope = self.scope
        path = str(scope.get("path") or "/")
        root = str(scope.get("root_path") or "")
        full = path if not root or path.startswith(root) else root + path
        return full.encode("utf-8", "surrogatepass")

    @property
    def client_cert(self) -> str | None:
        extensions = self.scope.get("extensions")
        tls = extensions.get("tls") if isinstance(extensions, Mapping) else None
        if not isinstance(tls, Mapping) or tls.get("client_cert_error"):
            return None
        chain = tls.get("client_cert_chain")
        if not isinstance(chain, (list, tuple)) or not chain:
            return None
        first = chain[0]
        return first if isinstance(first, str) and first else None

    @property
    def peer(self) -> str | None:
        client = self.scope.get("client")
        if isinstance(client, (list, tuple)) and client and isinstance(client[0], str):
            return client[0] or None
        return None


class AsgiSplitRequest(AsgiRequest):
    """An ASGI view whose `Authorization` values are split as under WSGI (Django, so that one
    request gets the same answer from both of its handlers)."""

    __slots__ = ()

    def authorization(self) -> list[str]:
        return [part for value in super().authorization() for part in split_credentials(value)]


class WsgiRequest(RequestView):
    """A `RequestView` over a WSGI environ (PEP 3333), or Django's ``request.META``."""

    __slots__ = ("environ",)

    def __init__(self, environ: Mapping[str, Any], path: str | None = None) -> None:
        super().__init__(environ.get("REQUEST_METHOD", "") or "",
                         (environ.get("PATH_INFO") or "/") if path is None else path)
        self.environ = environ

    @property
    def scheme(self) -> str:
        return str(self.environ.get("wsgi.url_scheme", "http"))

    @property
    def host(self) -> str:
        host = self.environ.get("HTTP_HOST")
        if host:
            return str(host)
        return f"{self.environ.get('SERVER_NAME', '')}:{self.environ.get('SERVER_PORT', '')}"

    @property
    def root_path(self) -> str:
        return str(self.environ.get("SCRIPT_NAME", ""))

    @property
    def query_string(self) -> str:
        return str(self.environ.get("QUERY_STRING", ""))

    def _key(self, name: str) -> str:
        key = name.upper().replace("-", "_")
        return key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key

    def headers(self, name: str) -> list[str]:
        value = self.environ.get(self._key(name))
        return [str(value)] if value is not None else []

    def has_header(self, name: str) -> bool:
        return self._key(name) in self.environ

    def authorization(self) -> list[str]:
        return authorization_from_environ(self.environ)

    def single_authorization(self) -> str | None:
        # A server joins repeated headers with commas: then it is no token (tokens hold none).
        value = self.environ.get("HTTP_AUTHORIZATION")
        return value if type(value) is str else None

    @property
    def target_path(self) -> bytes:
        environ = self.environ
        full = str(environ.get("SCRIPT_NAME") or "") + str(environ.get("PATH_INFO") or "")
        return (full or "/").encode("latin-1", "replace")

    @property
    def client_cert(self) -> str | None:
        cert = self.environ.get("SSL_CLIENT_CERT")
        if not isinstance(cert, str) or not cert:
            return None
        verify = self.environ.get("SSL_CLIENT_VERIFY")
        return cert if verify is None or verify == "SUCCESS" else None

    @property
    def peer(self) -> str | None:
        address = self.environ.get("REMOTE_ADDR")
        return address if isinstance(address, str) and address else None
