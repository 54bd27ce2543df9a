"""Public-path and CORS-preflight rules shared by every adapter.

A stable import path for names the documentation shows; the implementation is private
(`m2m_guard._core.rules`, see docs/architecture.md).
"""

from ._core.rules import (
    PathRules,
    is_cors_preflight,
)

__all__ = [
    "PathRules",
    "is_cors_preflight",
]
