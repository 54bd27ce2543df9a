"""The `GuardError` hierarchy and the one renderer every adapter uses.

Every refusal is a `GuardError` value that knows its HTTP status, its RFC 6750 error code and a
safe description. `render_error` turns one into status, headers and a JSON body (the behaviour
contract of docs/architecture.md); no adapter builds these itself.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

__all__ = [
    "ConfigurationError",
    "GuardError",
    "InsufficientScope",
    "InvalidDPoPProof",
    "InvalidRequest",
    "InvalidToken",
    "IssuerUnavailable",
    "MissingToken",
    "RenderedError",
    "ReplayStoreUnavailable",
    "UseDPoPNonce",
    "render_error",
    "safe_description",
]

# RFC 6750 §3: error_description is %x20-21 / %x23-5B / %x5D-7E (no '"' and no '\').
_UNSAFE_DESCRIPTION = re.compile(r'[^\x20\x21\x23-\x5b\x5d-\x7e]')
_MAX_DESCRIPTION = 200


def safe_description(text: str) -> str:
    """Return `text` reduced to RFC 6750's allowed characters and a bounded length."""
    cleaned = _UNSAFE_DESCRIPTION.sub("?", text)
    if len(cleaned) > _MAX_DESCRIPTION:
        cleaned = cleaned[: _MAX_DESCRIPTION - 3] + "..."
    return cleaned


class ConfigurationError(ValueError):
    """The guard's configuration is missing or invalid; the message says what to fix."""


class GuardError(Exception):
    """A request refused by the guard.

    `status_code`, `error_code` (RFC 6750, or None for a bare challenge) and `body_error` (the JSON
    body's `error`) are fixed per class. `description` is safe to send to the client; `reason` is a
    short machine-readable code for logs and metrics (e.g. ``"expired"``, ``"unknown_kid"``).
    """

    status_code: ClassVar[int] = 401
    error_code: ClassVar[str | None] = None
    body_error: ClassVar[str] = "invalid_token"
    default_description: ClassVar[str] = "The request was refused."
    #: The authentication scheme whose `WWW-Authenticate` challenge carries the error:
    #: ``Bearer``, or ``DPoP`` for a DPoP proof's defects and for any refusal of a request
    #: that used the DPoP scheme (the gate sets it).
    challenge: str = "Bearer"

    def __init__(self, description: str | None = None, *, reason: str | None = None) -> None:
        self.description = safe_description(description or self.default_description)
        self.reason = reason or self.body_error
        super().__init__(self.description)


class MissingToken(GuardError):
    """No bearer credentials on a protected path (RFC 6750 §3.1: a challenge without error)."""

    status_code = 401
    error_code = None
    body_error = "missing_token"
    default_description = "A bearer token is required."


class InvalidRequest(GuardError):
    """The credentials are ambiguous: two `Authorization` headers, or a token in the query.

    (A malformed Bearer credential is an `InvalidToken`, RFC 6750 §3.1.)"""

    status_code = 400
    error_code = "invalid_request"
    body_error = "invalid_request"
    default_description = "The request's credentials are ambiguous."


class InvalidToken(GuardError):
    """The token is not acceptable: format, signature, key, type or claims."""

    status_code = 401
    error_code = "invalid_token"
    body_error = "invalid_token"
    default_description = "The access token is invalid."


class InvalidDPoPProof(GuardError):
    """The DPoP proof (RFC 9449 §4.3) is missing, malformed or does not fit the request or the
    token; the description names the defect without repeating the proof (docs/dpop.md)."""

    status_code = 401
    error_code = "invalid_dpop_proof"
    body_error = "invalid_dpop_proof"
    default_description = "The DPoP proof is invalid."
    challenge = "DPoP"


class UseDPoPNonce(GuardError):
    """The resource server requires a DPoP proof carrying its current nonce (RFC 9449 §9):
    `nonce` is the value to send back in the `DPoP-Nonce` header."""

    status_code = 401
    error_code = "use_dpop_nonce"
    body_error = "use_dpop_nonce"
    default_description = "Resource server requires nonce in DPoP proof."
    challenge = "DPoP"

    def __init__(self, nonce: str, description: str | None = None) -> None:
        self.nonce = nonce
        super().__init__(description, reason="dpop_nonce_required")


class InsufficientScope(GuardError):
    """A verified token lacks scopes the route requires.

    `required` holds the scopes to announce in the challenge; `any_of` tells whether one of them
    would have been enough.
    """

    status_code = 403
    error_code = "insufficient_scope"
    body_error = "insufficient_scope"
    default_description = "The access token does not have the required scope."

    def __init__(
        self,
        required: tuple[str, ...] | list[str] = (),
        description: str | None = None,
        *,
        any_of: bool = False,
    ) -> None:
        self.required = tuple(required)
        self.any_of = any_of
        if description is None and self.required:
            which = "one of the scopes" if any_of and len(self.required) > 1 else "the scope"
            description = f"The access token lacks {which}: {' '.join(self.required)}"
        super().__init__(description, reason="insufficient_scope")


class IssuerUnavailable(GuardError):
    """No usable key: the issuer cannot be reached and nothing usable is cached."""

    status_code = 503
    error_code = None
    body_error = "temporarily_unavailable"
    default_description = "The token issuer's keys are temporarily unavailable."

    def __init__(self, description: str | None = None, *, retry_after: int = 30) -> None:
        self.retry_after = max(1, int(retry_after))
        super().__init__(description, reason="issuer_unavailable")


class ReplayStoreUnavailable(GuardError):
    """The DPoP replay store cannot tell whether a proof was used before (Redis unreachable, or
    the in-memory store full): the request is refused, never let through (fail closed)."""

    status_code = 503
    error_code = None
    body_error = "temporarily_unavailable"
    default_description = "The DPoP replay store is temporarily unavailable."

    def __init__(self, description: str | None = None, *, retry_after: int = 5) -> None:
        self.retry_after = max(1, int(retry_after))
        super().__init__(description, reason="replay_store_unavailable")


@dataclass(frozen=True, slots=True)
class RenderedError:
    """What an adapter sends for a `GuardError`: status, headers (name, value) and JSON body."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    @property
    def content_type(self) -> str:
        return "application/json"


def _quote(value: str) -> str:
    return '"' + value + '"'


def render_error(
    error: GuardError, *, realm: str, resource_metadata: str | None = None,
    dpop_algs: Sequence[str] | None = None, bearer: bool = True,
) -> RenderedError:
    """Render `error` per The contract: status, `WWW-Authenticate` / `Retry-After` and JSON body.

    `realm` must already be validated (settings do that); scopes in `InsufficientScope` are
    validated scope-tokens, so nothing here can break the header's quoting.

    With `dpop_algs` (DPoP on, RFC 9449 §7.1) a ``DPoP algs="..."`` challenge is sent too, and
    without `bearer` (DPoP required) only that one; the error's parameters go in the challenge
    of its scheme (`GuardError.challenge`), which comes first. A `UseDPoPNonce` adds its
    ``DPoP-Nonce`` header.
    """
    body: dict[str, object] = {"error": error.body_error, "error_description": error.description}
    headers: list[tuple[str, str]] = [("content-type", "application/json")]
    if isinstance(error, (IssuerUnavailable, ReplayStoreUnavailable)):
        headers.append(("retry-after", str(error.retry_after)))
    else:
        params = []
        if error.error_code is not None:
            params.append(f"error={_quote(error.error_code)}")
            params.append(f"error_description={_quote(error.description)}")
        if isinstance(error, InsufficientScope) and error.required:
            scope = " ".join(error.required)
            params.append(f"scope={_quote(scope)}")
            body["scope"] = scope
        tail = [] if resource_metadata is None else \
            [f"resource_metadata={_quote(resource_metadata)}"]
        bearer_head = [f"realm={_quote(realm)}"]
        if dpop_algs is None:
            challenge = "Bearer " + ", ".join(bearer_head + params + tail)
        else:
            dpop_head = [f"realm={_quote(realm)}", f"algs={_quote(' '.join(dpop_algs))}"]
            on_dpop = error.challenge == "DPoP" or not bearer
            dpop = "DPoP " + ", ".join(dpop_head + (params if on_dpop else []) + tail)
            if not bearer:
                challenge = dpop
            else:
                plain = "Bearer " + ", ".join(bearer_head + ([] if on_dpop else params) + tail)
                challenge = f"{dpop}, {plain}" if on_dpop else f"{plain}, {dpop}"
        headers.append(("www-authenticate", challenge))
        if isinstance(error, UseDPoPNonce):
            headers.append(("dpop-nonce", error.nonce))
    headers.append(("cache-control", "no-store"))
    payload = json.dumps(body, separators=(",", ":")).encode("ascii")
    return RenderedError(error.status_code, tuple(headers), payload)
