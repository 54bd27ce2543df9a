"""RFC 6750 credential framing: `split_credentials`, `authorization_from_environ`, and more.

A stable import path for names the documentation shows; the implementation is private
(`m2m_guard._core.bearer`, see docs/architecture.md).
"""

from ._core.bearer import (
    authorization_from_environ,
    extract_bearer,
    is_b64token,
    query_has_access_token,
    split_credentials,
)

__all__ = [
    "authorization_from_environ",
    "extract_bearer",
    "is_b64token",
    "query_has_access_token",
    "split_credentials",
]
