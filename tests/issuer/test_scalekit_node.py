"""The official Scalekit Node SDK (@scalekit-sdk/node, pinned in tests/node/package.json and
installed by `make node-sdk`), unchanged, against the local issuer: over HTTPS (trusting the
local CA through NODE_EXTRA_CA_CERTS) and over plain HTTP (gRPC by HTTP/2 prior knowledge).

tests/node/scalekit_flow.cjs runs registration, get, list, token, validation with and without
the required scopes, an update narrowing the scopes, a secret rotation and each error answer,
and prints every answer as JSON. Without Node.js or the installed package these tests say so,
and in CI (CI set) they fail instead of skipping."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from m2m_guard.local_issuer import LocalIssuer, serve_issuer
from tests.packages import require_package

from .conftest import ADMIN_ID, ADMIN_SECRET, ORG

require_package("connectrpc")  # the issuer's gRPC service

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
SDK = NODE_DIR / "node_modules" / "@scalekit-sdk" / "node" / "package.json"


def _node() -> str:
    node = shutil.which("node")
    problem = None
    if node is None:
        problem = "Node.js (node) is not on PATH"
    elif not SDK.exists():
        problem = f"the Node SDK is not installed in {NODE_DIR} (run `make node-sdk`)"
    if problem is not None:
        message = f"the Scalekit Node SDK tests cannot run: {problem}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    assert node is not None
    return node


@pytest.fixture(scope="module", params=["https", "http"])
def flow(request: pytest.FixtureRequest,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, Any]]]:
    node = _node()
    issuer = LocalIssuer(admin_client_id=ADMIN_ID, admin_client_secret=ADMIN_SECRET,
                         key_publish_delay=0)
    tls = tmp_path_factory.mktemp("tls") if request.param == "https" else False
    try:
        with serve_issuer(issuer, tls=tls, grpc=True) as running:
            env = {name: value for name, value in os.environ.items()
                   if not name.startswith(("SCALEKIT_", "NODE_"))}
            env.update(SCALEKIT_ENVIRONMENT_URL=running.url, SCALEKIT_CLIENT_ID=ADMIN_ID,
                       SCALEKIT_CLIENT_SECRET=ADMIN_SECRET, ORGANIZATION_ID=ORG)
            if running.tls is not None:
                env["NODE_EXTRA_CA_CERTS"] = str(running.tls.ca_cert)
            result = subprocess.run([node, str(NODE_DIR / "scalekit_flow.cjs")], env=env,
                                    capture_output=True, text=True, timeout=120, check=False)
            assert result.returncode == 0, result.stderr
            yield running.url, json.loads(result.stdout)
    finally:
        issuer.close()


def _ok(results: dict[str, Any], step: str) -> Any:
    assert "ok" in results[step], f"{step}: {results[step]}"
    return results[step]["ok"]


def test_registration_get_and_list(flow: tuple[str, dict[str, Any]]) -> None:
    _, results = flow
    created = _ok(results, "create")
    assert created["clientId"].startswith("m2morg_")
    assert created["plainSecret"].startswith("test_") and created["secrets"] == 1
    assert created["scopes"] == ["deploy:applications", "read:deployments"]
    assert created["customClaims"] == [["github_repository", "acmecorp/inventory-service"]]
    assert _ok(results, "get") == {"clientId": created["clientId"],
                                   "name": "GitHub Actions deployer", "organizationId": ORG}
    assert _ok(results, "list") == {"total": 1, "ids": [created["clientId"]]}


def test_token_validation_and_narrowing(flow: tuple[str, dict[str, Any]]) -> None:
    _, results = flow
    assert _ok(results, "token").count(".") == 2
    assert _ok(results, "validate") is True  # issuer, audience and required scope checked
    assert _ok(results, "validateMissingScope") is False
    assert _ok(results, "update") == {"scopes": ["read:deployments"]}
    assert _ok(results, "narrowedToken") is False  # the new token lacks deploy:applications


def test_secret_rotation(flow: tuple[str, dict[str, Any]]) -> None:
    _, results = flow
    added = _ok(results, "addSecret")
    assert added["secretId"].startswith("sks_") and added["plainSecret"].startswith("test_")
    assert _ok(results, "tokenWithNewSecret") == 3
    assert _ok(results, "removeSecret")["removed"] != added["secretId"]
    assert results["tokenWithOldSecret"]["error"] == "ScalekitUnauthorizedException"
    assert results["tokenWithOldSecret"]["grpcStatus"] == 16  # from HTTP 401


def test_error_answers(flow: tuple[str, dict[str, Any]]) -> None:
    _, results = flow
    unknown = results["unknownOrganization"]
    assert unknown["error"] == "ScalekitNotFoundException" and unknown["grpcStatus"] == 5
    assert unknown["errorCode"] == "NOT_FOUND"
    assert unknown["details"] == [{"errorCode": "NOT_FOUND", "violations": [
        {"field": "client_id", "description": "not found"}]}]
    bad = results["badInput"]
    assert bad["error"] == "ScalekitBadRequestException" and bad["grpcStatus"] == 3
    assert bad["details"][0]["violations"][0]["field"] == "scopes[0]"
    assert "'has space' is not a valid scope" in bad["message"]
    bad_org = results["badOrganizationId"]
    assert bad_org["grpcStatus"] == 3
    assert bad_org["details"][0]["violations"][0]["field"] == "organization_id"
    assert _ok(results, "delete") is True
    assert results["getDeleted"]["grpcStatus"] == 5
    # wrong environment credentials: the SDK's token request is refused with 401
    assert "401" in results["wrongEnvironmentSecret"]["message"]
