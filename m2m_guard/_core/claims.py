"""The claim rules of an access token, for claims whose signature and issuer were checked.

`ClaimRules(settings).check(claims, now)` applies, in order: the required claims (`exp` always,
plus `required_claims`); `exp`, `nbf` and `iat` as NumericDates (numbers of seconds in
0..9999-12-31, never a bool, a string or null) with the configured leeway; the types of the
identifying string claims (`sub`, `jti`, `client_id`, `azp`, `oid`); and, when
`verify_audience` is on, the audience (`aud`: a string or a non-empty array of strings, one of
which is configured). It raises `InvalidToken` with a stable `reason`, and returns the wall-clock
window (not_after, not_before), leeway included, in which the token stays valid (the
verified-token cache keeps a token only inside it).

Used by `TokenVerifier` after the signature, and directly by the local issuer for its
management tokens: one set of rules, wherever claims are judged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ..errors import InvalidToken
from ..settings import GuardSettings

__all__ = ["MAX_NUMERIC_DATE", "ClaimRules"]

MAX_NUMERIC_DATE = 253402300799  # 9999-12-31T23:59:59Z: beyond it no datetime can hold it
_STRING_CLAIMS = ("sub", "jti", "client_id", "azp", "oid")
_ABSENT = object()  # not an int: an absent time claim goes to `_number`, which says None


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    if name not in claims:
        return None
    value = claims[name]  # present but null is as invalid as a string: not treated as absent
    if type(value) is int and 0 <= value <= MAX_NUMERIC_DATE:  # the usual case, checked fast
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidToken(f"The {name} claim must be a number of seconds.",
                           reason=f"invalid_{name}")
    if not 0 <= value <= MAX_NUMERIC_DATE:
        raise InvalidToken(f"The {name} claim is out of range.", reason=f"invalid_{name}")
    return float(value)


class ClaimRules:
    """The claim rules of one `GuardSettings` (see the module doc). Immutable, thread-safe."""

    __slots__ = ("_audiences", "_leeway", "_required", "_verify_audience")

    def __init__(self, settings: GuardSettings) -> None:
        self._required = tuple(dict.fromkeys(("exp", *settings.required_claims)))
        self._leeway = settings.leeway
        self._verify_audience = settings.verify_audience
        self._audiences = frozenset(settings.audiences)

    def check(self, claims: Mapping[str, Any], now: float) -> tuple[float, float]:
        """Check `claims` at wall-clock time `now` (epoch seconds); raise `InvalidToken`.

        Returns (not_after, not_before): the window in which the token stays valid.
        """
        for name in self._required:
            if name not in claims:
                raise InvalidToken(f"The token has no {name} claim.", reason=f"missing_{name}")
        leeway = self._leeway
        # Time claims: an int in range is the usual case, checked inline; `_number` does the rest.
        exp = claims["exp"]  # required above
        if type(exp) is not int or not 0 <= exp <= MAX_NUMERIC_DATE:
            exp = _number(claims, "exp")
        if now >= exp + leeway:
            raise InvalidToken("The token has expired.", reason="expired")
        nbf = claims.get("nbf", _ABSENT)
        if type(nbf) is not int or not 0 <= nbf <= MAX_NUMERIC_DATE:
            nbf = _number(claims, "nbf")
        not_before = -math.inf if nbf is None else nbf - leeway
        if now < not_before:
            raise InvalidToken("The token is not valid yet (nbf).", reason="not_yet_valid")
        iat = claims.get("iat", _ABSENT)
        if type(iat) is not int or not 0 <= iat <= MAX_NUMERIC_DATE:
            iat = _number(claims, "iat")
        if iat is not None and iat > now + leeway:
            raise InvalidToken("The token was issued in the future (iat).",
                               reason="issued_in_future")
        for name in _STRING_CLAIMS:
            value = claims.get(name)
            if value is not None and type(value) is not str and not isinstance(value, str):
                raise InvalidToken(f"The {name} claim must be a string.", reason=f"invalid_{name}")
        if self._verify_audience:
            self._check_audience(claims.get("aud"))
        return exp + leeway, not_before

    def _check_audience(self, aud: Any) -> None:
        if isinstance(aud, str):
            audiences: list[Any] = [aud]
        elif isinstance(aud, list) and aud:
            audiences = aud
        elif aud is None:
            raise InvalidToken("The token has no aud claim.", reason="missing_aud")
        else:
            raise InvalidToken("The aud claim must be a string or an array of strings.",
                               reason="invalid_aud")
        for item in audiences:
            if not isinstance(item, str):
                raise InvalidToken("The aud claim must be a string or an array of strings.",
                                   reason="invalid_aud")
        if self._audiences.isdisjoint(audiences):
            raise InvalidToken("The token is not meant for this audience.",
                               reason="wrong_audience")
