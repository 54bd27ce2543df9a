"""Finding the bearer token of a request, per RFC 6750 §2.1 (header) and §2.3 (query).

Only the `Authorization: Bearer <b64token>` header is accepted. The rules, in order:

- two or more `Authorization` headers: `InvalidRequest` (400: which one would the app see?);
- an `access_token` query parameter: `InvalidRequest` (400), alone (tokens in URLs end up in
  logs) or with a header (RFC 6750 §2: one method per request);
- no header, or a scheme other than Bearer: no credentials (None);
- a token longer than `max_token_bytes`: `InvalidToken`, checked before any further parsing;
- anything else under the Bearer scheme that is not one b64token (nothing after `Bearer`, a tab
  instead of the space, inner spaces, a JSON-serialized JWS, characters outside `b64token`):
  `InvalidToken` (401 `invalid_token`). RFC 6750 §3.1 calls a malformed token `invalid_token`,
  and OAuth clients fetch a new token on that answer (they give up on 400). The description
  names the defect and never repeats the input.

WSGI servers (and Django, under WSGI or ASGI) join repeated request headers into one value with
commas before the application sees them; `split_credentials` undoes that, so "two Authorization
headers" is recognised there too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl

from ..errors import InvalidRequest, InvalidToken
from .jws import check_token_size

__all__ = ["MALFORMED", "authorization_from_environ", "extract_bearer", "extract_credentials",
           "is_b64token", "query_has_access_token", "split_credentials"]

_B64TOKEN_BYTES = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/"
_OWS = " \t"
#: The start of every description of a malformed bearer credential.
MALFORMED = "The access token is malformed: "
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
    Raises `InvalidRequest` for ambiguous credentials (two headers, a token in the query),
    `InvalidToken` for a Bearer credential that is not one well-formed b64token (reason
    ``malformed_authorization``) and for a token over `max_token_bytes`.
    """
    found = extract_credentials(authorization, query_string, max_token_bytes=max_token_bytes)
    return None if found is None else found[1]


_BEARER_ONLY = frozenset({"bearer"})
_SCHEME_NAMES = {"bearer": "Bearer", "dpop": "DPoP"}


def extract_credentials(
    authorization: Sequence[str],
    query_string: bytes | str = b"",
    *,
    max_token_bytes: int = 16384,
    schemes: frozenset[str] = _BEARER_ONLY,
) -> tuple[str, str] | None:
    """`extract_bearer` for each scheme of `schemes` (lower case: ``bearer``, and ``dpop`` when
    DPoP is on, RFC 9449 §7.1, whose token has the same b64token framing): ``(scheme, token)``
    with the scheme in lower case, or None without credentials of those schemes."""
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
    scheme = scheme.lower()
    if scheme not in schemes:
        if "\t" in scheme and scheme.split("\t", 1)[0] in schemes:
            name = _SCHEME_NAMES.get(scheme.split("\t", 1)[0], "Bearer")
            raise _malformed(f"{name} and the token must be separated by a space, not a tab.")
        return None
    token = rest.lstrip(" ")
    if not token:
        name = _SCHEME_NAMES.get(scheme, "Bearer")
        raise _malformed(f"the Authorization header has the {name} scheme but no token.")
    check_token_size(token, max_token_bytes)
    if not is_b64token(token):
        raise _malformed(_defect(token, _SCHEME_NAMES.get(scheme, "Bearer")))
    return scheme, token


def _malformed(defect: str) -> InvalidToken:
    return InvalidToken(MALFORMED + defect, reason="malformed_authorization")


def _defect(token: str, scheme: str = "Bearer") -> str:
    """What is wrong with a credential that is not a b64token, without quoting any of it."""
    if token.startswith("{"):
        return ("it is JSON (a JSON-serialized JWS?); send the compact form "
                "header.payload.signature.")
    if " " in token or "\t" in token:
        return f"it contains whitespace; send exactly one token after {scheme}."
    if token.startswith('"') or token.endswith('"'):
        return "it is quoted; send the token without quotes."
    if "=" in token.rstrip("="):
        return "it has '=' inside; padding may only end a token."
    return "it contains characters a bearer token cannot contain (RFC 6750 b64token)."


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
