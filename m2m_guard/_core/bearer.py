"""Finding the bearer token of a request, per RFC 6750 §2.1 (header) and §2.3 (query).

Only the `Authorization: Bearer <b64token>` header is accepted. The rules, in order:

- two or more `Authorization` headers: `InvalidRequest` (which one would the app see?);
- an `access_token` query parameter: `InvalidRequest`, alone (tokens in URLs end up in logs) or
  with a header (RFC 6750 §2: one method per request);
- no header, or a scheme other than Bearer: no credentials (None);
- `Bearer` followed by anything but spaces and one b64token: `InvalidRequest`;
- a token longer than `max_token_bytes`: `InvalidToken`, checked before any further parsing.

WSGI servers (and Django, under WSGI or ASGI) join repeated request headers into one value with
commas before the application sees them; `split_credentials` undoes that, so "two Authorization
headers" is recognised there too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl

from ..errors import InvalidRequest
from .jws import check_token_size

__all__ = ["authorization_from_environ", "extract_bearer", "is_b64token", "query_has_access_token",
           "split_credentials"]

_B64TOKEN_BYTES = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/"
_OWS = " \t"
# The start of a credential (RFC 7235 §2.1): an auth-scheme, spaces, then a token68 or an
# auth-param (not "=", which would make the scheme an auth-param name: ``b = 2``).
_CREDENTIAL_START = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+ +[^ =]")


def is_b64token(token: str) -> bool:
    """True when `token` is an RFC 6750 b64token: ``1*( ALPHA / DIGIT / "-" / "." / "_" / "~" /
    "+" / "/" ) *"="``."""
    core = token.rstrip("=")
    # One C pass (delete every allowed byte; nothing may be left) instead of a regex walk.
    return (bool(core) and core.isascii()
            and not core.encode("ascii").translate(None, _B64TOKEN_BYTES))


def query_has_access_token(query_string: bytes | str) -> bool:
    """True when the query string carries an `access_token` parameter (percent-encoded or not)."""
    if not query_string:
        return False
    qs = query_string.decode("latin-1") if isinstance(query_string, bytes) else query_string
    if "access" not in qs.lower() and "%" not in qs:
        return False
    return any(key == "access_token" for key, _ in parse_qsl(qs, keep_blank_values=True))


def extract_bearer(
    authorization: Sequence[str],
    query_string: bytes | str = b"",
    *,
    max_token_bytes: int = 16384,
) -> str | None:
    """Return the bearer token of a request, or None when it carries no bearer credentials.

    `authorization` holds every `Authorization` header value of the request (latin-1 decoded).
    Raises `InvalidRequest` for malformed or ambiguous credentials and `InvalidToken` for a token
    over `max_token_bytes`.
    """
    if len(authorization) > 1:
        raise InvalidRequest("The request has more than one Authorization header.",
                             reason="multiple_authorization_headers")
    if query_has_access_token(query_string):
        if authorization:
            raise InvalidRequest("The token is sent both in the header and in the query string.",
                                 reason="token_in_header_and_query")
        raise InvalidRequest("Tokens in the query string are not accepted; "
                             "send them in the Authorization header.", reason="token_in_query")
    if not authorization:
        return None
    value = authorization[0].strip(_OWS)
    scheme, _, rest = value.partition(" ")
    if scheme.lower() != "bearer":
        if "\t" in scheme and scheme.split("\t", 1)[0].lower() == "bearer":
            raise InvalidRequest("The Authorization header must separate Bearer and the token "
                                 "with a space.", reason="malformed_authorization")
        return None
    token = rest.lstrip(" ")
    if not token:
        raise InvalidRequest("The Authorization header has the Bearer scheme but no token.",
                             reason="malformed_authorization")
    check_token_size(token, max_token_bytes)
    if not is_b64token(token):
        raise InvalidRequest("The bearer token contains characters RFC 6750 does not allow.",
                             reason="malformed_authorization")
    return token


def _list_elements(value: str) -> list[str]:
    """Split a header value at the commas that are not inside a quoted-string."""
    elements: list[str] = []
    start = 0
    quoted = escaped = False
    for index, char in enumerate(value):
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            elements.append(value[start:index])
            start = index + 1
    elements.append(value[start:])
    return elements


def split_credentials(value: str) -> list[str]:
    """Split an `Authorization` value that a server joined from repeated headers.

    Returns ``[value]`` unchanged unless a comma (outside quoted-strings) is followed by the start
    of another credential (a scheme, a space and more); then each credential
    separately. Commas inside one credential (Digest's ``a="x", b="y"`` parameters) stay put, and
    a single Bearer value with a stray comma stays whole, so `extract_bearer` judges it as it
    would judge the header received alone.
    """
    if "," not in value:
        return [value]
    elements = _list_elements(value)
    credentials = [elements[0]]
    for element in elements[1:]:
        if _CREDENTIAL_START.match(element.lstrip(_OWS)):
            credentials.append(element.strip(_OWS))
        else:
            credentials[-1] += "," + element
    if len(credentials) == 1:
        return [value]
    credentials[0] = credentials[0].strip(_OWS)
    return credentials


def authorization_from_environ(environ: Mapping[str, Any]) -> list[str]:
    """The `Authorization` header values of a WSGI `environ` (or Django `request.META`).

    Repeated headers arrive joined by commas; they are split back with `split_credentials`.
    """
    value = environ.get("HTTP_AUTHORIZATION")
    if not isinstance(value, str):
        return []
    return split_credentials(value)
