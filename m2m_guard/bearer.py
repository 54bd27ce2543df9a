"""RFC 6750 credential framing: `extract_bearer`, `split_credentials`, `authorization_from_environ`.

Documented import path; the implementation lives in the private core (docs/architecture.md)."""

from ._core import bearer as core
from ._core.bearer import *  # noqa: F403 - this module re-exports exactly the core's public names

__all__ = core.__all__
