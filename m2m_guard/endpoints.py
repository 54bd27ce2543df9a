"""The guard's own endpoints (health, RFC 9728 metadata), answered before authentication.

Framework-neutral: an adapter builds one `OperationalEndpoints` per verifier and, for each
request, asks ``endpoints.answer(path, method)``; a non-None `EndpointResponse` is sent as is
and the request goes no further. Nothing is served unless configured (`health_path`,
`resource`), and `OperationalEndpoints.for_verifier` returns None then, so an adapter's hot
path pays a single ``is not None`` check.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .health import EndpointResponse, health_response, json_response
from .resource_metadata import metadata_path, resource_metadata_response

if TYPE_CHECKING:
    from .verifier import TokenVerifier

__all__ = ["OperationalEndpoints"]

_READ_METHODS = frozenset({"GET", "HEAD"})


class OperationalEndpoints:
    """The configured endpoints of one verifier, by exact path."""

    __slots__ = ("handlers", "verifier")

    def __init__(self, verifier: TokenVerifier) -> None:
        self.verifier = verifier
        settings = verifier.settings
        self.handlers: dict[str, Callable[[], EndpointResponse]] = {}
        if settings.resource is not None:
            self.handlers[metadata_path(settings.resource)] = \
                lambda: resource_metadata_response(settings)
        if settings.health_path is not None:
            self.handlers[settings.health_path] = lambda: health_response(verifier)

    @classmethod
    def for_verifier(cls, verifier: TokenVerifier) -> OperationalEndpoints | None:
        """The endpoints `verifier.settings` configure, or None when there are none."""
        endpoints = cls(verifier)
        return endpoints if endpoints.handlers else None

    @property
    def paths(self) -> frozenset[str]:
        return frozenset(self.handlers)

    def answer(self, path: str, method: str) -> EndpointResponse | None:
        """The answer for a request to `path`, or None when `path` is not one of ours.

        GET and HEAD are answered (HEAD: send the headers, drop the body); other methods get
        405 with ``Allow: GET, HEAD``.
        """
        handler = self.handlers.get(path)
        if handler is None:
            return None
        if method not in _READ_METHODS:
            refused = json_response(405, {"error": "method_not_allowed"})
            return EndpointResponse(405, (*refused.headers, ("allow", "GET, HEAD")),
                                    refused.body)
        return handler()
