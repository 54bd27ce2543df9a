"""`m2m-guard token`: the client-credentials grant (RFC 6749 §4.4), printed for the shell.

The token endpoint is `--token-url`, else the `token_endpoint` of the issuer's discovery document
(OpenID Connect, then RFC 8414). The answer's access token goes to stdout alone (so
``TOKEN=$(m2m-guard token)`` works); a one-line summary goes to stderr. A refusal is printed as
the RFC 6749 §5.2 error code and description, with exit 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any
from urllib.parse import quote

import httpx

from .._core.encoding import loads_json
from .._core.fetch import discovery_urls
from ..errors import safe_description
from .common import (
    EXIT_FAILED,
    EXIT_OK,
    CommandError,
    check_client_url,
    read_stdin_value,
    split_scopes,
)

__all__ = ["discover_token_endpoint", "option_or_env", "request_token", "run"]

_MAX_BODY = 65536


def _json_object(response: httpx.Response, what: str) -> dict[str, Any]:
    if len(response.content) > _MAX_BODY:
        raise CommandError(f"{what} sent more than {_MAX_BODY} bytes", EXIT_FAILED)
    try:
        data = loads_json(response.content)
    except ValueError:
        raise CommandError(f"{what} answered HTTP {response.status_code} with a body that is "
                           f"not JSON", EXIT_FAILED) from None
    if not isinstance(data, dict):
        raise CommandError(f"{what} answered with JSON that is not an object", EXIT_FAILED)
    return data


def discover_token_endpoint(http: httpx.Client, issuer: str) -> str:
    """The `token_endpoint` named by the issuer's discovery document."""
    tried = []
    for url in discovery_urls(issuer):
        try:
            response = http.get(url, headers={"accept": "application/json"})
        except httpx.HTTPError as exc:
            raise CommandError(f"cannot reach {url}: {type(exc).__name__}: {exc}",
                               EXIT_FAILED) from None
        if response.status_code == 404:
            tried.append(url)
            continue
        if response.status_code != 200:
            raise CommandError(f"discovery at {url} answered HTTP {response.status_code}",
                               EXIT_FAILED)
        endpoint = _json_object(response, f"discovery at {url}").get("token_endpoint")
        if not isinstance(endpoint, str) or not endpoint:
            raise CommandError(f"discovery at {url} names no token_endpoint; pass --token-url",
                               EXIT_FAILED)
        return check_client_url("token endpoint", endpoint)
    raise CommandError(f"no discovery document ({' and '.join(tried)} answered 404); "
                       f"pass --token-url", EXIT_FAILED)


def request_token(http: httpx.Client, token_url: str, client_id: str, client_secret: str, *,
                  scopes: list[str], basic: bool = False) -> dict[str, Any]:
    """POST the client-credentials grant; the JSON answer, or `CommandError` (exit 1) saying
    why the endpoint refused (RFC 6749 §5.2 `error` and `error_description`)."""
    form = {"grant_type": "client_credentials"}
    if not basic:
        form.update(client_id=client_id, client_secret=client_secret)
    if scopes:
        form["scope"] = " ".join(scopes)
    try:
        headers = {"accept": "application/json"}
        if basic:
            response = http.post(token_url, data=form, headers=headers,
                                 # RFC 6749 §2.3.1: form-encode each part before Basic
                                 auth=httpx.BasicAuth(quote(client_id, safe=""),
                                                      quote(client_secret, safe="")))
        else:
            response = http.post(token_url, data=form, headers=headers)
    except httpx.HTTPError as exc:
        raise CommandError(f"cannot reach {token_url}: {type(exc).__name__}: {exc}",
                           EXIT_FAILED) from None
    what = f"the token endpoint {token_url}"
    data = _json_object(response, what)
    if response.status_code != 200:
        error = data.get("error")
        description = data.get("error_description")
        if not isinstance(error, str):
            raise CommandError(f"{what} answered HTTP {response.status_code} without an "
                               f"OAuth error code", EXIT_FAILED)
        detail = f": {safe_description(description)}" if isinstance(description, str) else ""
        raise CommandError(f"the token endpoint refused the request (HTTP "
                           f"{response.status_code}, {safe_description(error)}){detail}",
                           EXIT_FAILED)
    token = data.get("access_token")
    if not isinstance(token, str) or not token or not (token.isascii() and token.isprintable()):
        raise CommandError(f"{what} answered 200 without a usable access_token", EXIT_FAILED)
    return data


def option_or_env(value: str | None, variable: str, option: str) -> str:
    """The option's value, else the environment variable's; `CommandError` naming both."""
    value = value or os.environ.get(variable, "").strip() or None
    if value is None:
        raise CommandError(f"no {option.lstrip('-').replace('-', ' ')}: pass {option} "
                           f"or set {variable}")
    return value


def run(args: argparse.Namespace) -> int:
    client_id = option_or_env(args.client_id, "SCALEKIT_CLIENT_ID", "--client-id")
    client_secret = option_or_env(args.client_secret, "SCALEKIT_CLIENT_SECRET", "--client-secret")
    if client_secret == "-":  # noqa: S105 - the "read it from stdin" marker
        client_secret = read_stdin_value("the client secret")
    scopes = split_scopes(args.scope)
    token_url = args.token_url
    issuer = None
    if token_url is None:
        issuer = option_or_env(args.issuer, "SCALEKIT_ENVIRONMENT_URL", "--issuer")
        check_client_url("issuer", issuer)
    else:
        check_client_url("token endpoint", token_url)
    if args.timeout <= 0:
        raise CommandError("--timeout must be greater than 0")
    with httpx.Client(timeout=args.timeout, follow_redirects=False) as http:
        if token_url is None:
            assert issuer is not None
            token_url = discover_token_endpoint(http, issuer)
        answer = request_token(http, token_url, client_id, client_secret, scopes=scopes,
                               basic=args.basic)
    if args.json:
        print(json.dumps(answer, indent=2, sort_keys=True))
    else:
        print(answer["access_token"])
    granted = answer.get("scope")
    expires = answer.get("expires_in")
    print(f"token for {client_id}: {answer.get('token_type', 'Bearer')}"
          + (f", scope {granted!r}" if isinstance(granted, str) and granted else "")
          + (f", expires in {expires} s" if isinstance(expires, int) else ""),
          file=sys.stderr)
    return EXIT_OK
