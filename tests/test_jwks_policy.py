"""The key-set cache policy as pure functions of state and a fake clock (plain floats),
and the filtering `parse_jwks` applies when a key set is loaded."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from m2m_guard import GuardSettings
from m2m_guard._core.encoding import b64url_decode, b64url_encode
from m2m_guard._core.jwks import CachePolicy, Fetch, KeySetState, parse_max_age
from m2m_guard._core.keys import KeyRejected, KeySet, load_jwk, parse_jwks
from m2m_guard.local_issuer import SigningKey


def loaded(policy: CachePolicy, now: float, *, max_age: float | None = None,
           keys: KeySet | None = None) -> KeySetState:
    """A state holding a key set fetched at `now`."""
    state = KeySetState()
    policy.on_success(state, keys if keys is not None else KeySet.of(()), now, 1.7e9,
                      max_age=max_age, etag=None)
    return state


# -- TTL and the Cache-Control clamp --------------------------------------------------------

@pytest.mark.parametrize(("max_age", "ttl"), [
    (None, 600.0),          # no Cache-Control: the default
    (300.0, 300.0),         # honoured inside the clamp
    (5.0, 60.0),            # raised to the 60 s floor
    (10.0**9, 86400.0),     # lowered to the 24 h ceiling
    (0.0, 60.0),            # no-store / no-cache parse as 0: the floor
    (60.0, 60.0),
    (86400.0, 86400.0),
])
def test_ttl_from_max_age_is_clamped(max_age: float | None, ttl: float) -> None:
    assert CachePolicy().ttl_for(max_age) == ttl
    state = loaded(CachePolicy(), 100.0, max_age=max_age)
    assert state.ttl == ttl
    assert CachePolicy().expires_at(state) == 100.0 + ttl


def test_no_store_means_the_floor() -> None:
    assert CachePolicy().ttl_for(parse_max_age("no-store")) == 60.0
    assert CachePolicy().ttl_for(parse_max_age("private, no-cache")) == 60.0


@pytest.mark.parametrize("max_age", [None, 0.0, 5.0, 300.0, 10.0**9])
def test_configured_ttl_is_used_as_given(max_age: float | None) -> None:
    """A TTL the user configures ignores max-age and the clamp (so tests can run with 1 s)."""
    policy = CachePolicy(ttl=1.0)
    assert policy.ttl_for(max_age) == 1.0
    assert loaded(policy, 0.0, max_age=max_age).ttl == 1.0


def test_policy_from_settings() -> None:
    settings = GuardSettings(issuer="https://issuer.example", audience="api", jwks_cache_ttl="1s",
                             jwks_refetch_cooldown="2s", jwks_max_stale="1m", jwks_min_ttl=10,
                             jwks_max_ttl="1h")
    assert CachePolicy.from_settings(settings) == CachePolicy(
        ttl=1.0, min_ttl=10.0, max_ttl=3600.0, cooldown=2.0, max_stale=60.0)
    defaults = CachePolicy.from_settings(GuardSettings(issuer="https://issuer.example",
                                                       audience="api"))
    assert defaults == CachePolicy(ttl=None, min_ttl=60.0, max_ttl=86400.0, cooldown=30.0,
                                   max_stale=86400.0)
    assert defaults.ttl_for(None) == 600.0


def test_custom_clamp_bounds() -> None:
    policy = CachePolicy(min_ttl=10.0, max_ttl=100.0)
    assert policy.ttl_for(1.0) == 10.0
    assert policy.ttl_for(50.0) == 50.0
    assert policy.ttl_for(1000.0) == 100.0
    assert policy.ttl_for(None) == 100.0  # the 600 s default is clamped too


@pytest.mark.parametrize(("header", "seconds"), [
    (None, None),
    ("", None),
    ("max-age=300", 300.0),
    ("public, max-age=300", 300.0),
    ("max-age=300, must-revalidate", 300.0),
    ("MAX-AGE=300", 300.0),
    ('max-age="300"', 300.0),
    ("max-age = 42", 42.0),
    ("max-age=0", 0.0),
    ("no-store", 0.0),
    ("no-cache", 0.0),
    ("public, max-age=300, no-store", 0.0),   # no-store wins over max-age
    ('no-cache="set-cookie", max-age=300', 0.0),
    ("s-maxage=300", None),
    ("x-max-age=300", None),                  # another directive's name that ends in max-age
    ("max-age=-5", None),
    ("max-age=1.5", None),
    ("max-age=abc", None),
    ("max-age=", None),
    ("max-age=12345678901", None),            # more than 10 digits is not a sane lifetime
    ("public", None),
    ("max-age=300x", None),
])
def test_parse_max_age(header: str | None, seconds: float | None) -> None:
    assert parse_max_age(header) == seconds


# -- fresh, refresh-ahead, expired --------------------------------------------------------

def test_fresh_then_refresh_ahead_then_wait() -> None:
    policy = CachePolicy()
    state = loaded(policy, 1000.0)  # ttl 600: refresh-ahead window opens 60 s before expiry
    assert policy.refresh_at(state) == 1540.0
    assert policy.plan(state, 1000.0).fetch is Fetch.NONE
    assert policy.plan(state, 1539.9) == policy.plan(state, 1000.0)
    plan = policy.plan(state, 1539.9)
    assert plan.keys is state.keys and plan.fetch is Fetch.NONE
    plan = policy.plan(state, 1540.0)
    assert plan.keys is state.keys and plan.fetch is Fetch.BACKGROUND
    plan = policy.plan(state, 1599.9)
    assert plan.keys is state.keys and plan.fetch is Fetch.BACKGROUND
    # Expired while the issuer is believed healthy: the request waits for the refresh.
    plan = policy.plan(state, 1600.0)
    assert plan.keys is state.keys and plan.fetch is Fetch.WAIT


def test_refresh_ahead_window_is_a_tenth_of_short_ttls() -> None:
    policy = CachePolicy(ttl=1.0)
    state = loaded(policy, 0.0)
    assert policy.refresh_at(state) == pytest.approx(0.9)
    assert policy.plan(state, 0.89).fetch is Fetch.NONE
    assert policy.plan(state, 0.91).fetch is Fetch.BACKGROUND
    assert policy.plan(state, 1.0).fetch is Fetch.WAIT


def test_cold_cache_waits_for_a_fetch() -> None:
    plan = CachePolicy().plan(KeySetState(), 0.0)
    assert plan.keys is None and plan.fetch is Fetch.WAIT and plan.retry_after == 0.0


def test_success_after_failure_resets_backoff() -> None:
    policy = CachePolicy()
    state = KeySetState()
    policy.on_failure(state, "down", 10.0, 1.7e9)
    policy.on_failure(state, "down", 11.0, 1.7e9)
    assert state.failures == 2 and state.failing
    policy.on_success(state, KeySet.of(()), 20.0, 1.7e9, max_age=None, etag="v1")
    assert state.failures == 0 and not state.failing
    assert state.last_error == "down"  # kept for health()
    assert policy.backoff(state) == 0.0
    assert state.etag == "v1" and state.fetches == 3


# -- stale-if-error and backoff -------------------------------------------------------------

def test_stale_if_error_until_max_stale() -> None:
    policy = CachePolicy(ttl=1.0, max_stale=3.0, cooldown=1.0)
    state = loaded(policy, 0.0)
    assert policy.plan(state, 1.5).fetch is Fetch.WAIT
    policy.on_failure(state, "HTTP 500", 1.5, 1.7e9)
    assert state.failing
    # Backoff after one failure is 1 s: keys served without a fetch, then with background retries.
    plan = policy.plan(state, 2.0)
    assert plan.keys is state.keys and plan.fetch is Fetch.NONE
    plan = policy.plan(state, 2.5)
    assert plan.keys is state.keys and plan.fetch is Fetch.BACKGROUND
    plan = policy.plan(state, 3.999)
    assert plan.keys is state.keys
    assert policy.usable_until(state) == 4.0
    # Past max_stale the set is unusable; a fetch may be attempted (backoff over)...
    plan = policy.plan(state, 4.0)
    assert plan.keys is None and plan.fetch is Fetch.WAIT
    # ... and once that fails too, the answer is "retry after".
    policy.on_failure(state, "HTTP 500", 4.0, 1.7e9)
    plan = policy.plan(state, 4.2)
    assert plan.keys is None and plan.fetch is Fetch.NONE
    assert plan.retry_after == pytest.approx(1.0)  # second failure: 2 s backoff, 1.8 s left,
    plan = policy.plan(state, 5.5)                 # but the cooldown (1 s) caps the backoff
    assert plan.keys is None and plan.fetch is Fetch.WAIT


def test_default_max_stale_is_a_day() -> None:
    policy = CachePolicy()
    state = loaded(policy, 0.0)
    policy.on_failure(state, "refused", 600.0, 1.7e9)
    assert policy.plan(state, 600.0 + 86400.0 - 1).keys is state.keys
    assert policy.plan(state, 600.0 + 86400.0).keys is None


@pytest.mark.parametrize(("failures", "backoff"), [
    (0, 0.0), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 16.0), (6, 30.0), (7, 30.0),
    (200, 30.0),
])
def test_exponential_backoff_capped_at_cooldown(failures: int, backoff: float) -> None:
    policy = CachePolicy()
    state = KeySetState()
    for attempt in range(failures):
        policy.on_failure(state, "refused", 100.0 + attempt, 1.7e9)
    assert policy.backoff(state) == backoff
    if failures:
        assert policy.retry_at(state) == 100.0 + failures - 1 + backoff


def test_cold_cache_in_backoff_answers_retry_after() -> None:
    policy = CachePolicy()
    state = KeySetState()
    for attempt in range(5):
        policy.on_failure(state, "refused", 10.0, 1.7e9)  # 5 failures: 16 s backoff
    plan = policy.plan(state, 11.0)
    assert plan.keys is None and plan.fetch is Fetch.NONE
    assert plan.retry_after == 15.0
    plan = policy.plan(state, 25.9)
    assert plan.fetch is Fetch.NONE and plan.retry_after == 1.0  # never below 1 s
    assert policy.plan(state, 26.0).fetch is Fetch.WAIT


def test_retry_after_uses_the_cooldown_cap() -> None:
    policy = CachePolicy(cooldown=5.0)
    state = KeySetState()
    for _ in range(10):
        policy.on_failure(state, "refused", 0.0, 1.7e9)
    assert policy.plan(state, 0.0).retry_after == 5.0


def test_failure_without_keys_never_invents_keys() -> None:
    policy = CachePolicy()
    state = KeySetState()
    policy.on_failure(state, "refused", 0.0, 1.7e9)
    for now in (0.0, 0.5, 1.0, 100.0, 10**6):
        assert policy.plan(state, now).keys is None


# -- unknown kids ------------------------------------------------------------------------

def test_unknown_kid_refetch_at_most_once_per_cooldown() -> None:
    policy = CachePolicy(cooldown=30.0)
    state = loaded(policy, 0.0)
    assert policy.may_refetch_for(state, "new", 5.0)
    policy.note_refetch(state, 5.0)
    for kid in ("new", "other", None):
        assert not policy.may_refetch_for(state, kid, 5.0)
        assert not policy.may_refetch_for(state, kid, 34.999)
    assert policy.may_refetch_for(state, "other", 35.0)
    assert policy.may_refetch_for(state, None, 35.0)


def test_unknown_kid_refetch_respects_failure_backoff() -> None:
    policy = CachePolicy(cooldown=30.0)
    state = loaded(policy, 0.0)
    for _ in range(4):
        policy.on_failure(state, "refused", 10.0, 1.7e9)  # backoff 8 s
    assert not policy.may_refetch_for(state, "new", 17.9)
    assert policy.may_refetch_for(state, "new", 18.0)


def test_remembered_unknown_kid_never_refetches() -> None:
    policy = CachePolicy(cooldown=1.0)
    state = loaded(policy, 0.0)
    policy.note_unknown_kid(state, "ghost")
    assert not policy.may_refetch_for(state, "ghost", 10**6)
    assert policy.may_refetch_for(state, "another", 10**6)


def test_unknown_kid_memory_is_bounded_and_lru() -> None:
    policy = CachePolicy()
    state = loaded(policy, 0.0)
    for i in range(1500):
        policy.note_unknown_kid(state, f"kid-{i}")
        if i == 600:
            policy.note_unknown_kid(state, "kid-0")  # seen again: becomes the newest
    assert len(state.unknown_kids) == 1024
    assert "kid-1499" in state.unknown_kids
    assert "kid-1" not in state.unknown_kids   # evicted oldest-first
    assert "kid-0" in state.unknown_kids       # refreshed at i == 600
    assert "kid-476" not in state.unknown_kids and "kid-477" in state.unknown_kids


def test_unknown_kids_forgotten_when_a_set_is_fetched() -> None:
    policy = CachePolicy()
    state = loaded(policy, 0.0)
    policy.note_unknown_kid(state, "ghost")
    # A 304 Not Modified keeps the set and what we know about it.
    keys = state.keys
    policy.on_success(state, None, 700.0, 1.7e9, max_age=None, etag="v1")
    assert state.keys is keys and "ghost" in state.unknown_kids
    assert state.fetched_at == 700.0 and policy.plan(state, 700.0).fetch is Fetch.NONE
    # A fetched set may hold the kid now: forget every remembered unknown kid.
    policy.on_success(state, KeySet.of(()), 800.0, 1.7e9, max_age=None, etag=None)
    assert len(state.unknown_kids) == 0
    assert policy.may_refetch_for(state, "ghost", 10**6)


# -- key filtering on load ---------------------------------------------------------------

@pytest.fixture(scope="module")
def keys() -> dict[str, SigningKey]:
    return {
        "rsa": SigningKey.generate("RS256", kid="rsa"),
        "ec": SigningKey.generate("ES256", kid="ec"),
        "ed": SigningKey.generate("EdDSA", kid="ed"),
        "rsa1024": SigningKey.generate("RS256", kid="weak", rsa_bits=1024),
    }


def _doc(*jwks: Any) -> bytes:
    return json.dumps({"keys": list(jwks)}).encode()


def _off_curve(jwk: dict[str, Any]) -> dict[str, Any]:
    y = bytearray(b64url_decode(jwk["y"]))
    y[-1] ^= 1
    return {**jwk, "y": b64url_encode(bytes(y))}


def test_good_keys_load(keys: dict[str, SigningKey]) -> None:
    key_set = parse_jwks(_doc(keys["rsa"].public_jwk(), keys["ec"].public_jwk(),
                              keys["ed"].public_jwk(), {**keys["ec"].public_jwk(kid="bare"),
                                                        "use": None}))
    assert [k.kid for k in key_set.keys] == ["rsa", "ec", "ed"]
    assert key_set.dropped == (("bare", "use is None, not 'sig'"),)  # use: null is not "sig"
    no_use = {k: v for k, v in keys["rsa"].public_jwk(kid="plain").items()
              if k not in ("use", "alg")}
    plain = parse_jwks(_doc(no_use))
    assert [k.kid for k in plain.keys] == ["plain"] and plain.dropped == ()
    assert plain.keys[0].algorithms == frozenset(
        {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})  # no alg: every RSA algorithm
    assert parse_jwks(_doc(keys["rsa"].public_jwk())).keys[0].algorithms == {"RS256"}


@pytest.mark.parametrize(("name", "make", "reason"), [
    ("use enc", lambda k: k["rsa"].public_jwk(use="enc"), "use is 'enc', not 'sig'"),
    ("private RSA", lambda k: k["rsa"].public_jwk(d="AQAB"), "private members (d)"),
    ("private CRT", lambda k: k["rsa"].public_jwk(p="AQAB", q="AQAB"), "private members (p, q)"),
    ("private EC", lambda k: k["ec"].public_jwk(d="AQAB"), "private members (d)"),
    ("private OKP", lambda k: k["ed"].public_jwk(d="AQAB"), "private members (d)"),
    ("oct", lambda k: {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0", "alg": "HS256"},
     "symmetric (oct) keys are never accepted"),
    ("RSA 1024", lambda k: k["rsa1024"].public_jwk(), "RSA key of 1024 bits"),
    ("EC off curve", lambda k: _off_curve(k["ec"].public_jwk()), "not on curve P-256"),
    ("EC short x", lambda k: k["ec"].public_jwk(x="AQAB"), "must be 32 bytes"),
    ("EC alg RS256", lambda k: k["ec"].public_jwk(alg="RS256"), "does not fit a EC key"),
    ("EC alg ES384", lambda k: k["ec"].public_jwk(alg="ES384"), "does not fit a EC key"),
    ("RSA alg ES256", lambda k: k["rsa"].public_jwk(alg="ES256"), "does not fit a RSA key"),
    ("RSA alg EdDSA", lambda k: k["rsa"].public_jwk(alg="EdDSA"), "does not fit a RSA key"),
    ("OKP alg ES256", lambda k: k["ed"].public_jwk(alg="ES256"), "does not fit a OKP key"),
    ("alg HS256", lambda k: k["rsa"].public_jwk(alg="HS256"), "not an accepted asymmetric"),
    ("alg none", lambda k: k["rsa"].public_jwk(alg="none"), "not an accepted asymmetric"),
    ("key_ops sign", lambda k: k["rsa"].public_jwk(key_ops=["sign"]), "key_ops"),
    ("unknown kty", lambda k: {"kty": "XYZ", "kid": "x"}, "unsupported key type"),
    ("kid not a string", lambda k: k["rsa"].public_jwk(kid=7), "kid must be a string"),
    ("kid too long", lambda k: k["rsa"].public_jwk(kid="k" * 257), "kid must be a string"),
    ("bad base64", lambda k: k["rsa"].public_jwk(n="AQAB="), "not canonical base64url"),
    ("even exponent", lambda k: k["rsa"].public_jwk(e="Ag"), "exponent is invalid"),
    ("unknown curve", lambda k: k["ec"].public_jwk(crv="P-192"), "unsupported curve"),
    # A member present with the wrong type is a defect, not "absent" (null does not widen).
    ("use null", lambda k: k["rsa"].public_jwk(use=None), "use is None"),
    ("alg null", lambda k: k["rsa"].public_jwk(alg=None), "alg None is not"),
    ("kid null", lambda k: k["rsa"].public_jwk(kid=None), "kid must be a string"),
    ("key_ops null", lambda k: k["rsa"].public_jwk(key_ops=None), "key_ops"),
    ("key_ops string", lambda k: k["rsa"].public_jwk(key_ops="verify"), "key_ops"),
])
def test_unfit_keys_are_dropped_on_load(keys: dict[str, SigningKey], name: str,
                                        make: Any, reason: str) -> None:
    bad = make(keys)
    key_set = parse_jwks(_doc(keys["ed"].public_jwk(), bad))
    assert [k.kid for k in key_set.keys] == ["ed"], name
    assert len(key_set.dropped) == 1
    kid, why = key_set.dropped[0]
    assert kid == (bad.get("kid") if isinstance(bad.get("kid"), str) else None)
    assert reason in why
    with pytest.raises(KeyRejected):
        load_jwk(bad)


def test_non_object_entries_are_dropped(keys: dict[str, SigningKey]) -> None:
    key_set = parse_jwks(_doc("a string", 5, None, [], keys["ed"].public_jwk()))
    assert [k.kid for k in key_set.keys] == ["ed"]
    assert len(key_set.dropped) == 4
    assert all(kid is None and "JSON object" in why for kid, why in key_set.dropped)


def test_duplicate_kids_are_kept_but_ambiguous(keys: dict[str, SigningKey]) -> None:
    other_rsa = SigningKey.generate("RS256", kid="rsa")
    key_set = parse_jwks(_doc(keys["rsa"].public_jwk(), other_rsa.public_jwk(),
                              keys["ec"].public_jwk(kid="rsa")))
    assert len(key_set) == 3
    assert len(key_set.candidates("rsa", "RS256")) == 2    # ambiguous: refused at selection
    assert len(key_set.candidates("rsa", "ES256")) == 1    # alg tells this one apart
    assert key_set.candidates("rsa", "PS256") == []        # the keys pin RS256
    assert key_set.candidates("nope", "RS256") == []
    assert len(key_set.candidates(None, "RS256")) == 2      # no kid: several fit


def test_contains_is_by_identity(keys: dict[str, SigningKey]) -> None:
    doc = _doc(keys["rsa"].public_jwk())
    first, second = parse_jwks(doc), parse_jwks(doc)
    assert first.contains(first.keys[0])
    assert not second.contains(first.keys[0])  # same JWK, but another load: not "the same key"


def test_too_many_keys_refuse_the_document(keys: dict[str, SigningKey]) -> None:
    jwk = keys["ed"].public_jwk()
    at_limit = parse_jwks(_doc(*[{**jwk, "kid": f"k{i}"} for i in range(100)]))
    assert len(at_limit) == 100
    with pytest.raises(ValueError, match="101 keys; at most 100"):
        parse_jwks(_doc(*[{**jwk, "kid": f"k{i}"} for i in range(101)]))
    with pytest.raises(ValueError, match="4 keys; at most 3"):
        parse_jwks(_doc(*[{**jwk, "kid": f"k{i}"} for i in range(4)]), max_keys=3)
    # Dropped keys count too: a flood of junk keys is not an excuse to parse more.
    with pytest.raises(ValueError, match="at most 100"):
        parse_jwks(_doc(jwk, *[{"kty": "oct", "k": "AA"}] * 100))


@pytest.mark.parametrize("document", [
    b"",
    b"<html>not json</html>",
    b"\xef\xbb\xbf" + _doc(),                       # BOM
    b'{"keys": [], "keys": []}',                    # duplicate member names
    b'{"keys": [{"kty": "RSA", "e": NaN}]}',        # non-standard literal
    b"[]",
    b'{"keys": {}}',
    b'{"keys": "none"}',
    b'{"no_keys": []}',
    b'"keys"',
    b'{"keys": [' * 100_000,                        # deeply nested and truncated
])
def test_unusable_documents_are_refused(document: bytes) -> None:
    with pytest.raises(ValueError):
        parse_jwks(document)


def test_empty_key_set_is_a_valid_document() -> None:
    key_set = parse_jwks(b'{"keys": []}')
    assert len(key_set) == 0 and key_set.candidates("x", "RS256") == []
    assert math.isinf(KeySetState().fetched_at)
