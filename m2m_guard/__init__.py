"""m2m_guard: verify machine-to-machine OAuth 2.0 bearer tokens (JWT) against a cached JWKS.

Public names (docs/architecture.md). Framework adapters live in their own modules (`m2m_guard.asgi`,
`m2m_guard.starlette`, ...) and import their framework only there.
"""

from ._core.context import current_token, require_any_scope, require_scopes
from .errors import (
    ConfigurationError,
    GuardError,
    InsufficientScope,
    InvalidRequest,
    InvalidToken,
    IssuerUnavailable,
    MissingToken,
)
from .settings import GuardSettings, IssuerSettings
from .token import AccessToken
from .verifier import TokenVerifier

__version__ = "0.1.0"

__all__ = [
    "AccessToken",
    "ConfigurationError",
    "GuardError",
    "GuardSettings",
    "InsufficientScope",
    "InvalidRequest",
    "InvalidToken",
    "IssuerSettings",
    "IssuerUnavailable",
    "MissingToken",
    "TokenVerifier",
    "__version__",
    "current_token",
    "require_any_scope",
    "require_scopes",
]
