"""Identifiers shaped like Scalekit's, and the patterns that validate them.

Scalekit ids are a prefix and a long decimal number: `m2morg_68315758685323697` (client),
`org_59615193906282635` (organization), `sks_…` (client secret), `skc_…` (environment API client),
`snk_…` (signing key), `tkn_…` (token id). New ids here are 17 random decimal digits.
"""

from __future__ import annotations

import re
import secrets
import string

__all__ = ["CLIENT_ID", "ENV_CLIENT_ID", "ORGANIZATION_ID", "SECRET_ID", "new_id", "new_secret",
           "valid_id"]

_BODY = r"[A-Za-z0-9]{1,64}"
ORGANIZATION_ID = re.compile(rf"org_{_BODY}")
CLIENT_ID = re.compile(rf"m2morg_{_BODY}")
SECRET_ID = re.compile(rf"sks_{_BODY}")
ENV_CLIENT_ID = re.compile(rf"skc_{_BODY}")

_ALPHANUMERIC = string.ascii_letters + string.digits


def new_id(prefix: str) -> str:
    """`prefix` + "_" + 17 random decimal digits (no leading zero), e.g. ``m2morg_6831…``."""
    return f"{prefix}_{10**16 + secrets.randbelow(9 * 10**16)}"


def new_secret(prefix: str, length: int = 64) -> str:
    """A random secret: `prefix` then `length` alphanumeric characters (about 380 bits; the
    first 16 double as the selector the issuer stores in clear, leaving about 285 secret bits).

    Letters and digits only, so the secret needs no escaping in a form body or in HTTP Basic
    (RFC 6749 §2.3.1 form-encodes Basic credentials; many clients forget to).
    """
    return prefix + "".join(secrets.choice(_ALPHANUMERIC) for _ in range(length))


def valid_id(pattern: re.Pattern[str], value: object) -> bool:
    """True when `value` is a string matching `pattern` entirely."""
    return isinstance(value, str) and pattern.fullmatch(value) is not None
