"""`LocalIssuer`: a local, Scalekit-compatible authorization server (store, keys, clients, app).

```python
from m2m_guard.local_issuer import LocalIssuer, serve_issuer

issuer = LocalIssuer("issuer.db")                  # or ":memory:"
client, secret = issuer.create_client("org_59615193906282635", name="CI",
                                      scopes=["read:deployments"])
with serve_issuer(issuer) as running:              # uvicorn on a free loopback port
    print(running.url)                             # the token `iss`; /oauth/token, /keys, …
```

See docs/local-issuer.md for the HTTP API.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from starlette.applications import Starlette

from .._core.claims import ClaimRules
from .._core.encoding import loads_json
from .._core.jws import check_signature, parse_compact
from .._core.keys import KeyRejected, VerificationKey, load_jwk
from ..errors import ConfigurationError, InvalidToken
from ..settings import GuardSettings
from .app import build_app
from .clients import ClientRecord, Clients
from .ids import new_id
from .keyring import KeyRing, KeyState
from .store import Store

__all__ = ["DEFAULT_JWKS_MAX_AGE", "LocalIssuer"]

DEFAULT_JWKS_MAX_AGE = 300
_ADMIN_LEEWAY = 30.0


class LocalIssuer:
    """A local authorization server that speaks Scalekit's API (docs/local-issuer.md).

    - `db`: SQLite file name (created with its schema on first use) or ``":memory:"``.
    - `issuer_url`: the `iss` of its tokens and the base of its discovery document; None means
      "the URL it is served at" (`serve_issuer` sets it; without it each request's base URL).
    - `admin_client_id` / `admin_client_secret`: the environment API client whose tokens
      authorize `/api/v1/*`; default to the ``SCALEKIT_CLIENT_ID`` / ``SCALEKIT_CLIENT_SECRET``
      environment variables; with neither, the stored client is used, or one is created and its
      secret is in `new_admin_secret` (this once only: print it, it is not kept in plain text).
    - `key_publish_delay`: seconds a new key is published before it signs (`rotate_keys`);
      None (default) means `jwks_max_age`, so every verifier caching the key set has seen the
      new key before the first token it signed. Use 0 in tests that rotate on purpose.
    - `jwks_max_age`: the `Cache-Control: max-age` of `/keys` (default 300 s).
    - `retire_leeway`: seconds a superseded key stays published after the last token it signed
      expired (covers verifiers' clock leeway; default 60 s).
    - `clock`: epoch seconds (tests move time forward with it).
    """

    def __init__(self, db: str = ":memory:", *, issuer_url: str | None = None,
                 admin_client_id: str | None = None, admin_client_secret: str | None = None,
                 key_publish_delay: float | None = None,
                 jwks_max_age: int = DEFAULT_JWKS_MAX_AGE, retire_leeway: float = 60.0,
                 clock: Callable[[], float] = time.time) -> None:
        if admin_client_id is None and admin_client_secret is None:
            admin_client_id = os.environ.get("SCALEKIT_CLIENT_ID") or None
            admin_client_secret = os.environ.get("SCALEKIT_CLIENT_SECRET") or None
        if jwks_max_age < 0:
            raise ValueError("jwks_max_age must not be negative")
        self.issuer_url = issuer_url.rstrip("/") if issuer_url else None
        self.jwks_max_age = int(jwks_max_age)
        self.key_publish_delay = float(jwks_max_age if key_publish_delay is None
                                       else key_publish_delay)
        if self.key_publish_delay < 0:
            raise ValueError("key_publish_delay must not be negative")
        self.clock = clock
        self.unavailable = False  # True: every route answers 503 (see serve_issuer's outage())
        self.store = Store(db)
        try:
            self.keys = KeyRing(self.store, clock=clock, retire_leeway=retire_leeway)
            self.clients = Clients(self.store, clock=clock)
            self.admin_client_id, self.new_admin_secret = \
                self.clients.ensure_environment_client(admin_client_id, admin_client_secret)
        except BaseException:
            self.store.close()
            raise
        self._verification_keys: dict[str, VerificationKey] = {}
        self._admin_rules: dict[str, ClaimRules] = {}
        self._app: Starlette | None = None

    @property
    def app(self) -> Starlette:
        """The issuer's HTTP API as an ASGI app (`app.build_app`), built on first use."""
        if self._app is None:
            self._app = build_app(self)
        return self._app

    @app.setter
    def app(self, app: Starlette) -> None:
        """Serve `app` instead (e.g. the issuer's app wrapped by a test's middleware)."""
        self._app = app

    # -- Python API ------------------------------------------------------------------------------
    def create_client(self, organization_id: str, *, name: str, description: str = "",
                      scopes: Iterable[str] = (), audience: Iterable[str] = (),
                      custom_claims: Mapping[str, str] | None = None,
                      expiry: int = 3600) -> tuple[dict[str, Any], str]:
        """Register an M2M client as ``POST …/clients`` does; return (client JSON, plain secret).

        Raises `ApiError` (status 400) for invalid input, with the same messages as the API.
        """
        body = {"name": name, "description": description, "scopes": list(scopes),
                "audience": list(audience), "expiry": expiry,
                "custom_claims": [{"key": key, "value": value}
                                  for key, value in (custom_claims or {}).items()]}
        return self.clients.create(organization_id, body)

    def rotate_keys(self, publish_delay: float | None = None, *, force: bool = False) -> str:
        """Start a key rotation; return the new `kid`.

        The new key is published at once and signs after `publish_delay` seconds (default
        `key_publish_delay`); the previous key stays published until every token it signed
        has expired (plus `retire_leeway`), then it is removed.

        Raises `RotationRefused` while a key is pending, and when the key set holds `MAX_KEYS`
        (10) keys; `force=True` then removes the first retiring key to go (its tokens stop
        verifying) instead of refusing.
        """
        delay = self.key_publish_delay if publish_delay is None else publish_delay
        return self.keys.rotate(delay, force=force).kid

    def key_states(self) -> list[KeyState]:
        """Every kept key with its status (pending, active, retiring)."""
        return self.keys.states()

    def sign(self, claims: dict[str, Any]) -> str:
        """Sign arbitrary `claims` with the current signing key (RS256, `kid`, ``typ: JWT``)."""
        return self.keys.sign(claims)

    def jwks(self) -> dict[str, Any]:
        """The published key set (public keys only)."""
        return {"keys": [key.public_jwk() for key in self.keys.published()]}

    def close(self) -> None:
        """Close the database (the issuer must not be served any more)."""
        self.store.close()

    def __enter__(self) -> LocalIssuer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- used by the app ---------------------------------------------------------------------------
    def base_url(self, request_base: str) -> str:
        return self.issuer_url or request_base.rstrip("/")

    def issue_token(self, client: ClientRecord, scopes: list[str], issuer: str, *,
                    jkt: str | None = None) -> tuple[str, int]:
        """A signed access token for `client` with `scopes`; (token, lifetime). With `jkt` (the
        RFC 7638 thumbprint of a DPoP proof's key) the token is bound to that key:
        ``cnf: {"jkt": ...}`` (RFC 9449 §6)."""
        now = int(self.clock())
        claims: dict[str, Any] = {"iss": issuer, "sub": client.client_id,
                                  "client_id": client.client_id}
        if client.organization_id is not None:
            claims["oid"] = client.organization_id
        claims["scopes"] = scopes
        claims["scope"] = " ".join(scopes)
        if client.audience:
            claims["aud"] = list(client.audience)
        if client.kind == "m2m":
            claims["custom_claims"] = dict(client.custom_claims)
        claims.update({"jti": new_id("tkn"), "iat": now, "nbf": now,
                       "exp": now + client.expiry})
        if jkt is not None:
            claims["cnf"] = {"jkt": jkt}
        return self.keys.sign(claims), client.expiry

    def check_admin_token(self, token: str, issuer: str) -> None:
        """Raise `InvalidToken` unless `token` is a live token of the environment API client,
        signed by one of our published keys (the core's JWS and key rules do the checking)."""
        jws = parse_compact(token)
        if jws.kid is None:
            raise InvalidToken("The token has no kid.", reason="unknown_kid")
        key = self._verification_key(jws.kid)
        check_signature(jws, key)
        try:
            claims = loads_json(jws.payload)
        except ValueError:
            raise InvalidToken("The token claims are not a JSON object.",
                               reason="malformed_claims") from None
        if not isinstance(claims, dict):
            raise InvalidToken("The token claims are not a JSON object.", reason="malformed_claims")
        if claims.get("iss") != issuer:
            raise InvalidToken("The token was not issued by this server.",
                               reason="untrusted_issuer")
        self._admin_claim_rules(issuer).check(claims, self.clock())
        if not (isinstance(claims.get("sub"), str)
                and secrets.compare_digest(claims["sub"], self.admin_client_id)):
            raise InvalidToken("The token does not belong to the environment API client.",
                               reason="not_admin")

    def _admin_claim_rules(self, issuer: str) -> ClaimRules:
        """The guard's own claim rules (time claims with leeway, claim types), for management
        tokens: made only for an issuer URL that signed tokens name, a few at most."""
        rules = self._admin_rules.get(issuer)
        if rules is None:
            try:
                settings = GuardSettings(issuer=issuer, verify_audience=False,
                                         leeway=_ADMIN_LEEWAY, allow_http=True)
            except ConfigurationError:
                raise InvalidToken("The token was not issued by this server.",
                                   reason="untrusted_issuer") from None
            if len(self._admin_rules) >= 8:
                self._admin_rules.clear()
            rules = self._admin_rules[issuer] = ClaimRules(settings)
        return rules

    def _verification_key(self, kid: str) -> VerificationKey:
        published = {key.kid: key for key in self.keys.published()}
        signing = published.get(kid)
        if signing is None:
            self._verification_keys.pop(kid, None)
            raise InvalidToken("The token's key is not published by this server.",
                               reason="unknown_kid")
        key = self._verification_keys.get(kid)
        if key is None:
            try:
                key = load_jwk(signing.public_jwk())
            except KeyRejected as exc:  # cannot happen with our own RSA keys
                raise InvalidToken(f"The key cannot verify tokens: {exc}.",
                                   reason="key_refused") from None
            self._verification_keys[kid] = key
        return key


