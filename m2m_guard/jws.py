"""Strict compact JWS: `verify_compact` and the parts it is built from.

Documented import path; the implementation lives in the private core (docs/architecture.md)."""

from ._core import jws as core
from ._core.jws import *  # noqa: F403 - this module re-exports exactly the core's public names

__all__ = core.__all__
