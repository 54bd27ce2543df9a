"""The `m2m-guard` command: `issuer`, `rotate-keys`, `token`, `verify`, `doctor` and `demo`.

``m2m-guard --help`` and ``m2m-guard <command> --help`` describe each command. Exit codes are
the same for all of them:

- 0: done, the token is valid, every check passed;
- 1: refused or failed (a token refused, the token endpoint said no, a check failed, an issuer
  unreachable);
- 2: usage or configuration error (a bad option, a missing or invalid ``M2M_GUARD_*`` or
  ``SCALEKIT_*`` variable).

Each command's module is imported only when that command runs, so ``--help`` and `verify` do not
load the local issuer or a web server.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CommandError

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]

_EPILOG = """\
exit codes: 0 ok, 1 refused or a check failed, 2 usage or configuration error.
Run `m2m-guard <command> --help` for the options of each command."""


class _Formatter(argparse.HelpFormatter):
    """Wraps each line of a description or epilog on its own (argparse would merge them)."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "\n".join(super(_Formatter, self)._fill_text(line, width, indent)
                         for line in text.splitlines())


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the whole command (kept import-light: no frameworks)."""
    parser = argparse.ArgumentParser(
        prog="m2m-guard", formatter_class=_Formatter, epilog=_EPILOG,
        description="Machine-to-machine OAuth 2.0 tokens on your machine: a local "
                    "Scalekit-compatible issuer, client-credentials tokens, verification "
                    "and diagnostics.")
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"m2m-guard {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="<command>")

    issuer = commands.add_parser(
        "issuer", formatter_class=_Formatter, epilog=_EPILOG,
        help="serve the local Scalekit-compatible issuer",
        description="Serve the local Scalekit-compatible authorization server: management API "
                    "under /api/v1/, POST /oauth/token, /keys and discovery. On the first start "
                    "with a new database it prints the environment API client's id and secret "
                    "once (or takes them from SCALEKIT_CLIENT_ID / SCALEKIT_CLIENT_SECRET). "
                    "Ctrl-C stops it.")
    issuer.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: %(default)s)")
    issuer.add_argument("--port", type=int, default=8080,
                        help="port to listen on; 0 picks a free one (default: %(default)s)")
    issuer.add_argument("--db", default="m2m-issuer.db",
                        help="SQLite file holding clients and keys; ':memory:' keeps nothing "
                             "(default: %(default)s)")
    issuer.add_argument("--issuer-url", default=None,
                        help="the issuer URL put in tokens and discovery, when clients reach "
                             "the server under another name (default: the listening URL)")
    issuer.add_argument("--tls", action="store_true",
                        help="serve HTTPS (HTTP/1.1 and HTTP/2) with a local CA and server "
                             "certificate kept in <db>.tls, and print the lines that make "
                             "clients trust it; with the emulator extra, the Scalekit gRPC "
                             "client-management service too")
    issuer.add_argument("--grpc", action="store_true",
                        help="serve the Scalekit gRPC client-management service beside the "
                             "HTTP API on the same port (needs the emulator extra)")

    rotate = commands.add_parser(
        "rotate-keys", formatter_class=_Formatter, epilog=_EPILOG,
        help="rotate the signing key of a running local issuer",
        description="Start a key rotation on a running local issuer through its management "
                    "API (POST /api/v1/keys:rotate), authenticated as the environment API "
                    "client. The new key is published at once and signs after the publish "
                    "delay; the old key stays published until the tokens it signed expire.")
    rotate.add_argument("--issuer", metavar="URL",
                        help="the issuer URL (default: $SCALEKIT_ENVIRONMENT_URL)")
    rotate.add_argument("--client-id", help="environment API client id "
                                            "(default: $SCALEKIT_CLIENT_ID)")
    rotate.add_argument("--client-secret", help="default: $SCALEKIT_CLIENT_SECRET")
    rotate.add_argument("--publish-delay", type=float, metavar="SECONDS",
                        help="seconds the new key is published before it signs (default: the "
                             "issuer's, its key set max-age)")
    rotate.add_argument("--force", action="store_true",
                        help="at the key-set bound (10 keys), remove the first retiring key to go "
                             "now instead of refusing (tokens it signed are then refused)")
    rotate.add_argument("--json", action="store_true", help="print the answer as JSON")
    rotate.add_argument("--timeout", type=float, default=10.0, help=argparse.SUPPRESS)

    token = commands.add_parser(
        "token", formatter_class=_Formatter, epilog=_EPILOG,
        help="get an access token with the client-credentials grant",
        description="Request an access token with the client-credentials grant (RFC 6749 §4.4) "
                    "and print it. The token endpoint comes from --token-url, else from the "
                    "issuer's discovery document. Prefer the SCALEKIT_CLIENT_SECRET variable "
                    "to --client-secret: command lines are visible to other local users.")
    token.add_argument("--issuer", metavar="URL",
                       help="the environment / issuer URL (default: $SCALEKIT_ENVIRONMENT_URL)")
    token.add_argument("--token-url", metavar="URL",
                       help="the token endpoint, skipping discovery")
    token.add_argument("--client-id", help="default: $SCALEKIT_CLIENT_ID")
    token.add_argument("--client-secret",
                       help="default: $SCALEKIT_CLIENT_SECRET; '-' reads it from stdin")
    token.add_argument("--scope", action="append", default=[], metavar="SCOPE",
                       help="ask for a subset of the client's scopes (repeatable, or "
                            "space-separated)")
    token.add_argument("--basic", action="store_true",
                       help="send the credentials with HTTP Basic instead of the form body")
    token.add_argument("--json", action="store_true",
                       help="print the whole token response as JSON")
    token.add_argument("--timeout", type=float, default=10.0,
                       help="seconds for each HTTP request (default: %(default)s)")
    token.add_argument("--dpop", metavar="KEYFILE",
                       help="get a DPoP-bound token (RFC 9449) for the key in KEYFILE (a PEM "
                            "private key, created with mode 0600 when the file does not exist)")
    token.add_argument("--url", metavar="URL",
                       help="with --dpop: the API URL to call; a ready curl line with a fresh "
                            "proof for it goes to stderr")
    token.add_argument("--method", default="GET",
                       help="with --dpop and --url: the HTTP method of that call "
                            "(default: %(default)s)")

    verify = commands.add_parser(
        "verify", formatter_class=_Formatter, epilog=_EPILOG,
        help="verify a token with the M2M_GUARD_* configuration",
        description="Verify an access token exactly as the guard would, with the settings "
                    "from the M2M_GUARD_* environment variables (at least M2M_GUARD_ISSUER and "
                    "M2M_GUARD_AUDIENCE). Prints the verified claims as JSON, or why the token "
                    "is refused (exit 1).")
    verify.add_argument("token", metavar="TOKEN",
                        help="the access token (a leading 'Bearer ' is ignored); '-' reads "
                             "it from stdin")
    verify.add_argument("--scope", action="append", default=[], metavar="SCOPE",
                        help="also require these scopes (repeatable, or space-separated)")

    doctor = commands.add_parser(
        "doctor", formatter_class=_Formatter, epilog=_EPILOG,
        help="show the effective configuration and check each issuer's keys",
        description="Print every setting with its source (default or M2M_GUARD_* variable), "
                    "then, for each issuer, fetch discovery and the key set as the guard "
                    "does and report reachability, issuer match, keys (kid, type, algorithm, "
                    "size), keys dropped and why, and caching (Cache-Control, ETag, effective "
                    "TTL). Exit 1 when a check fails.")
    doctor.add_argument("--json", action="store_true", help="print the report as JSON")

    demo = commands.add_parser(
        "demo", formatter_class=_Formatter, epilog=_EPILOG,
        help="run the end-to-end demo on loopback",
        description="Start the local issuer (in memory) and the example deployment API on "
                    "free loopback ports, register the 'GitHub Actions Deployment Service' "
                    "client through the management API, get its token and call the API, "
                    "showing each answer. Exit 1 if an answer is not the expected one.")
    demo.add_argument("--serve", action="store_true",
                      help="keep both servers running and print curl commands to try by hand "
                           "(Ctrl-C stops)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line `argv` (default: ``sys.argv[1:]``); return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        if args.command == "issuer":
            from .issuer import run
        elif args.command == "rotate-keys":
            from .issuer import rotate as run
        elif args.command == "token":
            from .token import run
        elif args.command == "verify":
            from .verify import run
        elif args.command == "doctor":
            from .doctor import run
        else:
            from .demo import run
        return run(args)
    except CommandError as exc:
        print(f"m2m-guard {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
