"""Configuration: `GuardSettings`, `IssuerSettings`, and reading them from `M2M_GUARD_*` variables.

Everything is validated when the settings are built, so a running guard never meets a bad value:
a missing or invalid option raises `ConfigurationError` naming the option (or the environment
variable), the value given and what is expected.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import json
import math
import os
import re
import ssl
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ._core.providers import PROVIDERS, preset
from ._core.requirements import ClaimRequirement
from ._core.scopes import scope_claim_path
from .errors import ConfigurationError

__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "ENV_PREFIX",
    "GuardSettings",
    "IssuerSettings",
    "parse_duration",
]

ENV_PREFIX = "M2M_GUARD_"
# Process-level switches read by other modules at import, not settings of a guard.
_PROCESS_VARIABLES = frozenset({"M2M_GUARD_SPEEDUPS"})

ASYMMETRIC_ALGORITHMS: tuple[str, ...] = (
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
)

DEFAULT_JWKS_TTL = 600.0
_DEFAULT_CLIENT_ID_CLAIMS = ("client_id", "azp", "cid", "appid", "sub")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$", re.IGNORECASE)
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
# RFC 7235 quoted-string content we allow in a realm: printable ASCII without '"' and '\'.
_REALM = re.compile(r"^[\x20\x21\x23-\x5b\x5d-\x7e]{1,128}$")
_PATH_PATTERN = re.compile(r"^/[\x21-\x7e]*$")


def parse_duration(value: str | float | int) -> float:
    """Parse seconds given as a number or as ``"30s"``, ``"5m"``, ``"1h"``, ``"1d"``, ``"250ms"``.

    Raises `ValueError` for anything else, negative or non-finite values included.
    """
    if isinstance(value, bool):
        raise ValueError("a duration, not a boolean")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _DURATION.match(value)
        if match is None:
            raise ValueError("a duration such as 30, 30s, 5m, 1h or 1d")
        seconds = float(match.group(1)) * _UNITS[(match.group(2) or "s").lower()]
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError("a non-negative, finite duration")
    return seconds


def _is_loopback_host(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_url(name: str, url: str, *, allow_http: bool) -> str:
    if not isinstance(url, str) or not url:
        raise ConfigurationError(f"{name} must be a non-empty URL, got {url!r}.")
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.netloc or parts.fragment:
        raise ConfigurationError(
            f"{name} must be an absolute https URL without a fragment, got {url!r}."
        )
    if parts.username or parts.password:
        raise ConfigurationError(f"{name} must not carry credentials, got a URL with user info.")
    if parts.scheme == "http" and not (allow_http or _is_loopback_host(parts.hostname)):
        raise ConfigurationError(
            f"{name} is {url!r}: plain http is only accepted for loopback addresses "
            f"(127.0.0.1, ::1, localhost). Use https, or set allow_http=True "
            f"(M2M_GUARD_ALLOW_HTTP=true) for a trusted private network."
        )
    return url


@dataclass(frozen=True, slots=True)
class IssuerSettings:
    """One trusted token issuer: its exact `iss` value and, optionally, its JWKS URL.

    Without `jwks_url` the key set is found by discovery (OpenID Connect, then RFC 8414).
    """

    issuer: str
    jwks_url: str | None = None


def _as_tuple(name: str, value: Any) -> tuple[Any, ...]:
    if value is None:
        return ()
    if isinstance(value, (str, IssuerSettings)):
        return (value,)
    if isinstance(value, Iterable):
        return tuple(value)
    raise ConfigurationError(f"{name} must be a string or a list of strings, got {value!r}.")


def _str_tuple(name: str, value: Any) -> tuple[str, ...]:
    items = _as_tuple(name, value)
    for item in items:
        if not isinstance(item, str) or not item:
            raise ConfigurationError(f"{name} must hold non-empty strings, got {item!r}.")
    return tuple(dict.fromkeys(items))


@dataclass(frozen=True, slots=True)
class GuardSettings:
    """Everything the guard needs to decide on a request. Immutable; validated on creation.

    `issuer` and `audience` accept one string or several. `issuer` may also hold
    `IssuerSettings` to give each issuer its own `jwks_url`. Durations are seconds.
    `jwks_cache_ttl=None` means 600 s, replaced by the key set's `Cache-Control: max-age`
    clamped to [60 s, 24 h]; a TTL you set is used as given.
    """

    issuer: tuple[IssuerSettings, ...] | str | Sequence[str | IssuerSettings] = ()
    audience: tuple[str, ...] | str | Sequence[str] | None = ()
    verify_audience: bool = True
    jwks_url: str | None = None
    algorithms: tuple[str, ...] | Sequence[str] = ASYMMETRIC_ALGORITHMS
    leeway: float = 30.0
    strict_typ: bool = False
    scope_claims: tuple[str, ...] | Sequence[str] = ("scopes", "scope", "scp")
    required_claims: tuple[str, ...] | Sequence[str] = ()
    public_paths: tuple[str, ...] | Sequence[str] = ()
    required: bool = True
    allow_cors_preflight: bool = True
    max_token_bytes: int = 16384
    jwks_cache_ttl: float | None = None
    jwks_min_ttl: float = 60.0
    jwks_max_ttl: float = 86400.0
    jwks_refetch_cooldown: float = 30.0
    jwks_max_stale: float = 86400.0
    jwks_max_bytes: int = 65536
    jwks_max_keys: int = 100
    http_timeout: float = 5.0
    token_cache_size: int = 10000
    realm: str = "api"
    allow_http: bool = False
    token_url: str | None = None
    health_path: str | None = None
    resource: str | None = None
    resource_metadata_url: str | None = None
    resource_scopes: tuple[str, ...] | Sequence[str] = ()
    events_client_id: bool = False
    ca_bundle: str | None = None
    # Rules for the whole app, and provider presets (docs/providers.md): `_check_rules`.
    allowed_clients: tuple[str, ...] | Sequence[str] = ()
    required_claim_values: (tuple[tuple[str | tuple[str, ...], tuple[str | int | bool, ...]], ...]
                            | Mapping[str | tuple[str, ...], Any]) = ()
    provider: str = "scalekit"
    client_id_claims: tuple[str, ...] | Sequence[str] = _DEFAULT_CLIENT_ID_CLAIMS
    machine_tokens_only: bool = False
    trusted_proxies: tuple[str, ...] | Sequence[str] = ()
    client_cert_header: str = "x-forwarded-client-cert"
    # DPoP (RFC 9449), docs/dpop.md; validated by `_check_dpop`.
    dpop: str = "off"
    dpop_algorithms: tuple[str, ...] | Sequence[str] = ASYMMETRIC_ALGORITHMS
    dpop_iat_window: float = 60.0
    dpop_replay_store: str | None = None
    dpop_replay_max_entries: int = 100000
    dpop_forwarded_headers: tuple[str, ...] | Sequence[str] = ()
    dpop_nonce: bool = False
    dpop_nonce_lifetime: float = 300.0
    dpop_nonce_secret: str | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        _apply_preset(self)
        issuers: list[IssuerSettings] = []
        for item in _as_tuple("issuer", self.issuer):
            entry = item if isinstance(item, IssuerSettings) else IssuerSettings(item)
            if not isinstance(entry.issuer, str) or not entry.issuer:
                raise ConfigurationError(f"issuer must hold non-empty strings, got {item!r}.")
            issuers.append(entry)
        if not issuers:
            raise ConfigurationError(
                "issuer is not set: give the issuer URL of your authorization server "
                "(GuardSettings(issuer=...) or M2M_GUARD_ISSUER), "
                "e.g. https://yourenv.scalekit.dev"
            )
        if self.jwks_url is not None:
            if len(issuers) != 1:
                raise ConfigurationError(
                    "jwks_url applies to a single issuer; with several issuers give each its "
                    "own IssuerSettings(issuer=..., jwks_url=...)."
                )
            if issuers[0].jwks_url not in (None, self.jwks_url):
                raise ConfigurationError("jwks_url is given twice with different values.")
            issuers[0] = IssuerSettings(issuers[0].issuer, self.jwks_url)
        seen: set[str] = set()
        for entry in issuers:
            _check_url("issuer", entry.issuer, allow_http=self.allow_http)
            if entry.jwks_url is not None:
                _check_url("jwks_url", entry.jwks_url, allow_http=self.allow_http)
            if entry.issuer in seen:
                raise ConfigurationError(f"issuer {entry.issuer!r} is configured twice.")
            seen.add(entry.issuer)
        set_(self, "issuer", tuple(issuers))

        audience = _str_tuple("audience", self.audience)
        if self.verify_audience and not audience:
            raise ConfigurationError(
                "audience is not set: give the audience your API expects in tokens' aud claim "
                "(GuardSettings(audience=...) or M2M_GUARD_AUDIENCE), or turn audience checking "
                "off explicitly with verify_audience=False (M2M_GUARD_VERIFY_AUDIENCE=false)."
            )
        set_(self, "audience", audience)

        algorithms = _str_tuple("algorithms", self.algorithms)
        if not algorithms:
            raise ConfigurationError("algorithms must name at least one algorithm.")
        for alg in algorithms:
            if alg not in ASYMMETRIC_ALGORITHMS:
                raise ConfigurationError(
                    f"algorithms contains {alg!r}: only asymmetric algorithms are accepted with "
                    f"a JWKS ({', '.join(ASYMMETRIC_ALGORITHMS)}); 'none' and HS* never are."
                )
        set_(self, "algorithms", algorithms)

        set_(self, "scope_claims", _str_tuple("scope_claims", self.scope_claims))
        if not self.scope_claims:
            raise ConfigurationError(
                "scope_claims must name at least one claim, got none: without one no token "
                "would hold any scope (the default is scopes, scope, scp)."
            )
        set_(self, "required_claims", _str_tuple("required_claims", self.required_claims))
        paths = _str_tuple("public_paths", self.public_paths)
        for path in paths:
            if not _PATH_PATTERN.match(path) or "*" in path[:-1]:
                raise ConfigurationError(
                    f"public_paths contains {path!r}: each entry is an absolute path such as "
                    f"/health, or a prefix ending in * such as /docs*."
                )
        set_(self, "public_paths", paths)

        for name in ("leeway", "jwks_min_ttl", "jwks_max_ttl", "jwks_refetch_cooldown",
                     "jwks_max_stale", "http_timeout"):
            set_(self, name, self._duration(name, getattr(self, name)))
        if self.jwks_cache_ttl is not None:
            set_(self, "jwks_cache_ttl", self._duration("jwks_cache_ttl", self.jwks_cache_ttl))
            if self.jwks_cache_ttl <= 0:
                raise ConfigurationError(
                    f"jwks_cache_ttl must be greater than 0, got {self.jwks_cache_ttl!r}.")
        if self.http_timeout <= 0:
            raise ConfigurationError(
                f"http_timeout must be greater than 0, got {self.http_timeout!r}.")
        if self.jwks_min_ttl > self.jwks_max_ttl:
            raise ConfigurationError(f"jwks_min_ttl must not exceed jwks_max_ttl, got "
                                     f"{self.jwks_min_ttl!r} > {self.jwks_max_ttl!r}.")
        for name, low in (("max_token_bytes", 64), ("jwks_max_bytes", 256), ("jwks_max_keys", 1),
                          ("token_cache_size", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigurationError(f"{name} must be an integer >= {low}, got {value!r}.")
        for name in ("verify_audience", "strict_typ", "required", "allow_cors_preflight",
                     "allow_http", "events_client_id"):
            if not isinstance(getattr(self, name), bool):
                value = getattr(self, name)
                raise ConfigurationError(f"{name} must be True or False, got {value!r}.")
        if self.token_url is not None:
            # Documentation only (OpenAPI's client-credentials flow): clients get tokens there.
            _check_url("token_url", self.token_url, allow_http=self.allow_http)
        if not isinstance(self.realm, str) or not _REALM.match(self.realm):
            raise ConfigurationError(
                f"realm must be 1-128 printable ASCII characters without quotes or backslashes, "
                f"got {self.realm!r}."
            )
        _check_operations(self)
        _check_rules(self)
        _check_dpop(self)
        if self.ca_bundle is not None:
            _check_ca_bundle(self.ca_bundle)
        _check_client_certificates(self)
        if self.dpop_forwarded_headers and not self.trusted_proxies:
            raise ConfigurationError(
                "dpop_forwarded_headers needs trusted_proxies: forwarded headers decide the URL a "
                "DPoP proof must name, so they are believed only from your proxies; set "
                "M2M_GUARD_TRUSTED_PROXIES to the proxies' addresses or networks (e.g. "
                "10.0.0.0/8).")

    @staticmethod
    def _duration(name: str, value: Any) -> float:
        try:
            return parse_duration(value)
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(f"{name} must be {exc}, got {value!r}.") from None

    # Typed views of the normalised fields (the constructor accepts looser input types).
    @property
    def issuers(self) -> tuple[IssuerSettings, ...]:
        return self.issuer  # type: ignore[return-value]

    @property
    def audiences(self) -> tuple[str, ...]:
        return self.audience  # type: ignore[return-value]

    def issuer_for(self, iss: str) -> IssuerSettings | None:
        """The configured issuer whose `issuer` equals `iss` exactly, or None."""
        for entry in self.issuers:
            if entry.issuer == iss:
                return entry
        return None

    def replace(self, **changes: Any) -> GuardSettings:
        """A copy with `changes` applied (validated again)."""
        current = {name: getattr(self, name) for name in public_fields()}
        if "issuer" in changes or "jwks_url" in changes:
            current["jwks_url"] = None
        if "jwks_url" in changes and "issuer" not in changes and self.jwks_url is not None:
            # the single issuer carries the old jwks_url: drop it so the new one applies
            current["issuer"] = (IssuerSettings(self.issuers[0].issuer),)
        current.update(changes)
        return GuardSettings(**current)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, source: str = "settings") -> GuardSettings:
        """Build from a mapping whose keys are field names (as in Django's ``M2M_GUARD = {...}``).

        Unknown keys raise `ConfigurationError` with the closest valid name.
        """
        names = public_fields()
        unknown = [key for key in values if key not in names]
        if unknown:
            raise ConfigurationError(unknown_names_message(source, unknown, names))
        return cls(**dict(values))

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        prefix: str = ENV_PREFIX,
        **overrides: Any,
    ) -> GuardSettings:
        """Read settings from `M2M_GUARD_*` variables; `overrides` (field names) win over them.

        Lists are comma-separated, booleans true/false (1/0, yes/no, on/off), durations seconds or
        30s / 5m / 1h. Raises `ConfigurationError` naming the variable, its value and what is
        expected; an unknown `M2M_GUARD_*` variable is an error too (a typo would otherwise be
        silently ignored).
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        names = public_fields()
        unknown = []
        for key, raw in env.items():
            if not key.startswith(prefix) or key in _PROCESS_VARIABLES:
                continue
            suffix = key[len(prefix):]
            name = suffix.lower()
            # Environment names are case-sensitive: M2M_GUARD_realm is not M2M_GUARD_REALM.
            if name not in names or suffix != name.upper():
                unknown.append(key)
                continue
            if name in overrides:
                continue
            parser = _ENV_PARSERS[name]
            try:
                values[name] = parser(raw)
            except ValueError as exc:
                raise ConfigurationError(f"{key}={raw!r} is invalid: expected {exc}.") from None
        if unknown:
            env_names = {prefix + n.upper() for n in names}
            raise ConfigurationError(unknown_names_message("environment", unknown, env_names,
                                                      prefix=prefix))
        values.update(overrides)
        try:
            return cls(**values)
        except ConfigurationError as exc:
            raise ConfigurationError(_env_wording(str(exc), prefix)) from None


def _apply_preset(settings: GuardSettings) -> None:
    """Fill the options `settings.provider`'s preset names and the user left at their
    defaults (`_core/providers.py`); its required claim values are added to the user's."""
    name = settings.provider
    if not isinstance(name, str):
        raise ConfigurationError(f"provider must be a string, got {name!r}.")
    try:
        chosen = preset(name)
    except ValueError as exc:
        raise ConfigurationError(f"provider must be {exc}, got {name!r}.") from None
    defaults = {f.name: f.default for f in dataclasses.fields(GuardSettings)}
    for option, value in chosen.options.items():
        current = getattr(settings, option)
        if option == "required_claim_values":
            mine = _claim_values(current)
            named = {path for path, _ in mine}
            merged = (*mine, *((path, v) for path, v in value if path not in named))
            object.__setattr__(settings, option, merged)
        elif current == defaults[option] or (
                isinstance(current, (list, tuple)) and tuple(current) == defaults[option]):
            object.__setattr__(settings, option, value)


def _claim_values(value: Any) -> tuple[tuple[Any, tuple[Any, ...]], ...]:
    """`required_claim_values` as ((path, (value, ...)), ...), from a mapping or pairs."""
    if value is None:
        return ()
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, (list, tuple)):
        items = list(value)
        if not all(isinstance(item, (list, tuple)) and len(item) == 2 for item in items):
            raise ConfigurationError(
                f"required_claim_values must map claim paths to a value or a list of values, "
                f'e.g. {{"custom_claims.environment": ["production_us"]}}, got {value!r}.')
    else:
        raise ConfigurationError(
            f"required_claim_values must map claim paths to a value or a list of values, "
            f'e.g. {{"custom_claims.environment": ["production_us"]}}, got {value!r}.')
    result = []
    for path, values in items:
        if isinstance(path, list):
            path = tuple(path)
        if isinstance(values, (str, int)):
            values = (values,)
        elif isinstance(values, (list, tuple, set, frozenset)):
            values = tuple(values)
        result.append((path, values))
    return tuple(result)


def _check_rules(settings: GuardSettings) -> None:
    """Validate the app-wide rules and the preset options: the claim paths and values, the
    client ids, the client-id claims, nested scope claims and machine_tokens_only."""
    set_ = object.__setattr__
    clients = _str_tuple("allowed_clients", settings.allowed_clients)
    for client in clients:
        if client != client.strip():
            raise ConfigurationError(
                f"allowed_clients contains {client!r}: client ids have no surrounding spaces.")
    set_(settings, "allowed_clients", clients)
    values = _claim_values(settings.required_claim_values)
    for path, allowed in values:
        try:
            ClaimRequirement(path, allowed)
        except ValueError as exc:
            raise ConfigurationError(
                f"required_claim_values is invalid: {exc} (give a JSON object such as "
                f'{{"custom_claims.environment": ["production_us"]}}).') from None
    set_(settings, "required_claim_values", values)
    claims = _str_tuple("client_id_claims", settings.client_id_claims)
    if not claims:
        raise ConfigurationError(
            "client_id_claims must name at least one claim (the default is "
            f"{','.join(_DEFAULT_CLIENT_ID_CLAIMS)}).")
    set_(settings, "client_id_claims", claims)
    for name in settings.scope_claims:
        try:
            scope_claim_path(name)
        except ValueError as exc:
            raise ConfigurationError(f"scope_claims contains {name!r}: {exc}.") from None
    if not isinstance(settings.machine_tokens_only, bool):
        raise ConfigurationError(f"machine_tokens_only must be True or False, got "
                                 f"{settings.machine_tokens_only!r}.")
    if settings.machine_tokens_only and not machine_test_of(settings.provider):
        able = ", ".join(name for name in PROVIDERS if machine_test_of(name))
        raise ConfigurationError(
            f"machine_tokens_only is on but provider {settings.provider!r} gives no way to tell "
            f"a machine token from a user's; the providers that do: {able} (or write the rule "
            f"yourself with required_claim_values or require(...)).")


def machine_test_of(provider: str) -> bool:
    """True when `provider`'s tokens say whether they are machine tokens."""
    chosen = PROVIDERS.get(provider)
    return chosen is not None and (chosen.machine is not None or chosen.machine_same is not None)


# RFC 6749 §3.3 scope-token; and what may stand inside a quoted challenge parameter.
_SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+$")
_HEADER_SAFE_URL = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+$")


def _check_ca_bundle(path: Any) -> None:
    """`path` must name a readable PEM file of CA certificates (the trusted roots of the
    issuers' URLs instead of the system's: for a private CA or the local issuer's)."""
    if not isinstance(path, str) or not path:
        raise ConfigurationError(f"ca_bundle must be the path of a PEM file of CA certificates, "
                                 f"got {path!r}.")
    if not os.path.isfile(path):
        raise ConfigurationError(f"ca_bundle is {path!r}, which is not a file: give the path of "
                                 f"a PEM file of CA certificates (e.g. the local issuer's ca.pem).")
    try:
        context = ssl.create_default_context(cafile=path)
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise ConfigurationError(f"ca_bundle {path!r} cannot be read as PEM CA certificates: "
                                 f"{exc}.") from None
    if not context.get_ca_certs():
        raise ConfigurationError(f"ca_bundle {path!r} holds no CA certificate (a server "
                                 f"certificate alone cannot be trusted as a root).")


# RFC 9110 §5.1 field-name (token characters).
_FIELD_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$")


def _check_client_certificates(settings: GuardSettings) -> None:
    """Validate the options of certificate-bound tokens (RFC 8705): the trusted proxies (each
    an address or a network in CIDR notation, kept in canonical form) and the header they
    forward the client certificate in (a field name, kept in lower case)."""
    set_ = object.__setattr__
    networks: list[str] = []
    for entry in _str_tuple("trusted_proxies", settings.trusted_proxies):
        try:
            network = ipaddress.ip_network(entry.strip())
        except ValueError:
            hint = ""
            try:
                hint = (f" (did you mean {ipaddress.ip_network(entry.strip(), strict=False)}? "
                        f"the address has bits set beyond the prefix)")
            except ValueError:
                pass
            raise ConfigurationError(
                f"trusted_proxies contains {entry!r}: each entry is the address of a proxy "
                f"that terminates clients' TLS (10.0.0.5, ::1) or a network in CIDR notation "
                f"(10.0.0.0/8){hint}.") from None
        networks.append(str(network))
    set_(settings, "trusted_proxies", tuple(dict.fromkeys(networks)))
    header = settings.client_cert_header
    if not isinstance(header, str) or not _FIELD_NAME.match(header):
        raise ConfigurationError(
            f"client_cert_header must be an HTTP header name such as x-forwarded-client-cert "
            f"(Envoy), client-cert (RFC 9440) or ssl-client-cert (nginx), got {header!r}.")
    set_(settings, "client_cert_header", header.lower())


def _check_operations(settings: GuardSettings) -> None:
    """Validate the operational options: health endpoint and RFC 9728 resource metadata."""
    set_ = object.__setattr__
    path = settings.health_path
    if path is not None and (not isinstance(path, str) or not _PATH_PATTERN.match(path)
                             or "*" in path):
        raise ConfigurationError(
            f"health_path must be an absolute path such as /.well-known/m2m-guard/health "
            f"(no wildcard), got {path!r}."
        )
    for name in ("resource", "resource_metadata_url"):
        url = getattr(settings, name)
        if url is None:
            continue
        _check_url(name, url, allow_http=settings.allow_http)
        if not _HEADER_SAFE_URL.match(url):
            raise ConfigurationError(
                f"{name} must be a URL of printable ASCII without spaces, quotes or "
                f"backslashes (percent-encode them), got {url!r}."
            )
    if settings.resource is not None and urlsplit(settings.resource).query:
        raise ConfigurationError(
            f"resource must be a URL without a query (RFC 9728 §1.2), got {settings.resource!r}."
        )
    scopes = _str_tuple("resource_scopes", settings.resource_scopes)
    for scope in scopes:
        if not _SCOPE_TOKEN.match(scope):
            raise ConfigurationError(
                f"resource_scopes contains {scope!r}: each entry is one scope, without spaces, "
                f"quotes or backslashes (give several as a list, or comma-separated)."
            )
    if scopes and settings.resource is None:
        raise ConfigurationError(
            "resource_scopes is set but resource is not: the scopes are published in the "
            "resource metadata document, which is served only when resource "
            "(M2M_GUARD_RESOURCE) names this API, e.g. https://api.example.com."
        )
    set_(settings, "resource_scopes", scopes)


DPOP_MODES = ("off", "allowed", "required")
#: The forwarded headers `dpop_forwarded_headers` may name (RFC 7239 `forwarded` and the
#: de-facto X-Forwarded-* family), in the order they are read.
DPOP_FORWARDED_HEADERS = ("forwarded", "x-forwarded-proto", "x-forwarded-host",
                          "x-forwarded-port", "x-forwarded-prefix")
_REPLAY_SCHEMES = ("redis", "rediss", "unix")


def _check_dpop(settings: GuardSettings) -> None:
    """Validate the DPoP options (docs/dpop.md)."""
    set_ = object.__setattr__
    if settings.dpop not in DPOP_MODES:
        raise ConfigurationError(f"dpop must be one of off, allowed, required, got "
                                 f"{settings.dpop!r}.")
    algorithms = _str_tuple("dpop_algorithms", settings.dpop_algorithms)
    if not algorithms or any(alg not in ASYMMETRIC_ALGORITHMS for alg in algorithms):
        raise ConfigurationError(
            f"dpop_algorithms must name asymmetric algorithms "
            f"({', '.join(ASYMMETRIC_ALGORITHMS)}), got {settings.dpop_algorithms!r}.")
    set_(settings, "dpop_algorithms", algorithms)
    for name in ("dpop_iat_window", "dpop_nonce_lifetime"):
        value = GuardSettings._duration(name, getattr(settings, name))
        if value <= 0:
            raise ConfigurationError(f"{name} must be greater than 0, got {value!r}.")
        set_(settings, name, value)
    store = settings.dpop_replay_store
    if store is not None and store != "memory":
        scheme = urlsplit(store).scheme if isinstance(store, str) else ""
        if scheme not in _REPLAY_SCHEMES:
            raise ConfigurationError(
                f"dpop_replay_store must be memory or a Redis URL (redis://host:6379/0, "
                f"rediss://..., unix:///path), got {store!r}.")
    size = settings.dpop_replay_max_entries
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ConfigurationError(f"dpop_replay_max_entries must be an integer >= 1, got "
                                 f"{size!r}.")
    headers = tuple(h.lower() for h in _str_tuple("dpop_forwarded_headers",
                                                  settings.dpop_forwarded_headers))
    for header in headers:
        if header not in DPOP_FORWARDED_HEADERS:
            raise ConfigurationError(
                f"dpop_forwarded_headers contains {header!r}: name the headers your proxy sets "
                f"(and always overwrites) among {', '.join(DPOP_FORWARDED_HEADERS)}.")
    set_(settings, "dpop_forwarded_headers", headers)
    if not isinstance(settings.dpop_nonce, bool):
        raise ConfigurationError(f"dpop_nonce must be True or False, got "
                                 f"{settings.dpop_nonce!r}.")
    secret = settings.dpop_nonce_secret
    if secret is not None and (not isinstance(secret, str) or len(secret) < 16):
        raise ConfigurationError("dpop_nonce_secret must be a string of at least 16 characters "
                                 "(the same on every worker), e.g. from secrets.token_urlsafe().")


def unknown_names_message(source: str, unknown: Sequence[str], valid: Iterable[str],
                          prefix: str = "") -> str:
    """The error message for `unknown` option names found in `source`, each with the closest
    valid name when there is one (for adapters that read options from their own config)."""
    # Compare without the shared prefix, or every M2M_GUARD_* name looks "close" to any other.
    by_name = {name[len(prefix):].lower(): name for name in valid}
    parts = []
    for key in sorted(unknown):
        close = difflib.get_close_matches(key[len(prefix):].lower(), sorted(by_name), n=1)
        hint = f" (did you mean {by_name[close[0]]}?)" if close else ""
        parts.append(f"{key}{hint}")
    return f"Unknown m2m_guard option(s) in {source}: {', '.join(parts)}."


def _env_wording(message: str, prefix: str) -> str:
    """Name the environment variable rather than the field in messages raised by validation."""
    for name in sorted(public_fields(), key=len, reverse=True):
        if message.startswith(name + " "):
            return prefix + name.upper() + message[len(name):]
    return message


def public_fields() -> set[str]:
    """The names of the `GuardSettings` options (the keys of a configuration mapping)."""
    return {f.name for f in dataclasses.fields(GuardSettings) if not f.name.startswith("_")}


def _parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError("true or false")


def _parse_list(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def _parse_int(raw: str) -> int:
    try:
        return int(raw.strip())
    except ValueError:
        raise ValueError("an integer") from None


def _parse_duration_env(raw: str) -> float:
    return parse_duration(raw)


def _parse_str(raw: str) -> str:
    value = raw.strip()
    if not value:
        raise ValueError("a non-empty value")
    return value


def _parse_optional_duration(raw: str) -> float | None:
    return None if raw.strip().lower() in ("", "auto") else parse_duration(raw)


def _parse_issuers(raw: str) -> tuple[str, ...]:
    items = _parse_list(raw)
    if not items:
        raise ValueError("one or more issuer URLs, comma-separated")
    return items


def _parse_audience(raw: str) -> tuple[str, ...]:
    return _parse_list(raw)


_ENV_PARSERS: dict[str, Callable[[str], Any]] = {
    "issuer": _parse_issuers,
    "audience": _parse_audience,
    "verify_audience": _parse_bool,
    "jwks_url": _parse_str,
    "algorithms": _parse_list,
    "leeway": _parse_duration_env,
    "strict_typ": _parse_bool,
    "scope_claims": _parse_list,
    "required_claims": _parse_list,
    "public_paths": _parse_list,
    "required": _parse_bool,
    "allow_cors_preflight": _parse_bool,
    "max_token_bytes": _parse_int,
    "jwks_cache_ttl": _parse_optional_duration,
    "jwks_min_ttl": _parse_duration_env,
    "jwks_max_ttl": _parse_duration_env,
    "jwks_refetch_cooldown": _parse_duration_env,
    "jwks_max_stale": _parse_duration_env,
    "jwks_max_bytes": _parse_int,
    "jwks_max_keys": _parse_int,
    "http_timeout": _parse_duration_env,
    "token_cache_size": _parse_int,
    "realm": _parse_str,
    "allow_http": _parse_bool,
    "token_url": _parse_str,
    "health_path": _parse_str,
    "resource": _parse_str,
    "resource_metadata_url": _parse_str,
    "resource_scopes": _parse_list,
    "events_client_id": _parse_bool,
    "ca_bundle": _parse_str,
    "trusted_proxies": _parse_list,
    "client_cert_header": _parse_str,
    "dpop": _parse_str,
    "dpop_algorithms": _parse_list,
    "dpop_iat_window": _parse_duration_env,
    "dpop_replay_store": _parse_str,
    "dpop_replay_max_entries": _parse_int,
    "dpop_forwarded_headers": _parse_list,
    "dpop_nonce": _parse_bool,
    "dpop_nonce_lifetime": _parse_duration_env,
    "dpop_nonce_secret": _parse_str,
}


def _parse_claim_values(raw: str) -> tuple[tuple[Any, tuple[Any, ...]], ...]:
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise ValueError('a JSON object of claim paths and values, e.g. '
                         '{"custom_claims.environment": ["production_us"]}')
    return tuple((path, tuple(v) if isinstance(v, list) else v) for path, v in value.items())


def _parse_provider(raw: str) -> str:
    return _parse_str(raw).lower()


_ENV_PARSERS.update({
    "allowed_clients": _parse_list,
    "required_claim_values": _parse_claim_values,
    "provider": _parse_provider,
    "client_id_claims": _parse_list,
    "machine_tokens_only": _parse_bool,
})
