"""Properties of verification with real signatures: arbitrary claims signed with a real key are
accepted or refused with a `GuardError` (never an internal error); valid tokens round-trip into
the `AccessToken`; any single-character change of a signed token is refused.

A real `KeySetServer` on loopback publishes the keys; the verifier is warmed once per module.
"""

from __future__ import annotations

import string
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from m2m_guard import AccessToken, GuardError, GuardSettings, InvalidToken, TokenVerifier
from m2m_guard.local_issuer import KeySetServer, SigningKey

from .conftest import counted

AUDIENCE = "deployment-api"
KEYS = {alg: SigningKey.generate(alg, kid=f"fuzz_{alg.lower()}")
        for alg in ("RS256", "ES256", "EdDSA")}


@pytest.fixture(scope="module")
def issuer() -> Iterator[KeySetServer]:
    with KeySetServer(list(KEYS.values())) as server:
        yield server


@pytest.fixture(scope="module")
def verifier(issuer: KeySetServer) -> Iterator[TokenVerifier]:
    settings = GuardSettings(issuer=issuer.url, audience=AUDIENCE, http_timeout=2.0,
                             jwks_cache_ttl=3600, token_cache_size=64)
    with TokenVerifier(settings) as verifier:
        verifier.warm_up_sync()
        yield verifier


def refused(verifier: TokenVerifier, token: str) -> GuardError:
    with pytest.raises(GuardError) as caught:
        verifier.verify_sync(token)
    # An internal error would mean an unexpected exception was caught: a bug, even if safe.
    assert caught.value.reason != "internal_error"
    assert caught.value.status_code in (400, 401)
    return caught.value


scalar = (st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70)
          | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12))
values = st.recursive(scalar, lambda c: st.lists(c, max_size=3) | st.dictionaries(
    st.text(max_size=6), c, max_size=3), max_leaves=8)
now = int(time.time())
times = st.one_of(st.integers(now - 10**6, now + 10**6), st.sampled_from([now + 600, now - 600]),
                  values)
scope_words = st.text(string.ascii_lowercase + ":_", min_size=1, max_size=12)


def claim_dicts(issuer_url: str) -> st.SearchStrategy[dict[str, Any]]:
    """Claims that are often valid and often subtly not: every member may be missing, of the
    wrong type or out of range, plus arbitrary extra members."""
    members = {
        "iss": st.one_of(st.just(issuer_url), st.just(issuer_url + "/"), values),
        "aud": st.one_of(st.just(AUDIENCE), st.just([AUDIENCE, "other"]), st.just([]),
                         values),
        "exp": times, "nbf": times, "iat": times,
        "sub": st.one_of(st.text(max_size=20), values),
        "client_id": st.one_of(st.text(max_size=20), values),
        "scope": st.one_of(st.lists(scope_words, max_size=3).map(" ".join), values),
        "scopes": st.one_of(st.lists(scope_words, max_size=3), values),
        "scp": values, "jti": values, "oid": values, "custom_claims": values,
    }
    return st.fixed_dictionaries({}, optional=members).flatmap(
        lambda base: st.dictionaries(st.text(max_size=8), values, max_size=3).map(
            lambda extra: {**extra, **base}))


@given(data=st.data())
def test_arbitrary_signed_claims_are_accepted_or_refused(verifier: TokenVerifier,
                                                         issuer: KeySetServer,
                                                         data: st.DataObject) -> None:
    counted("claims.arbitrary")
    claims = data.draw(claim_dicts(issuer.url))
    key = data.draw(st.sampled_from(list(KEYS.values())))
    typ = data.draw(st.sampled_from(["JWT", "at+jwt", None, "dpop+jwt"]))
    token = key.sign(claims, typ=typ)
    try:
        access = verifier.verify_sync(token)
    except GuardError as exc:
        assert exc.reason != "internal_error", exc
        assert exc.status_code == 401
        return
    assert isinstance(access, AccessToken)
    assert claims["iss"] == issuer.url
    assert isinstance(claims["exp"], (int, float)) and not isinstance(claims["exp"], bool)
    assert typ in ("JWT", "at+jwt", None)


@given(client=st.text(string.ascii_letters + string.digits + "_", min_size=1, max_size=30),
       scopes=st.lists(scope_words, max_size=5, unique=True),
       lifetime=st.integers(60, 86400), alg=st.sampled_from(sorted(KEYS)))
def test_valid_tokens_round_trip(verifier: TokenVerifier, issuer: KeySetServer, client: str,
                                 scopes: list[str], lifetime: int, alg: str) -> None:
    counted("claims.round_trip")
    token = issuer.mint(KEYS[alg], client_id=client, sub=client, scopes=scopes,
                        exp=int(time.time()) + lifetime)
    access = verifier.verify_sync(token)
    assert access.client_id == client
    assert access.scopes == frozenset(scopes)
    assert access.issuer == issuer.url
    assert AUDIENCE in access.audience
    assert access.key_id == KEYS[alg].kid


@given(alg=st.sampled_from(sorted(KEYS)), where=st.floats(0, 1, exclude_max=True),
       replacement=st.one_of(st.sampled_from(string.ascii_letters + string.digits + "-_."),
                             st.characters()))
@example(alg="ES256", where=0.999, replacement="A")
def test_any_single_character_change_is_refused(verifier: TokenVerifier, issuer: KeySetServer,
                                                alg: str, where: float,
                                                replacement: str) -> None:
    counted("token.single_change")
    token = issuer.mint(KEYS[alg])
    verifier.verify_sync(token)  # the original verifies (and is now in the token cache)
    position = int(where * len(token))
    assume(token[position] != replacement)
    mutated = token[:position] + replacement + token[position + 1:]
    error = refused(verifier, mutated)
    if set(replacement) <= set(string.ascii_letters + string.digits + "-_."):
        # still a well-formed header: the token itself is refused, not the request
        assert isinstance(error, InvalidToken)
