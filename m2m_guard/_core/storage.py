"""Where adapters keep the request's verification result: defined once, read everywhere."""

from __future__ import annotations

__all__ = ["REQUEST_ATTRIBUTE", "SETTINGS_KEY", "TOKEN_KEY", "VERIFIER_KEY"]

#: The verified `AccessToken` (or None) in an ASGI scope or a WSGI environ.
TOKEN_KEY = "m2m_guard.token"  # noqa: S105 - a storage key, not a secret
#: The `GuardSettings` that decided the request (exception handlers read the realm there).
SETTINGS_KEY = "m2m_guard.settings"
#: The `TokenVerifier` that decided the request (exception handlers report refusals with it).
VERIFIER_KEY = "m2m_guard.verifier"
#: The attribute on Django's and DRF's request (and Flask's ``g``): ``request.m2m_token``.
REQUEST_ATTRIBUTE = "m2m_token"
