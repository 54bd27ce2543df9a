"""`GuardSettings` validation and `from_env()`: every option, every kind of bad value, and
messages that name the variable, the value and what is expected."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest

from m2m_guard import ConfigurationError, GuardSettings, IssuerSettings
from m2m_guard.settings import ASYMMETRIC_ALGORITHMS, parse_duration

ISSUER = "https://yourenv.scalekit.dev"
BASE = {"M2M_GUARD_ISSUER": ISSUER, "M2M_GUARD_AUDIENCE": "deployment-api"}


def env(**values: str) -> dict[str, str]:
    result = dict(BASE)
    result.update({"M2M_GUARD_" + name.upper(): value for name, value in values.items()})
    return result


def env_error(environ: dict[str, str]) -> str:
    with pytest.raises(ConfigurationError) as info:
        GuardSettings.from_env(environ=environ)
    return str(info.value)


# -- defaults ---------------------------------------------------------------------------------

def test_defaults() -> None:
    s = GuardSettings(issuer=ISSUER, audience="deployment-api")
    assert s.issuer == (IssuerSettings(ISSUER, None),)
    assert s.issuers == s.issuer
    assert s.audience == s.audiences == ("deployment-api",)
    assert s.verify_audience is True
    assert s.jwks_url is None
    assert s.algorithms == ASYMMETRIC_ALGORITHMS
    assert "HS256" not in s.algorithms and "none" not in s.algorithms
    assert s.leeway == 30.0
    assert s.strict_typ is False
    assert s.scope_claims == ("scopes", "scope", "scp")
    assert s.required_claims == ()
    assert s.public_paths == ()
    assert s.required is True
    assert s.allow_cors_preflight is True
    assert s.max_token_bytes == 16384
    assert s.jwks_cache_ttl is None
    assert (s.jwks_min_ttl, s.jwks_max_ttl) == (60.0, 86400.0)
    assert s.jwks_refetch_cooldown == 30.0
    assert s.jwks_max_stale == 86400.0
    assert s.jwks_max_bytes == 65536
    assert s.jwks_max_keys == 100
    assert s.http_timeout == 5.0
    assert s.realm == "api"
    assert s.allow_http is False


def test_settings_are_frozen() -> None:
    s = GuardSettings(issuer=ISSUER, audience="a")
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.realm = "other"  # type: ignore[misc]


def test_several_issuers_and_audiences_deduplicated_in_order() -> None:
    s = GuardSettings(issuer=[ISSUER, "https://b.example"], audience=["x", "y", "x"])
    assert [i.issuer for i in s.issuers] == [ISSUER, "https://b.example"]
    assert s.audience == ("x", "y")
    assert s.issuer_for(ISSUER) == IssuerSettings(ISSUER)
    assert s.issuer_for(ISSUER + "/") is None  # exact match only
    assert s.issuer_for("https://B.example") is None


# -- from_env: every option -------------------------------------------------------------------

def test_from_env_reads_every_option() -> None:
    environ = {
        "M2M_GUARD_ISSUER": f"{ISSUER}, https://b.example ,",
        "M2M_GUARD_AUDIENCE": "deployment-api,billing-api",
        "M2M_GUARD_VERIFY_AUDIENCE": "yes",
        "M2M_GUARD_ALGORITHMS": "RS256, ES256",
        "M2M_GUARD_LEEWAY": "250ms",
        "M2M_GUARD_STRICT_TYP": "ON",
        "M2M_GUARD_SCOPE_CLAIMS": "scopes,permissions",
        "M2M_GUARD_REQUIRED_CLAIMS": "jti,sub",
        "M2M_GUARD_PUBLIC_PATHS": "/health,/docs*",
        "M2M_GUARD_REQUIRED": "0",
        "M2M_GUARD_ALLOW_CORS_PREFLIGHT": "off",
        "M2M_GUARD_MAX_TOKEN_BYTES": " 8192 ",
        "M2M_GUARD_JWKS_CACHE_TTL": "5m",
        "M2M_GUARD_JWKS_MIN_TTL": "30s",
        "M2M_GUARD_JWKS_MAX_TTL": "1h",
        "M2M_GUARD_JWKS_REFETCH_COOLDOWN": "10",
        "M2M_GUARD_JWKS_MAX_STALE": "1d",
        "M2M_GUARD_JWKS_MAX_BYTES": "32768",
        "M2M_GUARD_JWKS_MAX_KEYS": "20",
        "M2M_GUARD_HTTP_TIMEOUT": "1.5s",
        "M2M_GUARD_TOKEN_CACHE_SIZE": "0",
        "M2M_GUARD_REALM": "deployments",
        "M2M_GUARD_ALLOW_HTTP": "false",
        "PATH": "/usr/bin",  # other variables are none of our business
        "M2M_GUARDIAN": "x",  # nor those that only look alike without the prefix's underscore
    }
    s = GuardSettings.from_env(environ=environ)
    assert [i.issuer for i in s.issuers] == [ISSUER, "https://b.example"]
    assert s.audience == ("deployment-api", "billing-api")
    assert s.verify_audience is True
    assert s.algorithms == ("RS256", "ES256")
    assert s.leeway == 0.25
    assert s.strict_typ is True
    assert s.scope_claims == ("scopes", "permissions")
    assert s.required_claims == ("jti", "sub")
    assert s.public_paths == ("/health", "/docs*")
    assert s.required is False
    assert s.allow_cors_preflight is False
    assert s.max_token_bytes == 8192
    assert s.jwks_cache_ttl == 300.0
    assert s.jwks_min_ttl == 30.0
    assert s.jwks_max_ttl == 3600.0
    assert s.jwks_refetch_cooldown == 10.0
    assert s.jwks_max_stale == 86400.0
    assert s.jwks_max_bytes == 32768
    assert s.jwks_max_keys == 20
    assert s.http_timeout == 1.5
    assert s.token_cache_size == 0
    assert s.realm == "deployments"
    assert s.allow_http is False


def test_every_field_has_an_environment_variable() -> None:
    from m2m_guard.settings import _ENV_PARSERS

    fields = {f.name for f in dataclasses.fields(GuardSettings)}
    assert set(_ENV_PARSERS) == fields


def test_from_env_jwks_url_single_issuer() -> None:
    s = GuardSettings.from_env(environ=env(jwks_url=f"{ISSUER}/keys"))
    assert s.issuers == (IssuerSettings(ISSUER, f"{ISSUER}/keys"),)
    assert s.jwks_url == f"{ISSUER}/keys"


def test_from_env_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(__import__("os").environ):
        if key.startswith("M2M_GUARD_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("M2M_GUARD_ISSUER", ISSUER)
    monkeypatch.setenv("M2M_GUARD_AUDIENCE", "from-os")
    assert GuardSettings.from_env().audience == ("from-os",)


def test_from_env_overrides_win_and_skip_parsing() -> None:
    s = GuardSettings.from_env(environ=env(realm="bad\"realm", leeway="soon"), realm="given",
                               leeway=5)
    assert s.realm == "given"
    assert s.leeway == 5.0


def test_from_env_custom_prefix() -> None:
    s = GuardSettings.from_env(environ={"APP_AUTH_ISSUER": ISSUER, "APP_AUTH_AUDIENCE": "a",
                                        "M2M_GUARD_REALM": "ignored-here"}, prefix="APP_AUTH_")
    assert s.audience == ("a",)
    assert s.realm == "api"


# -- durations --------------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "seconds"), [
    ("30", 30.0), ("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("250ms", 0.25), ("1d", 86400.0),
    ("0", 0.0), ("1.5", 1.5), (" 2m ", 120.0), ("10S", 10.0), ("2 h", 7200.0),
])
def test_durations(raw: str, seconds: float) -> None:
    assert parse_duration(raw) == seconds
    assert GuardSettings.from_env(environ=env(leeway=raw)).leeway == seconds


@pytest.mark.parametrize("raw", ["", "-5", "5x", "1h30m", "five", "nan", "inf", "1e3", "5 m s",
                                 "0x10", "+5"])
def test_bad_duration_from_env(raw: str) -> None:
    message = env_error(env(leeway=raw))
    assert message == (f"M2M_GUARD_LEEWAY={raw!r} is invalid: expected a duration such as "
                       f"30, 30s, 5m, 1h or 1d.")


@pytest.mark.parametrize("value", [-1, float("nan"), float("inf"), True, "soon", None, [1]])
def test_bad_duration_in_constructor(value: Any) -> None:
    with pytest.raises(ConfigurationError) as info:
        GuardSettings(issuer=ISSUER, audience="a", leeway=value)
    message = str(info.value)
    assert message.startswith("leeway must be ")
    assert message.endswith(f"got {value!r}.")


def test_constructor_accepts_duration_strings() -> None:
    s = GuardSettings(issuer=ISSUER, audience="a", leeway="1m", jwks_cache_ttl="2h",  # type: ignore[arg-type]
                      http_timeout="500ms")  # type: ignore[arg-type]
    assert (s.leeway, s.jwks_cache_ttl, s.http_timeout) == (60.0, 7200.0, 0.5)


def test_jwks_cache_ttl_auto_and_zero() -> None:
    assert GuardSettings.from_env(environ=env(jwks_cache_ttl="auto")).jwks_cache_ttl is None
    assert GuardSettings.from_env(environ=env(jwks_cache_ttl="")).jwks_cache_ttl is None
    assert env_error(env(jwks_cache_ttl="0")) == (
        "M2M_GUARD_JWKS_CACHE_TTL must be greater than 0, got 0.0.")


def test_http_timeout_must_be_positive() -> None:
    assert env_error(env(http_timeout="0")) == (
        "M2M_GUARD_HTTP_TIMEOUT must be greater than 0, got 0.0.")
    with pytest.raises(ConfigurationError, match=r"^http_timeout must be greater than 0, got 0.0"):
        GuardSettings(issuer=ISSUER, audience="a", http_timeout=0)


def test_min_ttl_must_not_exceed_max_ttl() -> None:
    assert env_error(env(jwks_min_ttl="2h", jwks_max_ttl="1h")) == (
        "M2M_GUARD_JWKS_MIN_TTL must not exceed jwks_max_ttl, got 7200.0 > 3600.0.")


# -- booleans and integers --------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "value"), [
    ("true", True), ("TRUE", True), ("1", True), ("yes", True), ("on", True), (" True ", True),
    ("false", False), ("0", False), ("no", False), ("off", False), ("False", False),
])
def test_booleans(raw: str, value: bool) -> None:
    assert GuardSettings.from_env(environ=env(strict_typ=raw)).strict_typ is value


@pytest.mark.parametrize("raw", ["", "maybe", "2", "t", "enabled", "y"])
def test_bad_boolean(raw: str) -> None:
    assert env_error(env(required=raw)) == (
        f"M2M_GUARD_REQUIRED={raw!r} is invalid: expected true or false.")


@pytest.mark.parametrize("name", ["verify_audience", "strict_typ", "required",
                                  "allow_cors_preflight", "allow_http"])
def test_boolean_fields_refuse_non_booleans(name: str) -> None:
    with pytest.raises(ConfigurationError, match=rf"^{name} must be True or False, got 'false'"):
        GuardSettings(issuer=ISSUER, audience="a", **{name: "false"})


@pytest.mark.parametrize("raw", ["big", "1.5", "", "0x10", "1e4"])
def test_bad_integer(raw: str) -> None:
    assert env_error(env(max_token_bytes=raw)) == (
        f"M2M_GUARD_MAX_TOKEN_BYTES={raw!r} is invalid: expected an integer.")


@pytest.mark.parametrize(("name", "raw", "low"), [
    ("max_token_bytes", "10", 64), ("jwks_max_bytes", "100", 256), ("jwks_max_keys", "0", 1),
    ("token_cache_size", "-1", 0),
])
def test_integer_lower_bounds(name: str, raw: str, low: int) -> None:
    assert env_error(env(**{name: raw})) == (
        f"M2M_GUARD_{name.upper()} must be an integer >= {low}, got {int(raw)}.")


@pytest.mark.parametrize("value", [True, 100.0, "100"])
def test_integer_fields_refuse_other_types(value: Any) -> None:
    with pytest.raises(ConfigurationError, match=r"^max_token_bytes must be an integer >= 64"):
        GuardSettings(issuer=ISSUER, audience="a", max_token_bytes=value)


# -- missing issuer / audience ---------------------------------------------------------------

def test_missing_audience_names_variable_and_the_way_out() -> None:
    message = env_error({"M2M_GUARD_ISSUER": ISSUER})
    assert message.startswith("M2M_GUARD_AUDIENCE is not set: ")
    assert "M2M_GUARD_VERIFY_AUDIENCE=false" in message
    # an empty value is the same as a missing one
    assert env_error(env(audience=" , ")).startswith("M2M_GUARD_AUDIENCE is not set: ")


def test_missing_issuer_names_variable() -> None:
    message = env_error({"M2M_GUARD_AUDIENCE": "a"})
    assert message.startswith("M2M_GUARD_ISSUER is not set: ")
    assert "https://" in message  # shows what is expected
    assert env_error(env(issuer="")) == (
        "M2M_GUARD_ISSUER='' is invalid: expected one or more issuer URLs, comma-separated.")


def test_constructor_messages_name_the_field() -> None:
    with pytest.raises(ConfigurationError, match=r"^audience is not set: .*verify_audience=False"):
        GuardSettings(issuer=ISSUER)
    with pytest.raises(ConfigurationError, match=r"^issuer is not set: "):
        GuardSettings(audience="a")
    with pytest.raises(ConfigurationError, match=r"^audience must hold non-empty strings"):
        GuardSettings(issuer=ISSUER, audience=["a", ""])
    with pytest.raises(ConfigurationError, match=r"^audience must hold non-empty strings"):
        GuardSettings(issuer=ISSUER, audience=["a", 3])
    with pytest.raises(ConfigurationError, match=r"^audience must be a string or a list"):
        GuardSettings(issuer=ISSUER, audience=3)  # type: ignore[arg-type]


def test_verify_audience_false_allows_no_audience() -> None:
    s = GuardSettings.from_env(environ={"M2M_GUARD_ISSUER": ISSUER,
                                        "M2M_GUARD_VERIFY_AUDIENCE": "false"})
    assert s.verify_audience is False
    assert s.audience == ()
    assert GuardSettings(issuer=ISSUER, verify_audience=False).audience == ()
    assert GuardSettings(issuer=ISSUER, audience=None, verify_audience=False).audience == ()


# -- unknown variables ------------------------------------------------------------------------

def test_unknown_variable_with_did_you_mean() -> None:
    assert env_error(env(audiance="x")) == (
        "Unknown m2m_guard option(s) in environment: M2M_GUARD_AUDIANCE "
        "(did you mean M2M_GUARD_AUDIENCE?).")


def test_unknown_variables_all_listed_even_without_hint() -> None:
    message = env_error(env(jwks_ttl="5m", zzz="1"))
    assert message.startswith("Unknown m2m_guard option(s) in environment: ")
    assert "M2M_GUARD_JWKS_TTL (did you mean M2M_GUARD_JWKS_" in message
    assert "M2M_GUARD_ZZZ" in message
    assert "M2M_GUARD_ZZZ (" not in message


def test_variable_names_are_case_sensitive() -> None:
    environ = dict(BASE)
    environ["M2M_GUARD_realm"] = "lower"
    with pytest.raises(ConfigurationError) as caught:
        GuardSettings.from_env(environ=environ)
    assert str(caught.value) == ("Unknown m2m_guard option(s) in environment: "
                                 "M2M_GUARD_realm (did you mean M2M_GUARD_REALM?).")


def test_empty_scope_claims_is_refused() -> None:
    environ = dict(BASE)
    environ["M2M_GUARD_SCOPE_CLAIMS"] = " , "
    with pytest.raises(ConfigurationError) as caught:
        GuardSettings.from_env(environ=environ)
    assert str(caught.value).startswith(
        "M2M_GUARD_SCOPE_CLAIMS must name at least one claim, got none")


def test_did_you_mean_ignores_the_shared_prefix() -> None:
    message = env_error(env(leway="1", public_path="/x"))
    assert message == ("Unknown m2m_guard option(s) in environment: "
                       "M2M_GUARD_LEWAY (did you mean M2M_GUARD_LEEWAY?), "
                       "M2M_GUARD_PUBLIC_PATH (did you mean M2M_GUARD_PUBLIC_PATHS?).")


# -- URLs -------------------------------------------------------------------------------------

@pytest.mark.parametrize("url", ["http://127.0.0.1:8080", "http://[::1]:9000", "http://localhost",
                                 "http://127.1.2.3", "https://yourenv.scalekit.dev"])
def test_https_or_loopback_http_accepted(url: str) -> None:
    assert GuardSettings(issuer=url, audience="a").issuers[0].issuer == url


@pytest.mark.parametrize("url", ["http://yourenv.scalekit.dev", "http://10.0.0.5",
                                 "http://localhost.evil.example", "http://127.0.0.1.nip.io"])
def test_plain_http_refused_unless_allowed(url: str) -> None:
    message = env_error(env(issuer=url))
    assert message == (
        f"M2M_GUARD_ISSUER is {url!r}: plain http is only accepted for loopback addresses "
        f"(127.0.0.1, ::1, localhost). Use https, or set allow_http=True "
        f"(M2M_GUARD_ALLOW_HTTP=true) for a trusted private network.")
    s = GuardSettings.from_env(environ=env(issuer=url, allow_http="true"))
    assert s.issuers[0].issuer == url


def test_plain_http_jwks_url_refused() -> None:
    assert env_error(env(jwks_url="http://keys.example/jwks")).startswith(
        "M2M_GUARD_JWKS_URL is 'http://keys.example/jwks': plain http is only accepted")


@pytest.mark.parametrize("url", ["ftp://x.example", "yourenv.scalekit.dev", "https://",
                                 "https://x.example/#frag", "/relative"])
def test_malformed_issuer_urls(url: str) -> None:
    message = env_error(env(issuer=url))
    assert message == (f"M2M_GUARD_ISSUER must be an absolute https URL without a fragment, "
                       f"got {url!r}.")


def test_issuer_with_credentials_refused() -> None:
    message = env_error(env(issuer="https://user:secret@x.example"))
    assert message.startswith("M2M_GUARD_ISSUER must not carry credentials")
    assert "secret" not in message


# -- algorithms, realm, public paths ----------------------------------------------------------

@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512", "none", "None", "rs256", "ES256K"])
def test_symmetric_or_unknown_algorithms_refused(alg: str) -> None:
    message = env_error(env(algorithms=f"RS256,{alg}"))
    assert message.startswith(f"M2M_GUARD_ALGORITHMS contains {alg!r}: only asymmetric "
                              f"algorithms are accepted")
    assert "HS* never are" in message


def test_empty_algorithms_refused() -> None:
    assert env_error(env(algorithms=",")) == (
        "M2M_GUARD_ALGORITHMS must name at least one algorithm.")


@pytest.mark.parametrize("realm", ['a"b', "a\\b", "", "x" * 129, "caf\u00e9", "a\nb"])
def test_bad_realm_refused(realm: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        GuardSettings(issuer=ISSUER, audience="a", realm=realm)
    assert str(info.value) == (
        f"realm must be 1-128 printable ASCII characters without quotes or backslashes, "
        f"got {realm!r}.")


def test_realm_from_env_with_quote() -> None:
    assert env_error(env(realm='my"api')).startswith("M2M_GUARD_REALM must be 1-128 printable")


@pytest.mark.parametrize("paths", [("/health",), ("/docs*",), ("/",), ("/*",),
                                   ("/a/b.json", "/static/*")])
def test_public_path_patterns_accepted(paths: tuple[str, ...]) -> None:
    assert GuardSettings(issuer=ISSUER, audience="a", public_paths=paths).public_paths == paths


@pytest.mark.parametrize("path", ["health", "*", "/a*b", "/a b", "/**", "https://x/health",
                                  "/caf\u00e9", ""])
def test_public_path_patterns_refused(path: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        GuardSettings(issuer=ISSUER, audience="a", public_paths=[path])
    message = str(info.value)
    assert message.startswith("public_paths ")
    assert repr(path) in message


def test_public_paths_from_env_message() -> None:
    assert env_error(env(public_paths="/health,docs")) == (
        "M2M_GUARD_PUBLIC_PATHS contains 'docs': each entry is an absolute path such as /health, "
        "or a prefix ending in * such as /docs*.")


# -- issuers and jwks_url ---------------------------------------------------------------------

def test_several_issuers_with_one_jwks_url_refused() -> None:
    message = env_error(env(issuer=f"{ISSUER},https://b.example", jwks_url=f"{ISSUER}/keys"))
    assert message.startswith("M2M_GUARD_JWKS_URL applies to a single issuer")
    assert "IssuerSettings" in message


def test_issuer_settings_per_issuer() -> None:
    s = GuardSettings(issuer=[IssuerSettings(ISSUER, jwks_url=f"{ISSUER}/keys"),
                              IssuerSettings("https://b.example"),
                              "https://c.example"], audience="a")
    assert s.issuers == (IssuerSettings(ISSUER, f"{ISSUER}/keys"),
                         IssuerSettings("https://b.example", None),
                         IssuerSettings("https://c.example", None))
    assert s.issuer_for("https://b.example") == IssuerSettings("https://b.example")


def test_issuer_settings_are_validated() -> None:
    with pytest.raises(ConfigurationError, match=r"^jwks_url is 'http://keys.example/k'"):
        GuardSettings(issuer=IssuerSettings(ISSUER, "http://keys.example/k"), audience="a")
    with pytest.raises(ConfigurationError, match=r"configured twice"):
        GuardSettings(issuer=[ISSUER, IssuerSettings(ISSUER, f"{ISSUER}/keys")], audience="a")
    with pytest.raises(ConfigurationError, match=r"^issuer must hold non-empty strings"):
        GuardSettings(issuer=[IssuerSettings("")], audience="a")
    with pytest.raises(ConfigurationError, match=r"given twice with different values"):
        GuardSettings(issuer=IssuerSettings(ISSUER, f"{ISSUER}/a"), jwks_url=f"{ISSUER}/b",
                      audience="a")
    same = GuardSettings(issuer=IssuerSettings(ISSUER, f"{ISSUER}/a"), jwks_url=f"{ISSUER}/a",
                         audience="a")
    assert same.issuers == (IssuerSettings(ISSUER, f"{ISSUER}/a"),)


def test_duplicate_issuers_refused() -> None:
    assert env_error(env(issuer=f"{ISSUER},{ISSUER}")) == (
        f"M2M_GUARD_ISSUER {ISSUER!r} is configured twice.")


# -- replace() and from_mapping() -------------------------------------------------------------

def test_replace_validates_and_keeps_the_original() -> None:
    s = GuardSettings(issuer=ISSUER, audience="a", jwks_url=f"{ISSUER}/keys")
    t = s.replace(realm="other", leeway="1m")
    assert (t.realm, t.leeway) == ("other", 60.0)
    assert (s.realm, s.leeway) == ("api", 30.0)
    assert t.issuers == s.issuers  # jwks_url kept while the issuer is unchanged
    with pytest.raises(ConfigurationError, match=r"^realm must be"):
        s.replace(realm='a"b')
    with pytest.raises(TypeError):
        s.replace(no_such_option=1)
    u = s.replace(issuer="https://b.example")
    assert u.issuers == (IssuerSettings("https://b.example", None),)  # old jwks_url dropped
    v = s.replace(jwks_url=f"{ISSUER}/other")
    assert v.issuers == (IssuerSettings(ISSUER, f"{ISSUER}/other"),)


def test_replace_to_several_issuers() -> None:
    s = GuardSettings(issuer=ISSUER, audience="a", jwks_url=f"{ISSUER}/keys")
    t = s.replace(issuer=[ISSUER, "https://b.example"])
    assert [i.jwks_url for i in t.issuers] == [None, None]


def test_from_mapping() -> None:
    s = GuardSettings.from_mapping({"issuer": ISSUER, "audience": ["a"], "leeway": "10s"})
    assert s.leeway == 10.0 and s.audience == ("a",)
    with pytest.raises(ConfigurationError) as info:
        GuardSettings.from_mapping({"issuer": ISSUER, "audiance": "a"}, source="M2M_GUARD")
    assert str(info.value) == ("Unknown m2m_guard option(s) in M2M_GUARD: audiance "
                               "(did you mean audience?).")
    with pytest.raises(ConfigurationError, match=r"^Unknown m2m_guard option\(s\) in settings: "
                                                 r"JWKS_URL \(did you mean jwks_url\?\), zzz\.$"):
        GuardSettings.from_mapping({"issuer": ISSUER, "audience": "a", "zzz": 1, "JWKS_URL": "x"})


def test_messages_are_single_line_and_do_not_leak_other_values() -> None:
    environ = env(leeway="oops")
    environ["M2M_GUARD_AUDIENCE"] = "deployment-api"
    message = env_error(environ)
    assert "\n" not in message
    assert re.search(r"deployment-api", message) is None
