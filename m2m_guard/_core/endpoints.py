"""The guard's own answers, framework-neutral: its endpoints (health, RFC 9728 metadata),
answered before authentication, and the refusal every adapter sends.

An adapter builds one `OperationalEndpoints` per verifier and, for each request, asks
``endpoints.answer(path, method)``; a non-None `EndpointResponse` is sent as is (without its
body for HEAD) and the request goes no further. Nothing is served unless configured
(`health_path`, `resource`), and `OperationalEndpoints.for_verifier` returns None then, so an
adapter's hot path pays a single ``is not None`` check.

`render_refusal(verifier, error, access)` is what an adapter sends for a `GuardError`: the
refusal reported once (log line and event) and rendered with the configured realm and RFC 9728
``resource_metadata`` challenge parameter.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..errors import GuardError, RenderedError, render_error
from ..health import health_response
from .answers import EndpointResponse, json_response
from .resource_metadata import challenge_url, metadata_path, resource_metadata_response

if TYPE_CHECKING:
    from ..settings import GuardSettings
    from ..token import AccessToken
    from ..verifier import TokenVerifier

__all__ = ["OperationalEndpoints", "challenge_options", "health_answer", "read_only_answer",
           "render_refusal"]

_READ_METHODS = frozenset({"GET", "HEAD"})


def render_refusal(verifier: TokenVerifier, error: GuardError,
                   access: AccessToken | None = None) -> RenderedError:
    """The answer to a refused request, as every adapter sends it.

    Reports `error` through `TokenVerifier.report_refusal` (one INFO line and one event, unless the
    verifier already reported it) and renders it per the contract with ``verifier.settings``'
    realm and, when configured, the ``resource_metadata`` challenge parameter
    (`resource_metadata.challenge_url`). `access` is the request's verified token, if any
    (a token refused later, for its scopes).
    """
    verifier.report_refusal(error, access)
    if access is not None and error.challenge != "DPoP":
        cnf = access.cnf
        if isinstance(cnf, Mapping) and "jkt" in cnf:
            # A DPoP-bound token is only ever accepted under the DPoP scheme: a later refusal
            # (the route's scopes) belongs in the DPoP challenge too.
            error.challenge = "DPoP"
    return render_error(error, **challenge_options(verifier.settings))


def challenge_options(settings: GuardSettings) -> dict[str, Any]:
    """`render_error`'s options for `settings`: realm, resource metadata and, with DPoP on, the
    DPoP challenge (and no Bearer one when DPoP is required)."""
    dpop = settings.dpop
    return {"realm": settings.realm, "resource_metadata": challenge_url(settings),
            "dpop_algs": None if dpop == "off" else tuple(settings.dpop_algorithms),
            "bearer": dpop != "required"}


def read_only_answer(method: str, make: Callable[[], EndpointResponse]) -> EndpointResponse:
    """``make()`` for GET and HEAD (the caller drops the body for HEAD); 405 with
    ``Allow: GET, HEAD`` for any other method."""
    if method not in _READ_METHODS:
        refused = json_response(405, {"error": "method_not_allowed"})
        return EndpointResponse(405, (*refused.headers, ("allow", "GET, HEAD")), refused.body)
    return make()


def health_answer(verifier: TokenVerifier, method: str) -> EndpointResponse:
    """The health endpoint's answer to `method` (see `health.health_response`), for a route of
    your own: served whether or not `health_path` is set."""
    return read_only_answer(method, lambda: health_response(verifier))


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

    def serves(self, path: str) -> bool:
        """True when `path` is one of ours (a dictionary lookup: nothing is computed)."""
        return path in self.handlers

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
        return read_only_answer(method, handler)
