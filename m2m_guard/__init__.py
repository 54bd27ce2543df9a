"""m2m_guard: verify machine-to-machine OAuth 2.0 bearer tokens (JWT) against a cached JWKS.

Public names (docs/architecture.md). Framework adapters live in their own modules (`m2m_guard.asgi`,
`m2m_guard.starlette`, ...) and import their framework only there.
"""

from ._core.context import (
    Rule,
    all_of,
    any_of,
    current_token,
    require,
    require_any_scope,
    require_claims,
    require_clients,
    require_scopes,
)
from .errors import (
    AccessDenied,
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
    "AccessDenied",
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
    "Rule",
    "TokenVerifier",
    "__version__",
    "all_of",
    "any_of",
    "current_token",
    "require",
    "require_any_scope",
    "require_claims",
    "require_clients",
    "require_scopes",
]
