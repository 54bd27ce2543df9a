"""RFC 9728 protected resource metadata: `resource_metadata(settings)` and more.

Documented import path; the implementation lives in the private core (docs/architecture.md)."""

from ._core import resource_metadata as core
from ._core.resource_metadata import *  # noqa: F403 - this module re-exports exactly the core's public names

__all__ = core.__all__
