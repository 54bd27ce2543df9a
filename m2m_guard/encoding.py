"""Strict base64url and JSON: `MAX_JSON_DEPTH`, `loads_json`, `b64url_decode`.

Documented import path; the implementation lives in the private core (docs/architecture.md)."""

from ._core import encoding as core
from ._core.encoding import *  # noqa: F403 - this module re-exports exactly the core's public names

__all__ = core.__all__
