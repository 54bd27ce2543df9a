"""Scalekit's M2M quickstart in Python, run with the official SDK against the local issuer.

`main()` is the quickstart's code, unchanged but for the environment URL and credentials (read
from ``SCALEKIT_ENVIRONMENT_URL`` / ``SCALEKIT_CLIENT_ID`` / ``SCALEKIT_CLIENT_SECRET``, as the
quickstart does, plus the organization and the API to call): register the client over gRPC
(``create_organization_client``), get its token (``generate_client_token``), call the API with
it, and validate it (``validate_access_token_and_get_claims``). It prints one JSON object per
step. `m2m-guard demo` runs it in its own process, with the environment the issuer's banner
prints (the CA trusted through ``GRPC_DEFAULT_SSL_ROOTS_FILE_PATH`` and ``REQUESTS_CA_BUNDLE``),
as a user's program would run; `run_quickstart` prints its steps in the demo's transcript.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["main", "run_quickstart"]


def _emit(step: str, **fields: Any) -> None:
    print(json.dumps({"step": step, **fields}), flush=True)


def main() -> int:  # pragma: no cover - run in a subprocess by run_quickstart
    import requests
    from scalekit import ScalekitClient
    from scalekit.v1.clients.clients_pb2 import OrganizationClient

    organization_id = os.environ["ORGANIZATION_ID"]
    api_url = os.environ["API_URL"]

    # -- the quickstart --------------------------------------------------------------------
    scalekit_client = ScalekitClient(
        os.environ["SCALEKIT_ENVIRONMENT_URL"],
        os.environ["SCALEKIT_CLIENT_ID"],
        os.environ["SCALEKIT_CLIENT_SECRET"],
    )
    m2m_client = OrganizationClient(
        name="GitHub Actions Deployment Service",
        description="Service account for GitHub Actions to deploy applications to production",
        custom_claims=[
            {"key": "environment", "value": "production"},
            {"key": "service", "value": "deployment"},
        ],
        scopes=["deploy:applications", "read:deployments"],
        audience=["deployment-api.acmecorp.com"],
        expiry=3600,
    )
    response = scalekit_client.m2m_client.create_organization_client(
        organization_id=organization_id,
        m2m_client=m2m_client,
    )
    client_id = response[0].client.client_id
    plain_secret = response[0].plain_secret
    _emit("create", client_id=client_id, secret_suffix=plain_secret[-4:])

    token = scalekit_client.generate_client_token(client_id=client_id,
                                                  client_secret=plain_secret)
    _emit("token", parts=len(token.split(".")))

    answer = requests.get(f"{api_url}/deployments",
                          headers={"Authorization": f"Bearer {token}"}, timeout=30)
    _emit("api", status=answer.status_code)

    claims = scalekit_client.validate_access_token_and_get_claims(token)
    _emit("claims", claims={name: claims.get(name) for name in ("sub", "oid", "scopes")})
    return 0


class _Transcript(Protocol):
    failures: int

    def say(self, text: str = "") -> None: ...


def run_quickstart(t: _Transcript, *, env_url: str, client_id: str, client_secret: str,
                   organization_id: str, api_url: str, ca_file: str) -> None:
    """Run `main()` in a new process and print its steps as transcript lines."""
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("SCALEKIT_", "M2M_GUARD_"))}
    trust = {"GRPC_DEFAULT_SSL_ROOTS_FILE_PATH": ca_file, "REQUESTS_CA_BUNDLE": ca_file}
    env.update(trust, SCALEKIT_ENVIRONMENT_URL=env_url, SCALEKIT_CLIENT_ID=client_id,
               SCALEKIT_CLIENT_SECRET=client_secret, ORGANIZATION_ID=organization_id,
               API_URL=api_url, NO_PROXY="127.0.0.1,localhost")
    for name, value in trust.items():
        t.say(f"        export {name}={value}")
    t.say(f"        export SCALEKIT_ENVIRONMENT_URL={env_url} SCALEKIT_CLIENT_ID={client_id} "
          "SCALEKIT_CLIENT_SECRET=…")
    try:
        result = subprocess.run([sys.executable, "-m", "m2m_guard.cli.scalekit_quickstart"],
                                env=env, capture_output=True, text=True, timeout=120,
                                check=False)
    except subprocess.TimeoutExpired:
        t.failures += 1
        t.say("[BAD] the quickstart did not finish within 120 s")
        return
    steps: dict[str, dict[str, Any]] = {}
    for line in result.stdout.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict) and isinstance(item.get("step"), str):
            steps[item["step"]] = item
    expected: list[tuple[str, str, str, str, Callable[[dict[str, Any]], str], str]] = [
        ("create", "gRPC", "ClientService", "m2m_client.create_organization_client",
         lambda s: "OK" if str(s.get("client_id", "")).startswith("m2morg_") else "?", "OK"),
        ("token", "POST", "/oauth/token", "generate_client_token(client_id, secret)",
         lambda s: "200" if s.get("parts") == 3 else "?", "200"),
        ("api", "GET", "/deployments", "the deployment API with that token",
         lambda s: str(s.get("status")), "200"),
        ("claims", "JWT", "(local, /keys)", "validate_access_token_and_get_claims",
         lambda s: "OK" if s.get("claims", {}).get("sub") else "?", "OK"),
    ]
    for step, method, path, what, status_of, wanted in expected:
        if step not in steps:
            t.failures += 1
            t.say(f"[BAD] {method:4} {path:18} {what:40} -> no answer")
            detail = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
            t.say(f"        {detail[:300]}")
            return
        status = status_of(steps[step])
        ok = status == wanted
        t.failures += not ok
        t.say(f"[{'ok ' if ok else 'BAD'}] {method:4} {path:18} {what:40} -> {status}"
              + ("" if ok else f" (expected {wanted})"))
        if step == "create":
            t.say(f"        client_id {steps[step]['client_id']}, "
                  f"plain_secret …{steps[step]['secret_suffix']} (shown once)")
        if step == "claims":
            t.say(f"        claims {json.dumps(steps[step]['claims'], separators=(', ', ': '))}")


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
