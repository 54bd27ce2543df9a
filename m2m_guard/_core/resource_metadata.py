"""OAuth 2.0 Protected Resource Metadata (RFC 9728) for the API the guard protects.

With `GuardSettings.resource` set (this API's identifier, e.g. ``https://api.example.com``), the
adapters serve the metadata document at the well-known path RFC 9728 §3.1 derives from it
(``/.well-known/oauth-protected-resource`` followed by the identifier's path, if any), and every
challenge (`WWW-Authenticate` on 400, 401 and 403 answers) carries
``resource_metadata="<its URL>"`` (§5.1), so a client can discover which authorization server
issues tokens for this API and which scopes it knows.

`resource_metadata_url` overrides the URL announced in challenges (for a document you serve
yourself, or behind a proxy that rewrites paths); set alone, it only adds the challenge
parameter.

The document::

    {"resource": "<resource>",
     "authorization_servers": ["<each configured issuer>"],
     "bearer_methods_supported": ["header"],
     "scopes_supported": [...]}                    # when resource_scopes is set

``resource_signing_alg_values_supported`` is not published: this guard does not sign responses.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from ..settings import GuardSettings
from .answers import EndpointResponse, json_response

__all__ = [
    "WELL_KNOWN",
    "challenge_url",
    "metadata_path",
    "metadata_url",
    "resource_metadata",
    "resource_metadata_response",
]

WELL_KNOWN = "/.well-known/oauth-protected-resource"


def metadata_path(resource: str) -> str:
    """The path at which `resource`'s metadata is served (RFC 9728 §3.1): the well-known
    prefix, then the identifier's path without its trailing slash."""
    path = urlsplit(resource).path.rstrip("/")
    return WELL_KNOWN + path


def metadata_url(resource: str) -> str:
    """The absolute URL of `resource`'s metadata document."""
    parts = urlsplit(resource)
    return f"{parts.scheme}://{parts.netloc}{metadata_path(resource)}"


def challenge_url(settings: GuardSettings) -> str | None:
    """The `resource_metadata` challenge parameter: `resource_metadata_url`, else the served
    document's URL when `resource` is set, else None (no parameter)."""
    if settings.resource_metadata_url is not None:
        return settings.resource_metadata_url
    if settings.resource is not None:
        return metadata_url(settings.resource)
    return None


def resource_metadata(settings: GuardSettings) -> dict[str, Any]:
    """The RFC 9728 document for `settings` (which must have `resource` set)."""
    if settings.resource is None:
        raise ValueError("resource metadata needs GuardSettings.resource (M2M_GUARD_RESOURCE)")
    document: dict[str, Any] = {
        "resource": settings.resource,
        "authorization_servers": [entry.issuer for entry in settings.issuers],
        "bearer_methods_supported": ["header"],
    }
    if settings.resource_scopes:
        document["scopes_supported"] = list(settings.resource_scopes)
    return document


def resource_metadata_response(settings: GuardSettings) -> EndpointResponse:
    """The document as an HTTP answer (200, JSON, cacheable for an hour)."""
    return json_response(200, resource_metadata(settings), cache_control="public, max-age=3600")
