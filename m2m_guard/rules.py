"""Public-path and CORS-preflight rules shared by every adapter (`PathRules`).

Documented import path; the implementation lives in the private core (docs/architecture.md)."""

from ._core import rules as core
from ._core.rules import *  # noqa: F403 - this module re-exports exactly the core's public names

__all__ = core.__all__
