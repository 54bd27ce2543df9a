"""Structured log lines on the ``m2m_guard`` logger.

Each line is ``m2m_guard <what> key=value key=value ...`` with stable keys, and the same fields
are attached to the `LogRecord` (``extra``), so a JSON formatter gets them as attributes:

- a refusal, at INFO: ``kind=refused reason status issuer kid client_id fingerprint``, and
  ``rule`` (the name of the rule that failed) for an ``access_denied`` refusal;
- a key-set change, at INFO: ``kind=keys_changed issuer keys added removed dropped ttl``;
  each key dropped on load at WARNING (``kind=key_dropped issuer kid reason``);
- a failed key-set fetch, at WARNING (``kind=keys_fetch_failed issuer error``);
- a fetch that changed nothing (304, or the same keys), at DEBUG (``kind=keys_unchanged``).

Values that are not plain (space, quote, ``=``, backslash, empty) are double-quoted with
backslash escapes; absent values are ``-``. Values taken from an unverified token (`kid`,
`client_id` on a refusal) are reduced to printable ASCII and 64 characters. A raw token or a
secret is never logged: tokens appear only as `fingerprint`, 16 hex digits of their SHA-256.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from ..events import RefusalContext, key_ids, never_raises, safe_text

if TYPE_CHECKING:
    from ..errors import GuardError
    from .fetch import FetchResult
    from .keys import KeySet

__all__ = ["format_fields", "log_key_set", "log_refusal", "logger"]

logger = logging.getLogger("m2m_guard")

_PLAIN = frozenset(chr(c) for c in range(0x21, 0x7F)) - {'"', "=", "\\"}


def _value(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.0f}" if value.is_integer() else f"{value:.3f}"
    text = value if isinstance(value, str) else str(value)
    if text and all(c in _PLAIN for c in text):
        return text
    escaped = "".join(
        "\\" + c if c in '"\\' else c if " " <= c < "\x7f" else "?" for c in text)
    return '"' + escaped + '"'


def format_fields(fields: Mapping[str, object]) -> str:
    """``key=value`` pairs in the given order, quoted where needed (see the module doc)."""
    return " ".join(f"{key}={_value(value)}" for key, value in fields.items())


def _emit(level: int, what: str, fields: dict[str, object]) -> None:
    logger.log(level, "m2m_guard %s %s", what, format_fields(fields), extra=fields)


@never_raises
def log_refusal(error: GuardError, context: RefusalContext) -> None:
    """One INFO line for a refused request; `context` supplies the issuer, `kid`, client id and
    fingerprint (of a token that failed verification: what it claims, made safe)."""
    if not logger.isEnabledFor(logging.INFO):
        return
    fields: dict[str, object] = {
        "kind": "refused", "reason": error.reason, "status": error.status_code,
        "issuer": context.issuer, "kid": context.kid, "client_id": safe_text(context.client_id),
        "fingerprint": context.fingerprint,
    }
    rule = getattr(error, "rule", None)
    if rule is not None:  # the failed rule's name only: never a claim value
        fields["rule"] = rule
    _emit(logging.INFO, "refused", fields)


@never_raises
def log_key_set(issuer: str, result: FetchResult | None, error: str | None,
                before: KeySet | None, after: KeySet | None, ttl: float) -> None:
    """Log the outcome of one key-set fetch (see the module doc for levels and fields)."""
    if result is None:
        _emit(logging.WARNING, "key set fetch failed",
              {"kind": "keys_fetch_failed", "issuer": issuer, "error": error})
        return
    if after is None or after is before:
        if logger.isEnabledFor(logging.DEBUG):
            _emit(logging.DEBUG, "key set unchanged", {
                "kind": "keys_unchanged", "issuer": issuer, "not_modified": result.keys is None,
                "keys": len(after) if after is not None else 0, "ttl": ttl})
        return
    old, new = key_ids(before), key_ids(after)
    _emit(logging.INFO, "key set loaded" if before is None else "key set changed", {
        "kind": "keys_changed", "issuer": issuer, "keys": len(after),
        "added": ",".join(sorted(new - old)) or None,
        "removed": ",".join(sorted(old - new)) or None,
        "dropped": len(after.dropped), "ttl": ttl,
    })
    for kid, reason in after.dropped:
        _emit(logging.WARNING, "key dropped",
              {"kind": "key_dropped", "issuer": issuer, "kid": safe_text(kid),
               "reason": reason})
