"""Finding and fetching the key set: OpenID Connect discovery, then RFC 8414; the
discovery document's issuer must match; no foreign jwks_uri or cross-host redirects; size and
key-count limits; an explicit jwks_url skips discovery. Every case runs through both fetch
drivers (async front, and sync front on a worker thread) against a real `KeySetServer`."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import anyio
import anyio.to_thread
import pytest

from m2m_guard import GuardSettings, IssuerUnavailable, TokenVerifier
from m2m_guard._core.fetch import discovery_urls
from m2m_guard.local_issuer import KeySetServer, SigningKey

OIDC = "/.well-known/openid-configuration"
RFC8414 = "/.well-known/oauth-authorization-server"
KEYS = "/keys"

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["async", "sync"])
def kind(request: pytest.FixtureRequest) -> str:
    """Which fetch driver runs: the async front, or the sync front on a worker thread."""
    return str(request.param)


@pytest.fixture
def other() -> Iterator[KeySetServer]:
    """A second server on another port (another origin) with its own key."""
    with KeySetServer([SigningKey.generate("ES256", kid="snk_other")]) as server:
        yield server


def front(verifier: TokenVerifier, kind: str) -> Callable[[str], Awaitable[Any]]:
    if kind == "async":
        return verifier.verify

    async def call(token: str) -> Any:
        return await anyio.to_thread.run_sync(verifier.verify_sync, token)

    return call


async def accepted(settings: GuardSettings, kind: str, token: str) -> TokenVerifier:
    verifier = TokenVerifier(settings)
    access = await front(verifier, kind)(token)
    assert access.subject == "m2morg_68315758685323697"
    return verifier


async def refused_cold(settings: GuardSettings, kind: str, token: str, issuer_url: str,
                       error: str) -> TokenVerifier:
    """A cold cache whose key set cannot be obtained: 503 with Retry-After, and the reason in
    health()."""
    verifier = TokenVerifier(settings)
    with pytest.raises(IssuerUnavailable) as caught:
        await front(verifier, kind)(token)
    assert caught.value.status_code == 503 and caught.value.retry_after >= 1
    entry = verifier.health()["issuers"][issuer_url]
    assert entry["keys"] == 0 and entry["status"] == "unavailable"
    assert error in entry["last_error"], entry["last_error"]
    return verifier


def test_discovery_urls() -> None:
    assert discovery_urls("https://env.example") == (
        "https://env.example/.well-known/openid-configuration",
        "https://env.example/.well-known/oauth-authorization-server")
    # RFC 8414 §3.1 inserts the well-known segment before the issuer's path.
    assert discovery_urls("https://auth.example/tenant/") == (
        "https://auth.example/tenant/.well-known/openid-configuration",
        "https://auth.example/.well-known/oauth-authorization-server/tenant")


# -- discovery -------------------------------------------------------------------------------

async def test_openid_discovery_finds_the_key_set(issuer: KeySetServer,
                                                  settings: GuardSettings, kind: str) -> None:
    verifier = await accepted(settings, kind, issuer.mint())
    assert issuer.requests == {OIDC: 1, KEYS: 1}
    assert verifier.health()["issuers"][issuer.url]["jwks_url"] == issuer.jwks_url


async def test_rfc8414_is_the_fallback(issuer: KeySetServer, settings: GuardSettings,
                                       kind: str) -> None:
    issuer.discovery_paths = {RFC8414}  # the OpenID Connect path answers 404
    await accepted(settings, kind, issuer.mint())
    assert issuer.requests == {OIDC: 1, RFC8414: 1, KEYS: 1}


async def test_no_discovery_document_is_503(issuer: KeySetServer, settings: GuardSettings,
                                            kind: str) -> None:
    issuer.discovery_paths = set()
    await refused_cold(settings, kind, issuer.mint(), issuer.url, "no discovery document")
    assert issuer.requests == {OIDC: 1, RFC8414: 1}


async def test_discovery_failure_other_than_404_does_not_fall_back(
        issuer: KeySetServer, settings: GuardSettings, kind: str) -> None:
    issuer.set_fault("500")
    await refused_cold(settings, kind, issuer.mint(), issuer.url, "answered HTTP 500")
    assert issuer.requests == {OIDC: 1}


@pytest.mark.parametrize("named", ["{url}/", "https://evil.example", "{url}/other", None, 7])
async def test_discovery_naming_another_issuer_is_refused(
        issuer: KeySetServer, settings: GuardSettings, kind: str, named: Any) -> None:
    issuer.discovery_extra = {"issuer": named.format(url=issuer.url)
                              if isinstance(named, str) else named}
    await refused_cold(settings, kind, issuer.mint(), issuer.url, "names issuer")
    assert issuer.requests == {OIDC: 1}  # no fallback and no key-set request


@pytest.mark.parametrize("where", ["other_server", "localhost", "https_host", "missing",
                                   "not_a_string"])
async def test_jwks_uri_on_another_host_is_refused(
        issuer: KeySetServer, other: KeySetServer, settings: GuardSettings, kind: str,
        where: str) -> None:
    port = issuer.url.rsplit(":", 1)[1]
    jwks_uri = {
        "other_server": other.jwks_url,                  # same address, another port (origin)
        "localhost": f"http://localhost:{port}/keys",    # the same server under another name
        "https_host": "https://keys.example/keys",
        "missing": None,
        "not_a_string": ["http://127.0.0.1/keys"],
    }[where]
    issuer.discovery_extra = {"jwks_uri": jwks_uri}
    await refused_cold(settings, kind, issuer.mint(), issuer.url, "jwks_uri")
    assert issuer.requests == {OIDC: 1}
    assert sum(other.requests.values()) == 0


async def test_explicit_jwks_url_skips_discovery(
        issuer: KeySetServer, make_settings: Callable[..., GuardSettings], kind: str) -> None:
    await accepted(make_settings(jwks_url=issuer.jwks_url), kind, issuer.mint())
    assert issuer.requests == {KEYS: 1}


async def test_explicit_jwks_url_may_be_on_another_host(
        issuer: KeySetServer, other: KeySetServer,
        make_settings: Callable[..., GuardSettings], kind: str) -> None:
    """What the user configures is trusted as given (unlike what a discovery document says)."""
    await accepted(make_settings(jwks_url=other.jwks_url), kind, other.mint(iss=issuer.url))
    assert other.requests == {KEYS: 1}
    assert sum(issuer.requests.values()) == 0


# -- redirects -------------------------------------------------------------------------------

@pytest.mark.parametrize("location", ["/keys", "{url}/keys"])
async def test_same_origin_redirect_is_followed(
        issuer: KeySetServer, make_settings: Callable[..., GuardSettings], kind: str,
        location: str) -> None:
    issuer.redirects = {"/old-keys": location.format(url=issuer.url)}
    await accepted(make_settings(jwks_url=issuer.url + "/old-keys"), kind, issuer.mint())
    assert issuer.requests == {"/old-keys": 1, KEYS: 1}


async def test_same_origin_redirect_of_discovery_is_followed(
        issuer: KeySetServer, settings: GuardSettings, kind: str) -> None:
    issuer.redirects = {OIDC: "/.well-known/moved"}
    issuer.discovery_paths = {"/.well-known/moved"}
    await accepted(settings, kind, issuer.mint())
    assert issuer.requests == {OIDC: 1, "/.well-known/moved": 1, KEYS: 1}


@pytest.mark.parametrize("target", ["other_server", "localhost"])
async def test_redirect_to_another_host_is_refused(
        issuer: KeySetServer, other: KeySetServer, make_settings: Callable[..., GuardSettings],
        kind: str, target: str) -> None:
    port = issuer.url.rsplit(":", 1)[1]
    issuer.redirects = {"/old-keys": other.jwks_url if target == "other_server"
                        else f"http://localhost:{port}/keys"}
    await refused_cold(make_settings(jwks_url=issuer.url + "/old-keys"), kind, issuer.mint(),
                       issuer.url, "redirects to another host")
    assert issuer.requests == {"/old-keys": 1}
    assert sum(other.requests.values()) == 0


async def test_discovery_redirect_to_another_host_is_refused(
        issuer: KeySetServer, other: KeySetServer, settings: GuardSettings, kind: str) -> None:
    issuer.redirects = {OIDC: other.url + OIDC}
    await refused_cold(settings, kind, issuer.mint(), issuer.url, "redirects to another host")
    assert issuer.requests == {OIDC: 1}
    assert sum(other.requests.values()) == 0


async def test_redirect_loop_is_bounded(issuer: KeySetServer,
                                        make_settings: Callable[..., GuardSettings],
                                        kind: str) -> None:
    issuer.redirects = {"/a": "/b", "/b": "/a"}
    await refused_cold(make_settings(jwks_url=issuer.url + "/a"), kind, issuer.mint(),
                       issuer.url, "too many redirects")
    assert issuer.requests == {"/a": 2, "/b": 2}  # the first request and 3 redirects


# -- size and key-count limits ---------------------------------------------------------------

def _pad_to(issuer: KeySetServer, size: int) -> None:
    """Append a (dropped) oct key so the served JWKS is exactly `size` bytes."""
    issuer.extra_jwks[:] = [{"kty": "oct", "kid": "pad", "k": ""}]
    base = len(json.dumps(issuer.jwks()).encode())
    issuer.extra_jwks[0]["k"] = "A" * (size - base)
    assert len(json.dumps(issuer.jwks()).encode()) == size


async def test_jwks_of_exactly_64_kib_is_accepted(issuer: KeySetServer,
                                                  settings: GuardSettings, kind: str) -> None:
    _pad_to(issuer, 65536)
    verifier = await accepted(settings, kind, issuer.mint())
    entry = verifier.health()["issuers"][issuer.url]
    assert entry["keys"] == 4 and entry["dropped_keys"][0]["kid"] == "pad"


@pytest.mark.parametrize("size", [65537, 100 * 1024])
async def test_jwks_over_64_kib_is_refused(issuer: KeySetServer, settings: GuardSettings,
                                           kind: str, size: int) -> None:
    _pad_to(issuer, size)
    await refused_cold(settings, kind, issuer.mint(), issuer.url, "more than 65536 bytes")


async def test_discovery_over_64_kib_is_refused(issuer: KeySetServer, settings: GuardSettings,
                                                kind: str) -> None:
    issuer.discovery_extra = {"padding": "x" * (100 * 1024)}
    await refused_cold(settings, kind, issuer.mint(), issuer.url, "more than 65536 bytes")
    assert issuer.requests == {OIDC: 1}


async def test_configured_byte_limit_applies(issuer: KeySetServer,
                                             make_settings: Callable[..., GuardSettings],
                                             kind: str) -> None:
    assert len(json.dumps(issuer.jwks()).encode()) > 1024
    await refused_cold(make_settings(jwks_max_bytes=1024), kind, issuer.mint(), issuer.url,
                       "more than 1024 bytes")


def _add_keys(issuer: KeySetServer, count: int) -> None:
    jwk = SigningKey.generate("EdDSA").public_jwk()
    issuer.extra_jwks[:] = [{**jwk, "kid": f"snk_extra_{i}"} for i in range(count)]


async def test_100_keys_are_accepted(issuer: KeySetServer, settings: GuardSettings,
                                     kind: str) -> None:
    _add_keys(issuer, 96)
    verifier = await accepted(settings, kind, issuer.mint())
    assert verifier.health()["issuers"][issuer.url]["keys"] == 100


async def test_more_than_100_keys_are_refused(issuer: KeySetServer, settings: GuardSettings,
                                              kind: str) -> None:
    _add_keys(issuer, 97)
    await refused_cold(settings, kind, issuer.mint(), issuer.url, "101 keys; at most 100")


async def test_configured_key_count_limit_applies(
        issuer: KeySetServer, make_settings: Callable[..., GuardSettings], kind: str) -> None:
    await refused_cold(make_settings(jwks_max_keys=3), kind, issuer.mint(), issuer.url,
                       "4 keys; at most 3")


async def test_unusable_key_set_document_is_refused(issuer: KeySetServer,
                                                    settings: GuardSettings, kind: str) -> None:
    issuer.set_fault("garbage")
    await refused_cold(settings, kind, issuer.mint(), issuer.url, "not valid JSON")
