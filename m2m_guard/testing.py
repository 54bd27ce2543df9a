"""pytest plugin: a real local issuer and Scalekit-shaped tokens for testing a protected API.

Installed with m2m-guard and loaded by pytest through its ``pytest11`` entry point; nothing to
configure. Fixtures:

- `m2m_issuer` (session): the local issuer (`m2m_guard.local_issuer`), in memory, served by uvicorn
  on a free 127.0.0.1 port, started on first use. `M2MIssuer` has `url`, `audience`,
  `settings(**overrides)` (the `GuardSettings` trusting it), `mint(scopes, **claims)`,
  `register_client(...)` (a client with a real secret, whose `token()` runs the
  client-credentials grant over HTTP), `rotate_keys()` and `outage()`.
- `m2m_token` (function): a factory, ``m2m_token(scopes=["read:deployments"], **claims) -> str``,
  signing a token shaped like Scalekit's with the issuer's current key; a claim given as a keyword
  replaces the default one (``exp=0``: expired), None removes it; ``m2m_token.headers(...)``
  gives the ``Authorization`` header for such a token.
- `m2m_dpop` (function): DPoP (RFC 9449) for one test: a fresh client key (`DPoPFactory.key`,
  an `m2m_guard.dpop.DPoPKey`), ``m2m_dpop.token(scopes, **claims)`` (a token bound to it,
  ``cnf.jkt``), ``m2m_dpop.proof(method, url, token)`` (a fresh proof for one request) and
  ``m2m_dpop.headers(method, url, token=None, scopes=...)`` (the ``Authorization: DPoP`` and
  ``DPoP`` headers of one request); a `RegisteredClient`'s ``token(dpop=m2m_dpop.key)`` gets a
  bound token from the issuer's token endpoint over HTTP.
- `m2m_settings` (function): ``m2m_issuer.settings()``.
- `m2m_audience` (session): the audience tokens carry and settings require, ``"api.example.com"``
  by default; override this fixture in your conftest.py to use your API's own.

Importing this module imports neither a web framework nor uvicorn: they are loaded when a fixture
is first used, so the plugin costs nothing in test runs that do not use it.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .dpop import DPoPKey
    from .local_issuer import LocalIssuer
    from .settings import GuardSettings

__all__ = ["DEFAULT_AUDIENCE", "DEFAULT_ORGANIZATION_ID", "DPoPFactory", "M2MIssuer",
           "RegisteredClient", "TokenFactory"]

DEFAULT_AUDIENCE = "api.example.com"
DEFAULT_ORGANIZATION_ID = "org_59615193906282635"
DEFAULT_CLIENT_ID = "m2morg_68315758685323697"


def _scope_list(scopes: Iterable[str]) -> list[str]:
    if isinstance(scopes, str):
        raise TypeError("scopes must be a list of scopes, e.g. scopes=['read:deployments'], "
                        "not a string")
    return list(scopes)


@dataclass(frozen=True)
class RegisteredClient:
    """An M2M client registered with the local issuer, with its one-time plain secret."""

    client_id: str
    client_secret: str = field(repr=False)
    organization_id: str
    token_url: str
    client: Mapping[str, Any] = field(repr=False)

    def token(self, scopes: Iterable[str] | None = None, *, dpop: DPoPKey | None = None) -> str:
        """An access token from ``POST /oauth/token`` (client-credentials grant, over HTTP);
        `scopes` narrows the request to a subset of the client's scopes; with `dpop` (a
        `DPoPKey`, e.g. ``m2m_dpop.key``) the request carries a proof and the token is bound
        to that key (``cnf.jkt``)."""
        import httpx

        form = {"grant_type": "client_credentials", "client_id": self.client_id,
                "client_secret": self.client_secret}
        if scopes is not None:
            form["scope"] = " ".join(_scope_list(scopes))
        headers = {} if dpop is None else {"DPoP": dpop.proof("POST", self.token_url)}
        response = httpx.post(self.token_url, data=form, headers=headers, timeout=10,
                              trust_env=False)
        if response.status_code != 200:
            raise AssertionError(f"the token endpoint answered {response.status_code}: "
                                 f"{response.text[:300]}")
        token: str = response.json()["access_token"]
        return token


class M2MIssuer:
    """The running local issuer as tests see it (the `m2m_issuer` fixture)."""

    def __init__(self, issuer: LocalIssuer, running: Any, audience: str) -> None:
        self.issuer = issuer  # the LocalIssuer, for anything not wrapped here
        self._running = running
        self.audience = audience

    @property
    def url(self) -> str:
        """The issuer URL: the `iss` of its tokens, the base of discovery and /oauth/token."""
        url: str = self._running.url
        return url

    @property
    def token_url(self) -> str:
        return self.url + "/oauth/token"

    @property
    def jwks_url(self) -> str:
        return self.url + "/keys"

    def settings(self, audience: str | Iterable[str] | None = None,
                 **overrides: Any) -> GuardSettings:
        """`GuardSettings` trusting this issuer and requiring `audience` (default the
        `m2m_audience` fixture), with test-friendly timings: a 2 s HTTP timeout and a 1 s
        unknown-kid cooldown. `overrides` are any other `GuardSettings` options."""
        from .settings import GuardSettings

        values: dict[str, Any] = {"issuer": self.url,
                                  "audience": self.audience if audience is None else audience,
                                  "http_timeout": 2.0, "jwks_refetch_cooldown": 1.0}
        values.update(overrides)
        return GuardSettings(**values)

    def claims(self, scopes: Iterable[str] = (), **claims: Any) -> dict[str, Any]:
        """The claims of a token like the issuer's own (`iss`, `sub`, `client_id`, `oid`,
        `scopes`, `scope`, `aud`, `custom_claims`, `jti`, `iat`, `nbf`, `exp` one hour later);
        each keyword replaces a claim, None removes it."""
        scope_list = _scope_list(scopes)
        now = int(time.time())
        values: dict[str, Any] = {
            "iss": self.url, "sub": DEFAULT_CLIENT_ID, "client_id": DEFAULT_CLIENT_ID,
            "oid": DEFAULT_ORGANIZATION_ID, "scopes": scope_list, "scope": " ".join(scope_list),
            "aud": [self.audience], "custom_claims": {"environment": "test"},
            "jti": "tkn_" + str(10**16 + secrets.randbelow(9 * 10**16)),
            "iat": now, "nbf": now, "exp": now + 3600,
        }
        for name, value in claims.items():
            if value is None:
                values.pop(name, None)
            else:
                values[name] = value
        return values

    def mint(self, scopes: Iterable[str] = (), **claims: Any) -> str:
        """A token signed with the issuer's current key (header ``RS256``, its `kid`, ``JWT``)
        carrying `claims` (see `claims`)."""
        return self.issuer.sign(self.claims(scopes, **claims))

    def register_client(self, *, scopes: Iterable[str] = (),
                        audience: Iterable[str] | None = None, name: str = "test client",
                        description: str = "", custom_claims: Mapping[str, str] | None = None,
                        expiry: int = 3600,
                        organization_id: str = DEFAULT_ORGANIZATION_ID) -> RegisteredClient:
        """Register an M2M client (as ``POST …/clients`` does); its audience defaults to
        [`audience`]. Get its tokens over HTTP with `RegisteredClient.token()`."""
        client, secret = self.issuer.create_client(
            organization_id, name=name, description=description, scopes=_scope_list(scopes),
            audience=[self.audience] if audience is None else list(audience),
            custom_claims=custom_claims, expiry=expiry)
        return RegisteredClient(client["client_id"], secret, organization_id, self.token_url,
                                client)

    def rotate_keys(self) -> str:
        """Rotate the signing key now: the new key is published and signs from now on (the old
        one stays published). Returns the new `kid`. The issuer is shared by the session, so
        later tests see the new key too. At the issuer's bound of 10 kept keys the first
        retiring key to go is removed (`force`), so a session may rotate as often as it likes."""
        kid: str = self.issuer.rotate_keys(0.0, force=True)
        return kid

    def outage(self, *, refuse: bool = False) -> AbstractContextManager[Any]:
        """``with m2m_issuer.outage(): ...``: the issuer answers every request with 503
        meanwhile (`refuse`: it stops listening, so connections are refused)."""
        manager: AbstractContextManager[Any] = self._running.outage(refuse=refuse)
        return manager

    def __repr__(self) -> str:
        return f"M2MIssuer(url={self.url!r}, audience={self.audience!r})"


class TokenFactory:
    """The `m2m_token` fixture: ``m2m_token(scopes=[...], **claims) -> str``."""

    def __init__(self, issuer: M2MIssuer) -> None:
        self.issuer = issuer

    def __call__(self, scopes: Iterable[str] = (), **claims: Any) -> str:
        return self.issuer.mint(scopes, **claims)

    def headers(self, scopes: Iterable[str] = (), **claims: Any) -> dict[str, str]:
        """``{"Authorization": "Bearer <token>"}`` for a token minted like ``__call__``."""
        return {"Authorization": f"Bearer {self(scopes, **claims)}"}


class DPoPFactory:
    """The `m2m_dpop` fixture: a client's DPoP key, tokens bound to it and proofs."""

    def __init__(self, issuer: M2MIssuer, key: DPoPKey) -> None:
        self.issuer = issuer
        #: The client's key pair (`m2m_guard.dpop.DPoPKey`): ``key.thumbprint`` is the jkt.
        self.key = key

    def token(self, scopes: Iterable[str] = (), **claims: Any) -> str:
        """A token like `m2m_token`'s, bound to `key` (``cnf: {"jkt": key.thumbprint}``)."""
        claims.setdefault("cnf", {"jkt": self.key.thumbprint})
        return self.issuer.mint(scopes, **claims)

    def proof(self, method: str, url: str, token: str | None = None, *,
              nonce: str | None = None, **options: Any) -> str:
        """A fresh proof for one `method` `url` request (with `token`, its ``ath``); `options`
        go to `DPoPKey.proof` (``iat``, ``jti``, ``claims``, ``headers``: for attack tests)."""
        return self.key.proof(method, url, access_token=token, nonce=nonce, **options)

    def headers(self, method: str, url: str, token: str | None = None, *,
                scopes: Iterable[str] = (), **claims: Any) -> dict[str, str]:
        """The headers of one request: ``Authorization: DPoP <token>`` (`token`, else a new
        bound token with `scopes` and `claims`) and a fresh ``DPoP`` proof for it."""
        if token is None:
            token = self.token(scopes, **claims)
        return {"Authorization": f"DPoP {token}", "DPoP": self.proof(method, url, token)}


@pytest.fixture(scope="session")
def m2m_audience() -> str:
    """The audience of `m2m_token` tokens and `m2m_issuer.settings()`; override it in your
    conftest.py to use your API's audience."""
    return DEFAULT_AUDIENCE


@pytest.fixture(scope="session")
def m2m_issuer(m2m_audience: str) -> Iterator[M2MIssuer]:
    """A local issuer on 127.0.0.1 (in memory), shared by the test session."""
    try:
        from .local_issuer import LocalIssuer, serve_issuer
    except ImportError as exc:  # uvicorn is in the "server" extra
        pytest.fail(f"m2m_issuer needs uvicorn: pip install 'm2m-guard[server]' ({exc})",
                    pytrace=False)
    admin_id = f"skc_{10**16 + secrets.randbelow(9 * 10**16)}"
    issuer = LocalIssuer(":memory:", admin_client_id=admin_id,
                         admin_client_secret=secrets.token_urlsafe(32), key_publish_delay=0.0)
    try:
        with serve_issuer(issuer, host="127.0.0.1", port=0) as running:
            yield M2MIssuer(issuer, running, m2m_audience)
    finally:
        issuer.close()


@pytest.fixture
def m2m_token(m2m_issuer: M2MIssuer) -> TokenFactory:
    """Mint Scalekit-shaped tokens: ``m2m_token(scopes=["read:deployments"], exp=0)``."""
    return TokenFactory(m2m_issuer)


@pytest.fixture
def m2m_dpop(m2m_issuer: M2MIssuer) -> DPoPFactory:
    """DPoP-bound tokens and proofs with a fresh client key: ``m2m_dpop.headers("GET", url,
    scopes=["read:deployments"])``."""
    from .dpop import DPoPKey  # loaded on first use, like the issuer

    return DPoPFactory(m2m_issuer, DPoPKey.generate())


@pytest.fixture
def m2m_settings(m2m_issuer: M2MIssuer) -> GuardSettings:
    """`GuardSettings` trusting `m2m_issuer`, with the `m2m_audience`."""
    return m2m_issuer.settings()
