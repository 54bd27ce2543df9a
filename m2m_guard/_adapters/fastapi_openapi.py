"""FastAPI's OpenAPI document completed by the guard: the OAuth 2.0 client-credentials security
scheme (`SCHEME_NAME`) and, per operation, the security requirements its guard implies: every
operation the middleware guards (a valid token), and the scopes `require_scopes` /
`require_any_scope` and the `RequireScopes` dependencies demand. Rules that are not (only) about
scopes (`require_claims`, `require_clients`, `require`, `any_of`), from decorators or
`RequireRule` dependencies, are listed in the operation's ``x-m2m-guard-rules`` extension (each
rule in words, expected values included) and at the end of its description, so `/docs` tells a
client what its token needs."""

from __future__ import annotations

import copy
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

from .._core.context import route_requirements
from .._core.requirements import Requirement
from .._core.rules import PathRules
from .._core.scopes import ScopeRequirement
from ..errors import (
    AccessDenied,
    InsufficientScope,
    InvalidRequest,
    InvalidToken,
    IssuerUnavailable,
    MissingToken,
)
from ..settings import GuardSettings

if TYPE_CHECKING:
    from ..verifier import TokenVerifier

__all__ = ["ERROR_SCHEMA_NAME", "RULES_EXTENSION", "SCHEME_NAME", "UNSET_TOKEN_URL",
           "ClientCredentials",
           "announced_token_url", "client_credentials", "complete_schema", "declared_middleware",
           "declared_settings"]

logger = logging.getLogger("m2m_guard")

RULES_EXTENSION = "x-m2m-guard-rules"
"""The operation extension listing its rules other than scopes, in words."""

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
        declared = (*route_requirements(route.endpoint), *_dependency_requirements(route))
        parts = [part for requirement in declared for part in requirement.parts()]
        decorated = _alternatives(part for part in parts if isinstance(part, ScopeRequirement))
        rules = list(dict.fromkeys(part.describe() for part in parts
                                   if not isinstance(part, ScopeRequirement)))
        if rules and decorated is None:
            decorated = [[]]  # a valid token is needed, whatever its scopes
        guarded = public is not None and not public.is_public(route.path_format)
        for method in route.methods or ():
            operation = paths.get(route.path_format, {}).get(method.lower())
            if operation is not None:
                _add_security(operation, decorated, guarded)
                if rules:
                    _add_rules(operation, rules)
    for item in paths.values():
        for operation in item.values():
            if isinstance(operation, dict) and any(
                    SCHEME_NAME in r for r in operation.get("security", ())):
                _add_refusals(operation)
                schema.setdefault("components", {}).setdefault("schemas", {}).setdefault(
                    ERROR_SCHEMA_NAME, copy.deepcopy(_ERROR_SCHEMA))
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


def _dependency_requirements(route: Any) -> tuple[Requirement, ...]:
    """The requirements of the `RequireRule` dependencies of `route` (nested ones included)."""
    found: list[Requirement] = []
    pending = list(getattr(getattr(route, "dependant", None), "dependencies", ()))
    seen = 0
    while pending and seen < 1000:  # bounded: a dependency tree is small
        seen += 1
        dependant = pending.pop(0)
        requirement = getattr(dependant.call, "requirement", None)
        if isinstance(requirement, Requirement):
            found.append(requirement)
        pending.extend(getattr(dependant, "dependencies", ()))
    return tuple(found)


def _add_rules(operation: dict[str, Any], rules: list[str]) -> None:
    """`rules` (in words) as the operation's `RULES_EXTENSION` and in its description."""
    operation[RULES_EXTENSION] = rules
    text = "The access token must satisfy: " + "; ".join(rules) + "."
    description = operation.get("description")
    operation["description"] = f"{description}\n\n{text}" if description else text


def _api_routes(routes: Iterable[Any]) -> Iterator[Any]:
    """The app's path operations with their full paths. FastAPI 0.12x lists them flat in
    `app.routes`; newer versions keep included routers as such and provide
    `iter_route_contexts` to walk them (each context proxies its `APIRoute`)."""
    walk = getattr(fastapi.routing, "iter_route_contexts", None)
    for route in walk(list(routes)) if walk is not None else routes:
        if isinstance(getattr(route, "original_route", route), APIRoute):
            yield route


ERROR_SCHEMA_NAME = "M2MGuardError"
_ERROR_SCHEMA: dict[str, Any] = {
    "title": ERROR_SCHEMA_NAME,
    "type": "object",
    "description": "A refusal by the token guard (RFC 6750 error codes, and missing_token).",
    "required": ["error", "error_description"],
    "properties": {
        "error": {"type": "string", "enum": [
            kind.body_error for kind in (MissingToken, InvalidRequest, InvalidToken,
                                         InsufficientScope, AccessDenied, IssuerUnavailable)]},
        "error_description": {"type": "string"},
        "scope": {"type": "string", "description": "The scopes the operation needs "
                                                   "(insufficient_scope only)."},
    },
}
_REFUSALS = {
    "401": ("No valid access token: missing (error missing_token), or malformed, expired or "
            "not for this API (error invalid_token)."),
    "403": ("The access token lacks a scope the operation needs (error insufficient_scope), "
            "or fails another of its rules (error access_denied)."),
}


def _add_refusals(operation: dict[str, Any]) -> None:
    """Document the guard's 401 and 403 on a guarded `operation` (kept if already there)."""
    responses = operation.setdefault("responses", {})
    for status, description in _REFUSALS.items():
        responses.setdefault(status, {
            "description": description,
            "headers": {"WWW-Authenticate": {
                "description": "The RFC 6750 challenge: Bearer realm, error, error_description "
                               "(and scope for insufficient_scope).",
                "schema": {"type": "string"}}},
            "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{ERROR_SCHEMA_NAME}"}}},
        })


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
