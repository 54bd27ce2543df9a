"""The pytest plugin (`m2m_guard.testing`): the README's example run as a user's test file, and
the fixtures used directly (the plugin is installed, so this suite has them too)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from importlib.metadata import entry_points
from pathlib import Path

import httpx
import pytest

from m2m_guard import GuardSettings, InvalidToken, IssuerUnavailable, TokenVerifier
from m2m_guard._core.encoding import b64url_decode
from m2m_guard.testing import DEFAULT_AUDIENCE, DPoPFactory, M2MIssuer, TokenFactory

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
# The Starlette example and the rules module it imports, as a user's two top-level modules.
EXAMPLE_APP = (ROOT / "examples" / "starlette_app.py").read_text(encoding="utf-8")
EXAMPLE_RULES = (ROOT / "examples" / "rules.py").read_text(encoding="utf-8")


def readme_plugin_example() -> str:
    section = README.index("## Testing your API with m2m_guard's pytest plugin")
    match = re.search(r"```python\n(.*?)```", README[section:], flags=re.DOTALL)
    assert match is not None
    return match.group(1)


def decode(token: str) -> tuple[dict[str, object], dict[str, object]]:
    header, payload, _ = token.split(".")
    return json.loads(b64url_decode(header)), json.loads(b64url_decode(payload))


# -- as a user sees it -----------------------------------------------------------------------

def test_the_readme_example_passes_as_a_users_test_file(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(myapp=EXAMPLE_APP, rules=EXAMPLE_RULES, test_api=readme_plugin_example())
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider",
                                           "-W", "ignore::DeprecationWarning")
    result.assert_outcomes(passed=4)


def test_the_readme_example_catches_a_broken_guard(pytester: pytest.Pytester) -> None:
    """The same tests against an app whose listing asks for the wrong scope: they must fail.
    Also: overriding `m2m_audience` in conftest.py changes tokens and settings together, and
    nothing is started before a test uses a fixture."""
    broken = EXAMPLE_APP.replace('@require_scopes("read:deployments")',
                                 '@require_scopes("deploy:applications")')
    assert broken != EXAMPLE_APP
    pytester.makeconftest('''
import pytest

@pytest.fixture(scope="session")
def m2m_audience():
    return "deployment-api.acmecorp.com"
''')
    pytester.makepyfile(myapp=broken, rules=EXAMPLE_RULES, test_api=readme_plugin_example(),
                        test_audience='''
def test_audience_override(m2m_issuer, m2m_token, m2m_settings):
    assert m2m_settings.audience == ("deployment-api.acmecorp.com",)
    assert m2m_issuer.claims()["aud"] == ["deployment-api.acmecorp.com"]
''', test_0_lazy='''
import sys

def test_nothing_is_started_before_a_test_asks_for_the_issuer():
    assert "uvicorn" not in sys.modules
    assert "m2m_guard.local_issuer" not in sys.modules
''')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider",
                                           "-W", "ignore::DeprecationWarning")
    result.assert_outcomes(passed=5, failed=1)
    result.stdout.fnmatch_lines(["*test_listing_needs_read_scope*"])


def test_the_plugin_is_registered_through_its_entry_point() -> None:
    plugins = {point.name: point.value for point in entry_points(group="pytest11")}
    assert plugins.get("m2m_guard") == "m2m_guard.testing"


def test_importing_the_plugin_loads_no_framework_or_server() -> None:
    code = ("import sys, m2m_guard.testing; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'starlette', 'uvicorn', 'fastapi', 'flask', 'django', 'rest_framework'}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=30, check=True)
    assert result.stdout.strip() == "[]"


# -- the fixtures ------------------------------------------------------------------------------

def test_m2m_token_is_shaped_like_scalekits(m2m_issuer: M2MIssuer,
                                            m2m_token: TokenFactory) -> None:
    header, claims = decode(m2m_token(scopes=["read:deployments", "deploy:applications"]))
    assert header["alg"] == "RS256" and header["typ"] == "JWT"
    assert isinstance(header["kid"], str) and header["kid"].startswith("snk_")
    assert header["kid"] in {key["kid"] for key in httpx.get(m2m_issuer.jwks_url).json()["keys"]}
    assert claims["iss"] == m2m_issuer.url
    assert claims["sub"] == claims["client_id"] and str(claims["sub"]).startswith("m2morg_")
    assert str(claims["oid"]).startswith("org_") and str(claims["jti"]).startswith("tkn_")
    assert claims["scopes"] == ["read:deployments", "deploy:applications"]
    assert claims["scope"] == "read:deployments deploy:applications"
    assert claims["aud"] == [DEFAULT_AUDIENCE]
    assert claims["nbf"] == claims["iat"] and claims["exp"] == claims["iat"] + 3600  # type: ignore[operator]


def test_m2m_token_claims_can_be_replaced_or_removed(m2m_token: TokenFactory) -> None:
    _, claims = decode(m2m_token(exp=1, oid=None, custom_claims={"team": "ci"}))
    assert claims["exp"] == 1 and "oid" not in claims
    assert claims["custom_claims"] == {"team": "ci"} and claims["scopes"] == []
    with pytest.raises(TypeError, match="a list of scopes"):
        m2m_token(scopes="read:deployments")
    headers = m2m_token.headers(["read:deployments"], sub="m2morg_1")
    assert list(headers) == ["Authorization"] and headers["Authorization"].startswith("Bearer ")
    assert decode(headers["Authorization"][7:])[1]["sub"] == "m2morg_1"


def test_tokens_verify_with_the_issuers_settings(m2m_issuer: M2MIssuer,
                                                 m2m_token: TokenFactory,
                                                 m2m_settings: GuardSettings) -> None:
    assert m2m_settings.audiences == (DEFAULT_AUDIENCE,)
    with TokenVerifier(m2m_settings) as verifier:
        token = verifier.verify_sync(m2m_token(scopes=["read:deployments"]))
        assert token.scopes == {"read:deployments"} and token.issuer == m2m_issuer.url
        with pytest.raises(InvalidToken) as refused:
            verifier.verify_sync(m2m_token(exp=int(time.time()) - 3600))
        assert refused.value.reason == "expired"
    other = m2m_issuer.settings(audience="deployment-api", leeway=0)
    assert other.audiences == ("deployment-api",) and other.leeway == 0


def test_registered_client_gets_tokens_over_http(m2m_issuer: M2MIssuer,
                                                 m2m_settings: GuardSettings) -> None:
    client = m2m_issuer.register_client(scopes=["read:deployments", "deploy:applications"],
                                        custom_claims={"environment": "staging"})
    assert client.client_id.startswith("m2morg_") and client.client_secret
    assert "client_secret" not in repr(client) and client.client_secret not in repr(client)
    with TokenVerifier(m2m_settings) as verifier:
        token = verifier.verify_sync(client.token(scopes=["read:deployments"]))
    assert token.client_id == client.client_id
    assert token.scopes == {"read:deployments"}
    assert token.custom_claims == {"environment": "staging"}
    with pytest.raises(AssertionError, match="answered 400"):
        client.token(scopes=["admin:platform"])


def test_rotation(m2m_issuer: M2MIssuer, m2m_token: TokenFactory) -> None:
    with TokenVerifier(m2m_issuer.settings()) as verifier:
        before = decode(m2m_token())[0]["kid"]
        verifier.verify_sync(m2m_token())
        kid = m2m_issuer.rotate_keys()
        assert kid != before
        rotated = m2m_token()
        assert decode(rotated)[0]["kid"] == kid
        assert verifier.verify_sync(rotated).scopes == frozenset()  # unknown kid: refetched
    published = {key["kid"] for key in httpx.get(m2m_issuer.jwks_url).json()["keys"]}
    assert {before, kid} <= published  # the old key stays until its tokens expire


def test_rotating_often_stays_within_the_issuers_bound(m2m_issuer: M2MIssuer,
                                                       m2m_token: TokenFactory) -> None:
    for _ in range(12):  # past the 10-key bound: the plugin makes room instead of failing
        m2m_token()
        m2m_issuer.rotate_keys()
    published = httpx.get(m2m_issuer.jwks_url).json()["keys"]
    assert len(published) <= 10
    with TokenVerifier(m2m_issuer.settings()) as verifier:
        verifier.verify_sync(m2m_token())


@pytest.mark.timeout(30)
@pytest.mark.parametrize("refuse", [False, True], ids=["503", "connection-refused"])
@pytest.mark.parametrize("cooldown", [1.0, 0.0])
def test_outage_with_a_cold_cache_is_503(m2m_issuer: M2MIssuer, m2m_token: TokenFactory,
                                         refuse: bool, cooldown: float) -> None:
    """Also with a zero cooldown, which used to make a cold verifier refetch forever."""
    settings = m2m_issuer.settings(jwks_refetch_cooldown=cooldown)
    with m2m_issuer.outage(refuse=refuse), TokenVerifier(settings) as cold:
        with pytest.raises(IssuerUnavailable) as unavailable:
            cold.verify_sync(m2m_token())
        assert unavailable.value.retry_after >= 1
        assert cold.health()["issuers"][m2m_issuer.url]["fetches"] == 1
    assert httpx.get(m2m_issuer.jwks_url).status_code == 200  # back to normal


def test_m2m_dpop_makes_bound_tokens_and_proofs(m2m_issuer: M2MIssuer, m2m_dpop: DPoPFactory,
                                                m2m_settings: GuardSettings) -> None:
    from m2m_guard.dpop import ProofChecker
    from m2m_guard.errors import InvalidDPoPProof

    token = m2m_dpop.token(["read:deployments"])
    assert decode(token)[1]["cnf"] == {"jkt": m2m_dpop.key.thumbprint}
    with TokenVerifier(m2m_settings) as verifier:
        access = verifier.verify_sync(token)
    assert access.scopes == {"read:deployments"}
    url = "https://api.example.com/deployments"
    headers = m2m_dpop.headers("GET", url, token)
    assert headers["Authorization"] == f"DPoP {token}"
    checker = ProofChecker()
    proof = checker.check([headers["DPoP"]], method="GET", url=url, now=time.time(),
                          access_token=token)
    assert proof.jkt == m2m_dpop.key.thumbprint
    again = m2m_dpop.headers("GET", url, token)["DPoP"]
    assert again != headers["DPoP"]  # a fresh proof (new jti) for every request
    made = m2m_dpop.headers("POST", url, scopes=["deploy:applications"])
    bound = made["Authorization"].removeprefix("DPoP ")
    assert decode(bound)[1]["scopes"] == ["deploy:applications"]
    checker.check([made["DPoP"]], method="POST", url=url, now=time.time(), access_token=bound)
    old = m2m_dpop.proof("GET", url, token, iat=time.time() - 3600)
    with pytest.raises(InvalidDPoPProof, match="in the past"):
        checker.check([old], method="GET", url=url, now=time.time(), access_token=token)


def test_a_registered_client_gets_a_bound_token_over_http(m2m_issuer: M2MIssuer,
                                                          m2m_dpop: DPoPFactory) -> None:
    client = m2m_issuer.register_client(scopes=["read:deployments"])
    token = client.token(dpop=m2m_dpop.key)
    assert decode(token)[1]["cnf"] == {"jkt": m2m_dpop.key.thumbprint}
    assert "cnf" not in decode(client.token())[1]


def test_m2m_dpop_against_a_guarded_app(m2m_issuer: M2MIssuer, m2m_dpop: DPoPFactory) -> None:
    """The fixture's headers are what a DPoP-guarded API accepts; its proofs are used once, and
    its bound tokens refused as Bearer."""
    from starlette.testclient import TestClient

    from tests.conftest import deployment_app

    url = "http://testserver/deployments"
    client = m2m_issuer.register_client(scopes=["read:deployments"])
    with TestClient(deployment_app(m2m_issuer.settings(dpop="allowed"))) as api:
        for token in (m2m_dpop.token(["read:deployments"]), client.token(dpop=m2m_dpop.key)):
            headers = m2m_dpop.headers("GET", url, token)
            assert api.get("/deployments", headers=headers).status_code == 200
            replayed = api.get("/deployments", headers=headers)
            assert (replayed.status_code, replayed.json()["error"]) == (401, "invalid_dpop_proof")
            stolen = api.get("/deployments", headers={"Authorization": f"Bearer {token}"})
            assert (stolen.status_code, stolen.json()["error"]) == (401, "invalid_token")
        other = api.get("/deployments", headers=m2m_dpop.headers("POST", url, token))
        assert other.status_code == 401  # a proof for another method
