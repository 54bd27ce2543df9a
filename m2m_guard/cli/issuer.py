"""`m2m-guard issuer`: serve the local issuer; `m2m-guard rotate-keys`: rotate its signing key.

`issuer` opens (or creates) the SQLite database, serves `LocalIssuer` with uvicorn in a thread and
waits for Ctrl-C or SIGTERM, then stops the server and closes the database (exit 0). On the first
start with a new database it prints the environment API client's secret, once: only its hash is
stored.

`rotate-keys` talks to a running issuer over its management API (``POST /api/v1/keys:rotate``)
with the environment API client's credentials, as any Scalekit-style tool would.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
from typing import Any

import httpx

from ..local_issuer.tls import export_lines
from .common import EXIT_FAILED, EXIT_OK, CommandError, check_client_url, wait_for_stop
from .token import discover_token_endpoint, option_or_env, request_token

__all__ = ["rotate", "run"]


def _say(text: str = "") -> None:
    print(text, flush=True)


def run(args: argparse.Namespace) -> int:
    try:
        from ..local_issuer import LocalIssuer
    except ImportError as exc:
        raise CommandError(f"the local issuer needs its server dependencies: pip install "
                           f"'m2m-guard[server]' ({exc})") from None
    if not 0 <= args.port <= 65535:
        raise CommandError(f"--port must be 0-65535, got {args.port}")
    try:
        issuer = LocalIssuer(args.db, issuer_url=args.issuer_url)
    except (ValueError, sqlite3.Error, OSError) as exc:
        raise CommandError(f"cannot open the issuer with --db {args.db}: {exc}") from None
    running = None
    try:
        running = _running(issuer, args)
        try:
            running.start()
        except RuntimeError as exc:
            raise CommandError(f"{exc} (is the port in use? try --port 0)", EXIT_FAILED) from None
        _banner(issuer, running, args)
        wait_for_stop()
    finally:
        if running is not None:
            running.stop()
        issuer.close()
    _say("local issuer stopped")
    return EXIT_OK


def _running(issuer: Any, args: argparse.Namespace) -> Any:
    """The server for `args`: uvicorn over plain HTTP, or hypercorn with --tls / --grpc (gRPC
    comes with --tls whenever the emulator extra is installed)."""
    from ..local_issuer import RunningIssuer
    from ..local_issuer.grpc_service import grpc_available

    grpc = bool(args.grpc or (args.tls and grpc_available()))
    if grpc and not grpc_available():
        raise CommandError("--grpc needs the emulator extra (Python 3.11+): "
                           "pip install 'm2m-guard[emulator]'")
    if args.tls:
        try:
            import hypercorn  # noqa: F401
        except ImportError:
            raise CommandError("--tls needs the emulator extra (hypercorn): "
                               "pip install 'm2m-guard[emulator]'") from None
    try:
        return RunningIssuer(issuer, host=args.host, port=args.port, tls=args.tls, grpc=grpc)
    except OSError as exc:
        raise CommandError(f"cannot create the TLS certificates beside --db {args.db}: "
                           f"{exc}", EXIT_FAILED) from None


def _banner(issuer: Any, running: Any, args: argparse.Namespace) -> None:
    url = running.url
    base = issuer.issuer_url or url
    _say(f"m2m-guard local issuer running at {url}  (Ctrl-C to stop)")
    _say(f"  issuer     {base}")
    _say(f"  discovery  {base}/.well-known/openid-configuration")
    _say(f"  keys       {base}/keys")
    _say(f"  token      {base}/oauth/token")
    _say(f"  database   {args.db}")
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        _say(f"  warning: listening on {args.host}: other machines can reach this development "
             f"server" + ("" if args.issuer_url else "; pass --issuer-url with the URL they use"))
    if running.grpc:
        _say("  gRPC       scalekit.v1.clients.ClientService on the same port (HTTP/2)")
    if running.tls is not None:
        _say(f"  TLS        local CA {running.tls.ca_cert}; make clients trust it with:")
        for line in export_lines(running.tls):
            _say(f"  {line}")
    _say()
    if issuer.new_admin_secret is not None:
        _say("Environment API client created; its secret is shown this once (only a hash is "
             "stored):")
        _say(f"  export SCALEKIT_ENVIRONMENT_URL={base}")
        _say(f"  export SCALEKIT_CLIENT_ID={issuer.admin_client_id}")
        _say(f"  export SCALEKIT_CLIENT_SECRET={issuer.new_admin_secret}")
    elif os.environ.get("SCALEKIT_CLIENT_ID"):
        _say(f"Environment API client: {issuer.admin_client_id} (from SCALEKIT_CLIENT_ID and "
             f"SCALEKIT_CLIENT_SECRET)")
    else:
        _say(f"Environment API client: {issuer.admin_client_id} (its secret was shown when it "
             f"was created; set SCALEKIT_CLIENT_ID and SCALEKIT_CLIENT_SECRET to choose your "
             f"own)")
    _say(f"Register a client: POST {base}/api/v1/organizations/<org_id>/clients "
         "with the environment client's token")


def rotate(args: argparse.Namespace) -> int:
    """`m2m-guard rotate-keys`: start a key rotation on a running local issuer."""
    issuer = option_or_env(args.issuer, "SCALEKIT_ENVIRONMENT_URL", "--issuer").rstrip("/")
    check_client_url("issuer", issuer)
    client_id = option_or_env(args.client_id, "SCALEKIT_CLIENT_ID", "--client-id")
    client_secret = option_or_env(args.client_secret, "SCALEKIT_CLIENT_SECRET", "--client-secret")
    body: dict[str, Any] = {}
    if args.publish_delay is not None:
        if args.publish_delay < 0:
            raise CommandError("--publish-delay must not be negative")
        body["publish_delay"] = args.publish_delay
    if getattr(args, "force", False):
        body["force"] = True
    with httpx.Client(timeout=args.timeout, follow_redirects=False) as http:
        token_url = discover_token_endpoint(http, issuer)
        answer = request_token(http, token_url, client_id, client_secret, scopes=[])
        try:
            response = http.post(f"{issuer}/api/v1/keys:rotate", json=body,
                                 headers={"authorization": f"Bearer {answer['access_token']}"})
        except httpx.HTTPError as exc:
            raise CommandError(f"cannot reach {issuer}: {type(exc).__name__}: {exc}",
                               EXIT_FAILED) from None
    try:
        data = response.json()
    except ValueError:
        data = None
    if response.status_code != 201 or not isinstance(data, dict):
        message = data.get("message") if isinstance(data, dict) else None
        raise CommandError(f"the issuer refused the rotation (HTTP {response.status_code})"
                           + (f": {message}" if isinstance(message, str) else ""), EXIT_FAILED)
    if args.json:
        print(json.dumps(data, indent=2))
        return EXIT_OK
    print(f"new signing key {data.get('kid')}")
    for key in data.get("keys", []):
        if isinstance(key, dict):
            print(f"  {key.get('kid')}  {key.get('status')!s:<8}  signs from "
                  f"{key.get('signs_from')}  removed after {key.get('remove_after') or '-'}")
    sys.stdout.flush()
    return EXIT_OK
