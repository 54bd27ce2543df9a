"""RFC 9728 protected resource metadata (`resource_metadata(settings)`).

A stable import path for names the documentation shows; the implementation is private
(`m2m_guard._core.resource_metadata`, see docs/architecture.md).
"""

from ._core.resource_metadata import (
    WELL_KNOWN,
    challenge_url,
    metadata_path,
    metadata_url,
    resource_metadata,
    resource_metadata_response,
)

__all__ = [
    "WELL_KNOWN",
    "challenge_url",
    "metadata_path",
    "metadata_url",
    "resource_metadata",
    "resource_metadata_response",
]
