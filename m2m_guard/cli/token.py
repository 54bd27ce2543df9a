"""`m2m-guard token`: the client-credentials grant (RFC 6749 §4.4), printed for the shell.

The token endpoint is `--token-url`, else the `token_endpoint` of the issuer's discovery document
(OpenID Connect, then RFC 8414). The answer's access token goes to stdout alone (so
``TOKEN=$(m2m-guard token)`` works); a one-line summary goes to stderr. A refusal is printed as
the RFC 6749 §5.2 error code and description, with exit 1.

With ``--dpop KEYFILE`` the request carries a DPoP proof (RFC 9449 §5) made with the key in
KEYFILE (`m2m_guard.dpop.DPoPKey`; a new ES256 key is created there, mode 0600, when the file
does not exist), so the token is bound to that key; an endpoint answering ``use_dpop_nonce``
is asked once more with its nonce, and one that issues a Bearer token anyway is an error.
With ``--url`` a ready ``curl`` line for that URL, with a fresh proof (valid about a minute),
goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

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

if TYPE_CHECKING:
    from ..dpop import DPoPKey

__all__ = ["curl_line", "discover_token_endpoint", "dpop_key", "option_or_env", "request_token",
           "run"]

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


def _post(http: httpx.Client, token_url: str, form: dict[str, str], headers: dict[str, str],
          client_id: str, client_secret: str, basic: bool) -> httpx.Response:
    try:
        if basic:
            return http.post(token_url, data=form, headers=headers,
                             # RFC 6749 §2.3.1: form-encode each part before Basic
                             auth=httpx.BasicAuth(quote(client_id, safe=""),
                                                  quote(client_secret, safe="")))
        return http.post(token_url, data=form, headers=headers)
    except httpx.HTTPError as exc:
        raise CommandError(f"cannot reach {token_url}: {type(exc).__name__}: {exc}",
                           EXIT_FAILED) from None


def request_token(http: httpx.Client, token_url: str, client_id: str, client_secret: str, *,
                  scopes: list[str], basic: bool = False,
                  proof: Callable[[str | None], str] | None = None) -> dict[str, Any]:
    """POST the client-credentials grant; the JSON answer, or `CommandError` (exit 1) saying
    why the endpoint refused (RFC 6749 §5.2 `error` and `error_description`). With `proof` (a
    fresh DPoP proof for the token endpoint, given the server's nonce or None) the request
    carries one; a ``use_dpop_nonce`` answer is retried once with the nonce it names."""
    form = {"grant_type": "client_credentials"}
    if not basic:
        form.update(client_id=client_id, client_secret=client_secret)
    if scopes:
        form["scope"] = " ".join(scopes)
    headers = {"accept": "application/json"}
    if proof is not None:
        headers["DPoP"] = proof(None)
    response = _post(http, token_url, form, headers, client_id, client_secret, basic)
    what = f"the token endpoint {token_url}"
    data = _json_object(response, what)
    nonce = response.headers.get("dpop-nonce")
    if proof is not None and response.status_code == 400 and \
            data.get("error") == "use_dpop_nonce" and nonce:
        headers["DPoP"] = proof(nonce)  # RFC 9449 §8: once more, with the server's nonce
        response = _post(http, token_url, form, headers, client_id, client_secret, basic)
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


def dpop_key(path: str) -> tuple[DPoPKey, bool]:
    """The `DPoPKey` in the PEM file `path`, or a new ES256 key saved there (mode 0600) when
    the file does not exist; (key, created)."""
    from ..dpop import DPoPKey  # cryptography: loaded only for --dpop

    target = Path(path)
    if not target.exists():
        key = DPoPKey.generate()
        try:
            key.save(target)
        except OSError as exc:
            raise CommandError(f"cannot write the DPoP key to {path}: {exc.strerror or exc}"
                               ) from None
        return key, True
    try:
        return DPoPKey.load(target), False
    except OSError as exc:
        raise CommandError(f"cannot read the DPoP key {path}: {exc.strerror or exc}") from None
    except (ValueError, TypeError) as exc:
        raise CommandError(f"{path} is not a DPoP private key (an unencrypted PEM EC, Ed25519 "
                           f"or RSA key): {exc}") from None


def curl_line(method: str, url: str, token: str, proof: str) -> str:
    """A ``curl`` command calling `url` with a DPoP-bound `token` and its `proof`."""
    parts = ["curl"]
    if method != "GET":
        parts += ["-X", method]
    parts += ["-H", f"Authorization: DPoP {token}", "-H", f"DPoP: {proof}", url]
    return " ".join(shlex.quote(part) for part in parts)


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
    dpop_file: str | None = getattr(args, "dpop", None)
    call_url: str | None = getattr(args, "url", None)
    method = str(getattr(args, "method", "GET") or "GET").upper()
    if dpop_file is None and call_url is not None:
        raise CommandError("--url makes a curl line for a DPoP-bound token: pass --dpop KEYFILE "
                           "too")
    if call_url is not None:
        check_client_url("--url", call_url)
        if urlsplit(call_url).fragment:
            raise CommandError("--url must not have a fragment")
    if not method.isascii() or not method.isalpha():
        raise CommandError(f"--method must be an HTTP method such as GET or POST, got "
                           f"{method!r}")
    key = None
    if dpop_file is not None:
        key, created = dpop_key(dpop_file)
        if created:
            print(f"created a DPoP key in {dpop_file} (thumbprint {key.thumbprint}); keep it "
                  f"private", file=sys.stderr)
    with httpx.Client(timeout=args.timeout, follow_redirects=False) as http:
        if token_url is None:
            assert issuer is not None
            token_url = discover_token_endpoint(http, issuer)
        endpoint = token_url
        proof = None if key is None else (
            lambda nonce: key.proof("POST", endpoint, nonce=nonce))
        answer = request_token(http, token_url, client_id, client_secret, scopes=scopes,
                               basic=args.basic, proof=proof)
    if key is not None:
        token_type = answer.get("token_type")
        if not isinstance(token_type, str) or token_type.lower() != "dpop":
            raise CommandError(f"the token endpoint {token_url} issued a {token_type} token, "
                               f"not a DPoP-bound one: it does not support DPoP",
                               EXIT_FAILED)
    if args.json:
        print(json.dumps(answer, indent=2, sort_keys=True))
    else:
        print(answer["access_token"])
    granted = answer.get("scope")
    expires = answer.get("expires_in")
    print(f"token for {client_id}: {answer.get('token_type', 'Bearer')}"
          + (f", scope {granted!r}" if isinstance(granted, str) and granted else "")
          + (f", expires in {expires} s" if isinstance(expires, int) else "")
          + (f", bound to the DPoP key {key.thumbprint}" if key is not None else ""),
          file=sys.stderr)
    if key is not None and call_url is not None:
        fresh = key.proof(method, call_url, access_token=answer["access_token"])
        print("call the API within a minute (the proof is fresh now, and used once):",
              file=sys.stderr)
        print(curl_line(method, call_url, answer["access_token"], fresh), file=sys.stderr)
    return EXIT_OK
