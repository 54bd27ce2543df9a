"""Strict compact JWS verification (`verify_compact`), documented in the changelog.

A stable import path for names the documentation shows; the implementation is private
(`m2m_guard._core.jws`, see docs/architecture.md).
"""

from ._core.jws import (
    CompactJWS,
    HeaderCache,
    check_signature,
    check_token_size,
    parse_compact,
    verify_compact,
)

__all__ = [
    "CompactJWS",
    "HeaderCache",
    "check_signature",
    "check_token_size",
    "parse_compact",
    "verify_compact",
]
