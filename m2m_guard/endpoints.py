"""The guard's own answers: `render_refusal`, `health_answer`, `OperationalEndpoints`.

A stable import path for names the documentation shows; the implementation is private
(`m2m_guard._core.endpoints`, see docs/architecture.md).
"""

from ._core.endpoints import (
    OperationalEndpoints,
    health_answer,
    read_only_answer,
    render_refusal,
)

__all__ = [
    "OperationalEndpoints",
    "health_answer",
    "read_only_answer",
    "render_refusal",
]
