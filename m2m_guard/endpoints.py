"""The guard's own answers: `render_refusal`, `health_answer`, `OperationalEndpoints`.

Documented import path; the implementation lives in the private core (docs/architecture.md)."""

from ._core import endpoints as core
from ._core.endpoints import *  # noqa: F403 - this module re-exports exactly the core's public names

__all__ = core.__all__
