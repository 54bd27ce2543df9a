"""End-to-end demo: a local key-set issuer, the deployment API under uvicorn, real HTTP calls.

Everything runs on loopback ports chosen at start: the issuer publishes its JWKS and discovery
document, the API verifies tokens against it, and each call is printed with its result. Exits 0
when every call got the expected answer.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from pathlib import Path

import httpx
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from starlette_app import create_app

from m2m_guard import GuardSettings
from m2m_guard.encoding import b64url_decode, b64url_encode
from m2m_guard.local_issuer import KeySetServer, SigningKey

CLIENT = "GitHub Actions Deployment Service"
CLIENT_ID = "m2morg_68315758685323697"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(app: object, port: int) -> tuple[uvicorn.Server, threading.Thread]:
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                            lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise SystemExit("the API server did not start")
        time.sleep(0.02)
    return server, thread


def tamper(token: str) -> str:
    """Grant the token an extra scope without re-signing it (what an attacker would try)."""
    header, payload, signature = token.split(".")
    claims = json.loads(b64url_decode(payload))
    claims["scopes"].append("admin:platform")
    forged = b64url_encode(json.dumps(claims, separators=(",", ":")).encode())
    return ".".join((header, forged, signature))


def main() -> int:
    key = SigningKey.generate("RS256")
    with KeySetServer([key]) as issuer:
        print(f"issuer   {issuer.url}  (JWKS at {issuer.jwks_url})")
        settings = GuardSettings(issuer=issuer.url, audience="deployment-api",
                                 public_paths=("/health",))
        port = free_port()
        server, thread = serve(create_app(settings), port)
        api = f"http://127.0.0.1:{port}"
        print(f"api      {api}  (deployment API guarded by m2m_guard)")
        token = issuer.mint(scopes=["deploy:applications", "read:deployments"],
                           sub=CLIENT_ID, client_id=CLIENT_ID,
                           custom_claims={"client_name": CLIENT})
        expired = issuer.mint(iat=int(time.time()) - 7200, nbf=int(time.time()) - 7200,
                              exp=int(time.time()) - 3600)
        print(f"client   {CLIENT} ({CLIENT_ID}), scopes: deploy:applications read:deployments")
        print()
        bearer = {"Authorization": f"Bearer {token}"}
        calls = [
            ("GET", "/health", {}, None, 200, "public path, no token needed"),
            ("GET", "/deployments", bearer, None, 200, "token with read:deployments"),
            ("POST", "/deployments", bearer, {"service": "billing", "version": "1.5.0"}, 202,
             "token with deploy:applications"),
            ("GET", "/admin/audit", bearer, None, 403, "token lacks admin:platform"),
            ("GET", "/deployments", {}, None, 401, "no token"),
            ("GET", "/deployments", {"Authorization": f"Bearer {tamper(token)}"}, None, 401,
             "token with a forged extra scope"),
            ("GET", "/deployments", {"Authorization": f"Bearer {expired}"}, None, 401,
             "expired token"),
        ]
        failures = 0
        with httpx.Client(base_url=api, timeout=10) as client:
            for method, path, headers, body, expected, what in calls:
                response = client.request(method, path, headers=headers, json=body)
                ok = response.status_code == expected
                failures += not ok
                mark = "ok " if ok else "BAD"
                print(f"[{mark}] {method:4} {path:14} {what:34} -> {response.status_code}")
                challenge = response.headers.get("www-authenticate")
                if challenge:
                    print(f"        WWW-Authenticate: {challenge}")
                elif response.status_code < 300:
                    print(f"        {response.text[:110]}")
        server.should_exit = True
        thread.join(10)
    print()
    print("all calls answered as expected" if not failures else f"{failures} unexpected answers")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
