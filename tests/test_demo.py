"""`make demo` runs examples/demo.py, and `m2m-guard demo` the same flow with the built-in copy
of the deployment API: each must finish on its own, exit 0 and show every answer."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# client credentials for the management API, registration, the client's token, then the API
EXPECTED = ["200", "201", "200", "200", "200", "202", "403", "401", "401",
            # DPoP: a bound token, a call with its proof, the proof replayed, the token as Bearer
            "200", "200", "401", "401"]
# with the emulator extra: Scalekit's Python quickstart with the official SDK (gRPC
# registration, the token, the API, validation)
QUICKSTART = ["OK", "200", "200", "OK"]


def _emulator() -> bool:
    from m2m_guard.local_issuer.grpc_service import grpc_available

    return grpc_available()


def _clean_env() -> dict[str, str]:
    import os

    return {name: value for name, value in os.environ.items()
            if not name.startswith(("M2M_GUARD_", "SCALEKIT_"))}


@pytest.mark.parametrize("command", [
    [sys.executable, str(ROOT / "examples" / "demo.py")],
    [sys.executable, "-m", "m2m_guard", "demo"],
], ids=["make-demo", "m2m-guard-demo"])
def test_demo_runs_end_to_end(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False,
                            cwd=ROOT, env=_clean_env())
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("[")]
    statuses = [line.rsplit("-> ", 1)[1] for line in lines]
    assert statuses == EXPECTED + (QUICKSTART if _emulator() else []), result.stdout
    assert all(line.startswith("[ok ]") for line in lines)
    out = result.stdout
    # the client is registered through the management API, exactly as in Scalekit's quickstart
    assert "'GitHub Actions Deployment Service'" in out
    assert re.search(r"client_id m2morg_\d+, organization org_\d+", out)
    assert '"aud": ["deployment-api.acmecorp.com"]' in out
    assert '"custom_claims": {"environment": "production", "service": "deployment"}' in out
    assert 'error="insufficient_scope"' in out and 'scope="admin:platform"' in out
    assert 'error_description="The token signature is invalid."' in out
    assert re.search(r'token_type DPoP, cnf \{"jkt": "[\w-]{43}"\}', out)
    assert 'error="invalid_dpop_proof", error_description="The DPoP proof was already used' in out
    assert "bound to a DPoP key (cnf.jkt): send it with Authorization: DPoP" in out
    assert "all calls answered as expected" in out
    # the plain secret is shown as its last characters only
    assert not re.search(r"plain_secret [^…]", out)
    if not _emulator():
        assert "(not run: it needs the emulator extra" in out
        return
    # the quickstart's own calls, through the SDK, over HTTPS trusting the local CA
    assert "m2m_client.create_organization_client" in out
    assert "validate_access_token_and_get_claims" in out
    assert re.search(r"export GRPC_DEFAULT_SSL_ROOTS_FILE_PATH=\S+ca\.pem", out)
    assert re.search(r"^issuer   https://127\.0\.0\.1:\d+ ", out, re.MULTILINE)
