"""Strict base64url and JSON (`MAX_JSON_DEPTH`, `loads_json`).

A stable import path for names the documentation shows; the implementation is private
(`m2m_guard._core.encoding`, see docs/architecture.md).
"""

from ._core.encoding import (
    MAX_JSON_DEPTH,
    b64url_decode,
    b64url_encode,
    is_b64url,
    is_b64url_framing,
    loads_json,
)

__all__ = [
    "MAX_JSON_DEPTH",
    "b64url_decode",
    "b64url_encode",
    "is_b64url",
    "is_b64url_framing",
    "loads_json",
]
