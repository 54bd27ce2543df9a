"""FastAPI's OpenAPI document completed by the guard: the OAuth 2.0 client-credentials security
scheme (`SCHEME_NAME`) and, per operation, the security requirements its guard implies: every
operation the middleware guards (a valid token), and the scopes `require_scopes` /
`require_any_scope` and the `RequireScopes` dependencies demand."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import fastapi.routing
from fastapi.encoders import jsonable_encoder
from fastapi.openapi.models import OAuthFlowClientCredentials, OAuthFlows
from fastapi.routing import APIRoute
from fastapi.security import OAuth2
from starlette.requests import HTTPConnection

from .._core.context import scope_requirements
from .._core.rules import PathRules
from .._core.scopes import ScopeRequirement
from ..settings import GuardSettings

if TYPE_CHECKING:
    from ..verifier import TokenVerifier

__all__ = ["SCHEME_NAME", "UNSET_TOKEN_URL", "ClientCredentials", "announced_token_url",
           "client_credentials", "complete_schema", "declared_middleware", "declared_settings"]

logger = logging.getLogger("m2m_guard")

SCHEME_NAME = "OAuth2ClientCredentials"
"""The name of the security scheme in ``components.securitySchemes`` (and in `/docs`)."""

# What the scheme model says before an app's guard fills in the real URL.
UNSET_TOKEN_URL = "/oauth/token"  # noqa: S105 - a path, not a secret


class ClientCredentials(OAuth2):
    """The OAuth 2.0 client-credentials security scheme, as FastAPI declares schemes.

    It only declares: `m2m_token` does the extraction and verification (RFC 6750 framing, one
    `Authorization` header, no token in the query), so ``__call__`` returns nothing and never
    raises FastAPI's own 401.
    """

    def __init__(self) -> None:
        super().__init__(
            flows=OAuthFlows(clientCredentials=OAuthFlowClientCredentials(
                tokenUrl=UNSET_TOKEN_URL, scopes={})),
            scheme_name=SCHEME_NAME,
            description=("OAuth 2.0 client credentials: send the access token as "
                         "`Authorization: Bearer <token>`."),
            auto_error=False,
        )

    async def __call__(self, request: HTTPConnection) -> None:
        return None


client_credentials = ClientCredentials()


def announced_token_url(configured: str | None, settings: GuardSettings,
                        verifier: TokenVerifier | None, warned: set[str]) -> str:
    """The token endpoint the document announces: `configured` (``token_url``), else the one
    discovery found, else a guess under the issuer (logged once per issuer in `warned`, with
    what to set)."""
    url = configured
    if url is None and verifier is not None:
        url = verifier.token_endpoint()
    if url is None:
        issuer = settings.issuers[0].issuer
        url = issuer.rstrip("/") + UNSET_TOKEN_URL
        if issuer not in warned:
            warned.add(issuer)
            logger.warning(
                "m2m_guard does not know the token endpoint yet (discovery has not run or "
                "named none); the OpenAPI document shows %s. Set M2M_GUARD_TOKEN_URL "
                "(token_url) to the issuer's token endpoint.", url)
    return url


def declared_middleware(app: Any, cls: type) -> Any:
    """The app's declared middleware of class `cls` (``app.user_middleware``), or None: known
    before the middleware instance exists."""
    for entry in (getattr(app, "user_middleware", None) or ()):
        if getattr(entry, "cls", None) is cls:
            return entry
    return None


def declared_settings(entry: Any) -> GuardSettings | None:
    """The `GuardSettings` a declared middleware entry was given (directly or by its verifier)."""
    if entry is None:
        return None
    kwargs = getattr(entry, "kwargs", None) or getattr(entry, "options", None) or {}
    # (Starlette before 0.35 kept a middleware's keyword arguments in `options`)
    settings = kwargs.get("settings")
    if settings is None and kwargs.get("verifier") is not None:
        settings = kwargs["verifier"].settings
    return settings if isinstance(settings, GuardSettings) else None


def complete_schema(schema: dict[str, Any], routes: Iterable[Any], public: PathRules | None,
                    token_url: Callable[[], str],
                    descriptions: Mapping[str, str]) -> dict[str, Any]:
    """Complete FastAPI's `schema` in place: security requirements of `routes` (guarded by the
    middleware unless `public` says otherwise; `public` None: no middleware) and of their
    `require_scopes` decorators, and the scheme with `token_url()` and the scopes in use."""
    paths = schema.get("paths", {})
    for route in _api_routes(routes):
        if not route.include_in_schema or route.path_format is None:
            continue
        decorated = _alternatives(scope_requirements(route.endpoint))
        guarded = public is not None and not public.is_public(route.path_format)
        for method in route.methods or ():
            operation = paths.get(route.path_format, {}).get(method.lower())
            if operation is not None:
                _add_security(operation, decorated, guarded)
    requirements = [requirement for item in paths.values() for operation in item.values()
                    if isinstance(operation, dict)
                    for requirement in operation.get("security", ())]
    used = sorted({scope for requirement in requirements
                   for scope in requirement.get(SCHEME_NAME, ())})
    if any(SCHEME_NAME in requirement for requirement in requirements):
        schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
        scheme = schemes.setdefault(SCHEME_NAME, jsonable_encoder(
            client_credentials.model, by_alias=True, exclude_none=True))
        flow = scheme.setdefault("flows", {}).setdefault("clientCredentials", {})
        flow["tokenUrl"] = token_url()
        flow["scopes"] = {name: descriptions.get(name, "") for name in used}
    return schema


def _api_routes(routes: Iterable[Any]) -> Iterator[Any]:
    """The app's path operations with their full paths. FastAPI 0.12x lists them flat in
    `app.routes`; newer versions keep included routers as such and provide
    `iter_route_contexts` to walk them (each context proxies its `APIRoute`)."""
    walk = getattr(fastapi.routing, "iter_route_contexts", None)
    for route in walk(list(routes)) if walk is not None else routes:
        if isinstance(getattr(route, "original_route", route), APIRoute):
            yield route


def _alternatives(requirements: Iterable[ScopeRequirement]) -> list[list[str]] | None:
    """Stacked decorator requirements as OpenAPI alternatives (each a list of scopes, all
    needed); None when there are none."""
    requirements = tuple(requirements)
    if not requirements:
        return None
    all_of = [scope for r in requirements for scope in r.all_of]
    choices = [r.any_of for r in requirements if r.any_of]
    return [list(dict.fromkeys([*all_of, *picked])) for picked in itertools.product(*choices)]


def _add_security(operation: dict[str, Any], decorated: list[list[str]] | None,
                  guarded: bool) -> None:
    security: list[dict[str, list[str]]] = operation.get("security", [])
    ours = [r for r in security if SCHEME_NAME in r]
    if decorated is None:
        if guarded and not ours:
            operation["security"] = [*security, {SCHEME_NAME: []}]
        return
    if not ours:  # only the decorator: its alternatives
        merged = [{SCHEME_NAME: scopes} for scopes in decorated]
    else:  # a dependency too: each of its requirements with each decorator alternative
        merged = [{**r, SCHEME_NAME: list(dict.fromkeys([*r[SCHEME_NAME], *scopes]))}
                  for r in ours for scopes in decorated]
    rest = [r for r in security if SCHEME_NAME not in r]
    combined = [*rest, *merged]
    operation["security"] = [r for i, r in enumerate(combined) if r not in combined[:i]]
