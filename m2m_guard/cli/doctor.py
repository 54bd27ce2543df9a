"""`m2m-guard doctor`: the effective configuration, and each issuer's discovery and key set.

The network part runs the guard's own code: `fetch.discovery_urls` / `read_discovery` /
`read_key_set` over the sync driver's bounded GET (same timeout, size limit and same-origin
redirect rule), `keys.parse_jwks` (through `read_key_set`) for the keys and the keys it drops,
and `jwks.CachePolicy` for the TTL the cache would use. Nothing is parsed a second way, so what
the doctor sees is what a running guard would see.

A check is ``ok``, ``warn`` (works, but worth knowing) or ``FAIL`` (tokens from this issuer would
be refused); any ``FAIL`` makes the exit code 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from .._core.encoding import loads_json
from .._core.fetch import (
    FetchedDocument,
    FetchError,
    discovery_urls,
    get_document_sync,
    read_discovery,
    read_key_set,
    shared_tls_context,
)
from .._core.jwks import CachePolicy
from .._core.keys import KeySet
from .._core.providers import PROVIDERS
from ..errors import ConfigurationError
from ..settings import DEFAULT_JWKS_TTL, ENV_PREFIX, GuardSettings, IssuerSettings
from .common import EXIT_FAILED, EXIT_OK, CommandError

__all__ = ["IssuerReport", "check_issuer", "configuration_rows", "run"]

OK, WARN, FAIL = "ok", "warn", "FAIL"


@dataclass
class IssuerReport:
    """What the doctor found about one issuer."""

    issuer: str
    checks: list[tuple[str, str, str]] = field(default_factory=list)  # (status, check, message)
    keys: list[dict[str, Any]] = field(default_factory=list)
    dropped: list[dict[str, Any]] = field(default_factory=list)
    cache: dict[str, Any] = field(default_factory=dict)

    def add(self, status: str, check: str, message: str) -> None:
        # Messages quote what the issuer sent (kids, URLs, headers): no control characters
        # reach the terminal.
        self.checks.append((status, check,
                            "".join(c if c.isprintable() else "?" for c in message)))

    @property
    def failed(self) -> bool:
        return any(status == FAIL for status, _, _ in self.checks)


def _seconds(value: float) -> str:
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0)):
        if value >= size and value % size == 0:
            return f"{value / size:g}{unit}"
    return f"{value:g}s"


def _show(name: str, value: Any) -> str:
    if name == "issuer":
        return ", ".join(entry.issuer + (f" (jwks_url {entry.jwks_url})" if entry.jwks_url else "")
                         for entry in value)
    if name == "jwks_cache_ttl" and value is None:
        return "auto"
    if name == "jwks_url" and value is None:
        return "(discovery)"
    if name == "required_claim_values":
        return json.dumps({".".join(path) if isinstance(path, tuple) else path: list(values)
                           for path, values in value}) if value else "(none)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _seconds(value)
    if isinstance(value, tuple):
        return ",".join(str(item) for item in value) if value else "(none)"
    return str(value)


def configuration_rows(settings: GuardSettings) -> list[tuple[str, str, str]]:
    """(option, value as shown, source) for every `GuardSettings` field; an option a provider
    preset set shows ``provider <name>`` as its source."""
    rows = []
    preset_options = PROVIDERS[settings.provider].options
    for item in dataclasses.fields(GuardSettings):
        variable = ENV_PREFIX + item.name.upper()
        source = f"env {variable}" if variable in os.environ else "default"
        if variable not in os.environ and item.name in preset_options \
                and getattr(settings, item.name) != item.default:
            source = f"provider {settings.provider}"
        rows.append((item.name, _show(item.name, getattr(settings, item.name)), source))
    return rows


def _get(client: httpx.Client, url: str, settings: GuardSettings) -> FetchedDocument:
    return get_document_sync(client, url, settings)


def _discover(client: httpx.Client, issuer: IssuerSettings, settings: GuardSettings,
              report: IssuerReport) -> str | None:
    for url in discovery_urls(issuer.issuer):
        try:
            response = _get(client, url, settings)
        except FetchError as exc:
            report.add(FAIL, "discovery", f"unreachable: {exc}")
            return None
        if response.status == 404:
            report.add(OK, "discovery", f"GET {url} -> 404 (trying the next location)")
            continue
        try:
            jwks_uri = read_discovery(issuer, response.url, response.status, response.body,
                                      settings)
        except FetchError as exc:
            report.add(FAIL, "discovery", str(exc))
            return None
        report.add(OK, "discovery", f"GET {response.url} -> {response.status}")
        report.add(OK, "issuer match", f"the document names {issuer.issuer}")
        document = loads_json(response.body)  # read_discovery has parsed it already
        endpoint = document.get("token_endpoint")
        if isinstance(endpoint, str):
            report.add(OK, "token endpoint", endpoint)
        listed = document.get("id_token_signing_alg_values_supported")
        advertised = {name for name in listed if isinstance(name, str)} \
            if isinstance(listed, list) else set()
        if advertised and not advertised & set(settings.algorithms):
            names = ", ".join(sorted(advertised))
            report.add(WARN, "algorithms",
                       f"the issuer advertises {names}; none is in M2M_GUARD_ALGORITHMS")
        report.add(OK, "jwks_uri", jwks_uri)
        return jwks_uri
    report.add(FAIL, "discovery", "no discovery document (both well-known locations answered "
                                  "404); set M2M_GUARD_JWKS_URL")
    return None


def _check_keys(keys: KeySet, settings: GuardSettings, report: IssuerReport) -> None:
    allowed = set(settings.algorithms)
    usable = 0
    kids: dict[str | None, int] = {}
    for key in keys.keys:
        algorithms = sorted(key.algorithms & allowed)
        kids[key.kid] = kids.get(key.kid, 0) + 1
        entry = {"kid": key.kid, "kty": key.kty, "alg": key.alg, "size": key.size,
                 "algorithms": algorithms}
        report.keys.append(entry)
        what = f"{key.kty} {key.size} bits, alg {key.alg or 'not pinned'}"
        if algorithms:
            usable += 1
            report.add(OK, "key", f"{key.kid}: {what}; verifies {', '.join(algorithms)}")
        else:
            report.add(WARN, "key",
                       f"{key.kid}: {what}; none of its algorithms "
                       f"({', '.join(sorted(key.algorithms))}) is allowed by M2M_GUARD_ALGORITHMS")
    for kid, reason in keys.dropped:
        report.dropped.append({"kid": kid, "reason": reason})
        report.add(WARN, "dropped key", f"{kid}: {reason}")
    for kid, count in kids.items():
        if count > 1:
            report.add(WARN, "key", f"{kid}: {count} keys share this kid; tokens naming it are "
                                    f"refused as ambiguous when more than one fits")
    if usable == 0:
        report.add(FAIL, "keys", "no usable key with an allowed algorithm: every token from "
                                 "this issuer would be refused")


def _check_cache(headers: Mapping[str, str], max_age: float | None, settings: GuardSettings,
                 report: IssuerReport) -> None:
    policy = CachePolicy.from_settings(settings)
    ttl = policy.ttl_for(max_age)
    cache_control = headers.get("cache-control")
    etag = headers.get("etag")
    if settings.jwks_cache_ttl is not None:
        why = "configured by M2M_GUARD_JWKS_CACHE_TTL"
    elif max_age is None:
        why = f"no max-age from the issuer: the default {_seconds(DEFAULT_JWKS_TTL)}"
    elif ttl != max_age:
        why = (f"max-age {max_age:g} clamped to [{_seconds(settings.jwks_min_ttl)}, "
               f"{_seconds(settings.jwks_max_ttl)}]")
    else:
        why = f"the issuer's max-age {max_age:g}"
    report.cache = {"cache_control": cache_control, "etag": etag, "max_age": max_age,
                    "ttl": ttl, "refresh_after": ttl - min(ttl / 10.0, 60.0)}
    report.add(OK, "cache", f"Cache-Control: {cache_control or '(none)'}; "
                            f"ETag: {etag or '(none)'}")
    report.add(OK, "cache ttl", f"{_seconds(ttl)} ({why}); background refresh after "
                                f"{_seconds(report.cache['refresh_after'])}")
    if max_age == 0 and settings.jwks_cache_ttl is None:
        report.add(WARN, "cache", "the issuer forbids caching (no-store / no-cache / max-age=0);"
                                  f" the guard still keeps the set for {_seconds(ttl)}")
    if not etag:
        report.add(OK, "cache", "no ETag: each refresh downloads the whole key set")


def check_issuer(issuer: IssuerSettings, settings: GuardSettings) -> IssuerReport:
    """Fetch `issuer`'s discovery document (unless its jwks_url is set) and key set, and judge
    them by the guard's rules."""
    report = IssuerReport(issuer.issuer)
    with httpx.Client(timeout=httpx.Timeout(settings.http_timeout),
                      verify=shared_tls_context(settings.ca_bundle),
                      follow_redirects=False) as client:
        jwks_url = issuer.jwks_url
        if jwks_url is not None:
            report.add(OK, "jwks_uri", f"{jwks_url} (configured: discovery skipped)")
        else:
            jwks_url = _discover(client, issuer, settings, report)
            if jwks_url is None:
                return report
        try:
            response = _get(client, jwks_url, settings)
            result = read_key_set(response.url, response.status, response.headers,
                                  response.body, settings)
        except FetchError as exc:
            report.add(FAIL, "key set", str(exc))
            return report
        assert result.keys is not None  # no If-None-Match was sent, so no 304
        report.add(OK, "key set", f"GET {response.url} -> {response.status} "
                                  f"({len(response.body)} bytes, {len(result.keys)} usable "
                                  f"key(s), {len(result.keys.dropped)} dropped)")
        _check_keys(result.keys, settings, report)
        _check_cache(response.headers, result.max_age, settings, report)
    return report


def _print_text(rows: list[tuple[str, str, str]], reports: list[IssuerReport]) -> None:
    print("Configuration (GuardSettings.from_env)")
    width = max(len(name) for name, _, _ in rows)
    for name, value, source in rows:
        print(f"  {name:<{width}}  {value:<40}  {source}")
    for report in reports:
        print()
        print(f"Issuer {report.issuer}")
        for status, check, message in report.checks:
            print(f"  {status:<4}  {check:<14}  {message}")
    failed = sum(status == FAIL for r in reports for status, _, _ in r.checks)
    warnings = sum(status == WARN for r in reports for status, _, _ in r.checks)
    print()
    verdict = "problems found" if failed else "ok"
    print(f"Result: {verdict} ({failed} failed, {warnings} warning{'s' if warnings != 1 else ''})")


def run(args: argparse.Namespace) -> int:
    try:
        settings = GuardSettings.from_env()
    except ConfigurationError as exc:
        raise CommandError(f"configuration error: {exc}") from None
    rows = configuration_rows(settings)
    reports = [check_issuer(issuer, settings) for issuer in settings.issuers]
    failed = any(report.failed for report in reports)
    if args.json:
        print(json.dumps({
            "ok": not failed,
            "configuration": {name: {"value": value, "source": source}
                              for name, value, source in rows},
            "issuers": [{"issuer": r.issuer, "ok": not r.failed,
                         "checks": [{"status": s, "check": c, "message": m}
                                    for s, c, m in r.checks],
                         "keys": r.keys, "dropped_keys": r.dropped, "cache": r.cache}
                        for r in reports],
        }, indent=2))
    else:
        _print_text(rows, reports)
    return EXIT_FAILED if failed else EXIT_OK
