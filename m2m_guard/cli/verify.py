"""`m2m-guard verify TOKEN`: the guard's verdict on one token, from the command line.

Settings come from `GuardSettings.from_env()` and verification from `TokenVerifier.verify_sync`,
so the answer is exactly the one a protected API with the same environment would give. Accepted:
the claims as JSON on stdout and a summary on stderr, exit 0. Refused: the status, error code,
reason and description of the `GuardError` on stderr, exit 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone

from .._core.scopes import ScopeRequirement, validate_scopes
from ..errors import ConfigurationError, GuardError, InsufficientScope
from ..settings import GuardSettings
from ..verifier import TokenVerifier
from .common import EXIT_FAILED, EXIT_OK, CommandError, plain, read_stdin_value, split_scopes

__all__ = ["describe_refusal", "run"]


def describe_refusal(error: GuardError) -> str:
    """One line saying why a token is refused: status, error code, reason, description."""
    code = error.error_code or error.body_error
    line = f"refused: HTTP {error.status_code} {code} (reason: {error.reason}): {error.description}"
    if isinstance(error, InsufficientScope) and error.required:
        line += f" [required scope: {' '.join(error.required)}]"
    return line


def run(args: argparse.Namespace) -> int:
    from_stdin = args.token == "-"  # noqa: S105 - the "read it from stdin" marker
    raw = read_stdin_value("a token") if from_stdin else args.token.strip()
    if raw[:7].lower() == "bearer ":
        raw = raw[7:].strip()
    try:
        requirement = ScopeRequirement(all_of=validate_scopes(split_scopes(args.scope))) \
            if args.scope else None
    except ValueError as exc:
        raise CommandError(f"--scope: {exc}") from None
    try:
        settings = GuardSettings.from_env()
    except ConfigurationError as exc:
        raise CommandError(f"configuration error: {exc}") from None
    with TokenVerifier(settings) as verifier:
        try:
            token = verifier.verify_sync(raw)
            if requirement is not None:
                requirement.check(token)
        except GuardError as error:
            print(describe_refusal(error), file=sys.stderr)
            return EXIT_FAILED
    print(json.dumps(plain(token.claims), indent=2, sort_keys=True))
    remaining = token.expires_at - datetime.now(timezone.utc)
    print(f"valid: client {token.client_id}, issuer {token.issuer}, "
          f"scopes {' '.join(sorted(token.scopes)) or '(none)'}, key {token.key_id}, "
          f"expires {token.expires_at.isoformat()} (in {int(remaining.total_seconds())} s)",
          file=sys.stderr)
    return EXIT_OK
