"""The `m2m-guard` command, run as a real process (``python -m m2m_guard``) against a real local
issuer on loopback: itself started with ``m2m-guard issuer``."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from m2m_guard.cli import main
from m2m_guard.cli.demo import run_demo
from m2m_guard.local_issuer import KeySetServer, SigningKey, scalekit_claims
from tests.packages import require_package

ORG = "org_59615193906282635"
AUDIENCE = "deployment-api.acmecorp.com"
COMMANDS = ["issuer", "rotate-keys", "token", "verify", "doctor", "demo"]


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without M2M_GUARD_* / SCALEKIT_*, plus `extra`."""
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("M2M_GUARD_", "SCALEKIT_"))}
    env.update(extra)
    return env


def m2m(*args: str, env: dict[str, str] | None = None, stdin: str | None = None,
        timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "m2m_guard", *args], capture_output=True,
                          text=True, input=stdin, timeout=timeout, check=False,
                          env=env if env is not None else clean_env())


@dataclass
class IssuerProcess:
    """`m2m-guard issuer` running in a child process, and what its banner said."""

    process: subprocess.Popen[str]
    banner: list[str]
    lines: queue.Queue[str] = field(default_factory=queue.Queue)

    @property
    def url(self) -> str:
        match = re.search(r"running at (https?://127\.0\.0\.1:\d+)", self.banner[0])
        assert match, self.banner
        return match.group(1)

    def exported(self, name: str) -> str | None:
        for line in self.banner:
            if line.strip().startswith(f"export {name}="):
                return line.split("=", 1)[1].strip()
        return None

    def stop(self, sig: signal.Signals = signal.SIGINT) -> tuple[int, str]:
        self.process.send_signal(sig)
        code = self.process.wait(15)
        rest = []
        while not self.lines.empty():
            rest.append(self.lines.get())
        return code, "".join(rest)


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def start_issuer(db: Path, *extra: str, env: dict[str, str] | None = None,
                 sigint_ignored: bool = False) -> IssuerProcess:
    """`sigint_ignored`: start it as a non-interactive shell starts a background job."""
    process = subprocess.Popen(
        [sys.executable, "-m", "m2m_guard", "issuer", "--port", "0", "--db", str(db), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=env if env is not None else clean_env(),
        preexec_fn=_ignore_sigint if sigint_ignored else None)
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    banner: list[str] = []
    deadline = time.monotonic() + 20
    while not banner or not banner[-1].startswith("Register a client"):
        try:
            banner.append(lines.get(timeout=max(0.1, deadline - time.monotonic())))
        except queue.Empty:
            process.kill()
            raise AssertionError(f"the issuer did not start: {banner}") from None
    return IssuerProcess(process, banner, lines)


def admin_token(url: str, client_id: str, secret: str) -> str:
    response = httpx.post(f"{url}/oauth/token", data={
        "grant_type": "client_credentials", "client_id": client_id, "client_secret": secret})
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def register(url: str, admin: str, **body: Any) -> tuple[str, str]:
    body = {"name": "CLI test client", "scopes": ["deploy:applications", "read:deployments"],
            "audience": [AUDIENCE], **body}
    response = httpx.post(f"{url}/api/v1/organizations/{ORG}/clients", json=body,
                          headers={"Authorization": f"Bearer {admin}"})
    assert response.status_code == 201, response.text
    return response.json()["client"]["client_id"], response.json()["plain_secret"]


@dataclass
class Served:
    issuer: IssuerProcess
    url: str
    admin_id: str
    admin_secret: str
    client_id: str
    client_secret: str

    def client_env(self, **extra: str) -> dict[str, str]:
        return clean_env(**{"SCALEKIT_ENVIRONMENT_URL": self.url,
                            "SCALEKIT_CLIENT_ID": self.client_id,
                            "SCALEKIT_CLIENT_SECRET": self.client_secret, **extra})

    def guard_env(self, **extra: str) -> dict[str, str]:
        return clean_env(**{"M2M_GUARD_ISSUER": self.url, "M2M_GUARD_AUDIENCE": AUDIENCE,
                            **extra})

    def token(self, scope: str | None = None) -> str:
        form = {"grant_type": "client_credentials", "client_id": self.client_id,
                "client_secret": self.client_secret}
        if scope is not None:
            form["scope"] = scope
        response = httpx.post(f"{self.url}/oauth/token", data=form)
        assert response.status_code == 200, response.text
        token: str = response.json()["access_token"]
        return token


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`m2m-guard issuer` in a child process, with one registered client."""
    issuer = start_issuer(tmp_path_factory.mktemp("issuer") / "issuer.db")
    try:
        url = issuer.url
        admin_id, admin_secret = issuer.exported("SCALEKIT_CLIENT_ID"), \
            issuer.exported("SCALEKIT_CLIENT_SECRET")
        assert admin_id and admin_secret
        client_id, client_secret = register(url, admin_token(url, admin_id, admin_secret))
        yield Served(issuer, url, admin_id, admin_secret, client_id, client_secret)
    finally:
        issuer.stop()


# -- help and usage --------------------------------------------------------------------------

def test_help_lists_every_command_and_the_exit_codes() -> None:
    result = m2m("--help", env=clean_env(COLUMNS="100"))
    assert result.returncode == 0
    for command in COMMANDS:
        assert command in result.stdout
    assert "exit codes: 0 ok, 1 refused or a check failed, 2 usage or configuration error" \
        in result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_help(command: str, capsys: pytest.CaptureFixture[str],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: m2m-guard {command}")
    assert "exit codes:" in out


def test_the_console_script_is_installed() -> None:
    script = Path(sys.executable).with_name("m2m-guard")
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode == 0 and result.stdout.startswith("m2m-guard ")


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    no_command = m2m()
    assert no_command.returncode == 2 and "usage: m2m-guard" in no_command.stderr
    for argv in (["frobnicate"], ["verify"], ["token", "--timeout", "soon"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err
    assert main(["issuer", "--port", "70000"]) == 2
    assert "--port must be 0-65535" in capsys.readouterr().err


# -- issuer ------------------------------------------------------------------------------------

def test_issuer_prints_the_secret_once_stops_cleanly_and_keeps_its_clients(
        tmp_path: Path) -> None:
    db = tmp_path / "issuer.db"
    first = start_issuer(db)
    url, admin_id = first.url, first.exported("SCALEKIT_CLIENT_ID")
    admin_secret = first.exported("SCALEKIT_CLIENT_SECRET")
    assert first.exported("SCALEKIT_ENVIRONMENT_URL") == url
    assert admin_id and re.fullmatch(r"skc_\d+", admin_id) and admin_secret
    discovery = httpx.get(f"{url}/.well-known/openid-configuration").json()
    assert discovery["issuer"] == url and discovery["token_endpoint"] == f"{url}/oauth/token"
    client_id, client_secret = register(url, admin_token(url, admin_id, admin_secret))
    code, rest = first.stop(signal.SIGINT)                # Ctrl-C
    assert code == 0 and "local issuer stopped" in rest
    assert "Traceback" not in rest
    assert admin_secret.encode() not in db.read_bytes()  # only its hash is stored

    again = start_issuer(db)
    try:
        text = "".join(again.banner)
        assert again.exported("SCALEKIT_CLIENT_SECRET") is None  # shown once only
        assert admin_secret not in text
        assert f"Environment API client: {admin_id}" in text
        # the clients and the environment client survived the restart
        token = httpx.post(f"{again.url}/oauth/token", data={
            "grant_type": "client_credentials", "client_id": client_id,
            "client_secret": client_secret})
        assert token.status_code == 200
        admin_token(again.url, admin_id, admin_secret)
    finally:
        code, rest = again.stop(signal.SIGTERM)
    assert code == 0 and "local issuer stopped" in rest


def test_issuer_with_tls_prints_the_trust_lines_and_keeps_its_ca(tmp_path: Path) -> None:
    require_package("hypercorn")  # --tls
    db = tmp_path / "issuer.db"
    first = start_issuer(db, "--tls")
    try:
        url, ca = first.url, str(tmp_path / "issuer.db.tls" / "ca.pem")
        assert url.startswith("https://127.0.0.1:")
        for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH",
                     "NODE_EXTRA_CA_CERTS"):
            assert first.exported(name) == ca
        text = "".join(first.banner)
        from m2m_guard.local_issuer.grpc_service import grpc_available

        # gRPC comes with --tls when the emulator extra is complete
        assert ("scalekit.v1.clients.ClientService" in text) == grpc_available()
        assert first.exported("SCALEKIT_ENVIRONMENT_URL") == url
        trusted = ssl.create_default_context(cafile=ca)
        discovery = httpx.get(f"{url}/.well-known/openid-configuration", verify=trusted)
        assert discovery.json()["issuer"] == url
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/keys")
        # the printed SSL_CERT_FILE line is enough for m2m-guard's own commands (httpx)
        env = {**clean_env(), "SSL_CERT_FILE": ca, "SCALEKIT_ENVIRONMENT_URL": url,
               "SCALEKIT_CLIENT_ID": first.exported("SCALEKIT_CLIENT_ID") or "",
               "SCALEKIT_CLIENT_SECRET": first.exported("SCALEKIT_CLIENT_SECRET") or ""}
        rotated = m2m("rotate-keys", "--publish-delay", "0", env=env)
        assert rotated.returncode == 0, rotated.stdout + rotated.stderr
        assert "new signing key snk_" in rotated.stdout
    finally:
        code, _ = first.stop(signal.SIGTERM)
    assert code == 0
    pem = Path(ca).read_bytes()
    again = start_issuer(db, "--tls")
    try:
        assert again.exported("SSL_CERT_FILE") == ca and Path(ca).read_bytes() == pem
        assert httpx.get(f"{again.url}/keys", verify=ssl.create_default_context(cafile=ca)) \
            .status_code == 200
    finally:
        again.stop(signal.SIGTERM)


def test_issuer_takes_the_environment_client_from_the_environment(tmp_path: Path) -> None:
    env = clean_env(SCALEKIT_CLIENT_ID="skc_12345678901234567",
                    SCALEKIT_CLIENT_SECRET="a-secret-chosen-by-the-user")
    # started with SIGINT ignored, as a background job of a script: Ctrl-C must still stop it
    issuer = start_issuer(tmp_path / "env.db", env=env, sigint_ignored=True)
    try:
        assert issuer.exported("SCALEKIT_CLIENT_SECRET") is None
        assert "Environment API client: skc_12345678901234567 (from SCALEKIT_CLIENT_ID" \
            in "".join(issuer.banner)
        admin_token(issuer.url, "skc_12345678901234567", "a-secret-chosen-by-the-user")
    finally:
        code, rest = issuer.stop(signal.SIGINT)
    assert code == 0 and "local issuer stopped" in rest


def test_issuer_with_a_bad_database_path_is_a_usage_error(tmp_path: Path) -> None:
    result = m2m("issuer", "--port", "0", "--db", str(tmp_path / "missing" / "dir" / "x.db"))
    assert result.returncode == 2
    assert "cannot open the issuer with --db" in result.stderr


# -- token ---------------------------------------------------------------------------------------

def test_token_prints_only_the_token_from_discovery_and_env(served: Served) -> None:
    result = m2m("token", env=served.client_env())
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert re.fullmatch(r"[\w-]+\.[\w-]+\.[\w-]+", token)
    assert f"token for {served.client_id}" in result.stderr
    assert "expires in 3600 s" in result.stderr


def test_token_json_scope_and_basic(served: Served) -> None:
    result = m2m("token", "--json", "--scope", "read:deployments", "--basic",
                 "--issuer", served.url, "--client-id", served.client_id,
                 env=clean_env(SCALEKIT_CLIENT_SECRET=served.client_secret))
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["token_type"] == "Bearer" and answer["scope"] == "read:deployments"
    assert answer["expires_in"] == 3600


def test_token_secret_from_stdin_and_explicit_token_url(served: Served) -> None:
    result = m2m("token", "--token-url", f"{served.url}/oauth/token", "--client-id",
                 served.client_id, "--client-secret", "-", stdin=served.client_secret + "\n")
    assert result.returncode == 0, result.stderr


def test_token_refusals_are_printed_readably(served: Served) -> None:
    wrong = m2m("token", env=served.client_env(SCALEKIT_CLIENT_SECRET="not-the-secret"))
    assert wrong.returncode == 1
    assert "refused the request (HTTP 401, invalid_client)" in wrong.stderr
    assert wrong.stdout == ""
    scope = m2m("token", "--scope", "admin:platform", env=served.client_env())
    assert scope.returncode == 1 and "invalid_scope" in scope.stderr


def test_token_usage_and_network_errors() -> None:
    missing = m2m("token", env=clean_env(SCALEKIT_ENVIRONMENT_URL="http://127.0.0.1:9"))
    assert missing.returncode == 2
    assert "pass --client-id or set SCALEKIT_CLIENT_ID" in missing.stderr
    plain_http = m2m("token", "--issuer", "http://auth.example.com", "--client-id", "a",
                     "--client-secret", "b")
    assert plain_http.returncode == 2 and "https only" in plain_http.stderr
    down = m2m("token", "--issuer", "http://127.0.0.1:9", "--client-id", "a",
               "--client-secret", "b")
    assert down.returncode == 1 and "cannot reach http://127.0.0.1:9" in down.stderr


def test_token_without_discovery_says_to_pass_the_token_url() -> None:
    with KeySetServer() as server:
        server.discovery_paths = set()
        result = m2m("token", "--issuer", server.url, "--client-id", "a", "--client-secret", "b")
    assert result.returncode == 1
    assert "no discovery document" in result.stderr and "pass --token-url" in result.stderr


def test_token_refuses_an_access_token_that_is_not_printable() -> None:
    """What a broken or hostile endpoint could send; no real issuer here does (hence a mock)."""
    from m2m_guard.cli.common import CommandError
    from m2m_guard.cli.token import request_token

    def endpoint(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"access_token": "abc\x1b]0;owned\x07",
                                         "token_type": "Bearer"})

    with httpx.Client(transport=httpx.MockTransport(endpoint)) as http, \
            pytest.raises(CommandError, match="without a usable access_token") as refused:
        request_token(http, "https://issuer.example/oauth/token", "a", "b", scopes=[])
    assert refused.value.exit_code == 1


def test_token_with_dpop_binds_the_token_and_prints_a_curl_line(served: Served,
                                                                tmp_path: Path) -> None:
    import shlex

    from m2m_guard._core.encoding import b64url_decode
    from m2m_guard.dpop import DPoPKey, ProofChecker

    keyfile = tmp_path / "client.dpop.pem"
    api = "http://127.0.0.1:8000/deployments?page=2"
    result = m2m("token", "--dpop", str(keyfile), "--url", api, "--method", "post",
                 env=served.client_env())
    assert result.returncode == 0, result.stderr
    assert oct(keyfile.stat().st_mode & 0o777) == "0o600"
    key = DPoPKey.load(keyfile)
    token = result.stdout.strip()
    claims = json.loads(b64url_decode(token.split(".")[1]))
    assert claims["cnf"] == {"jkt": key.thumbprint}
    assert f"created a DPoP key in {keyfile}" in result.stderr
    assert f"bound to the DPoP key {key.thumbprint}" in result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.startswith("curl ")]
    words = shlex.split(line)
    assert words[:3] == ["curl", "-X", "POST"] and words[-1] == api
    assert words[words.index("-H") + 1] == f"Authorization: DPoP {token}"
    proof = words[words.index("-H", words.index("-H") + 1) + 1].removeprefix("DPoP: ")
    checked = ProofChecker().check([proof], method="POST", access_token=token,
                                   url="http://127.0.0.1:8000/deployments", now=time.time())
    assert checked.jkt == key.thumbprint
    # The same file again: the same key, no curl line without --url, --json shows DPoP.
    again = m2m("token", "--dpop", str(keyfile), "--json", env=served.client_env())
    assert again.returncode == 0, again.stderr
    answer = json.loads(again.stdout)
    assert answer["token_type"] == "DPoP" and "created" not in again.stderr
    assert json.loads(b64url_decode(answer["access_token"].split(".")[1]))["cnf"] == {
        "jkt": key.thumbprint}
    assert "curl " not in again.stderr


def test_token_dpop_curl_line_calls_a_dpop_guarded_api(served: Served, tmp_path: Path) -> None:
    """The printed curl line, run as it is, against a real API with DPoP on: 200; run again
    (the same proof): refused."""
    import shlex
    import shutil

    from m2m_guard import GuardSettings

    from .conftest import deployment_app
    from .servers import uvicorn_server

    settings = GuardSettings(issuer=served.url, audience=AUDIENCE, dpop="allowed")
    with uvicorn_server(deployment_app(settings)) as port:
        url = f"http://127.0.0.1:{port}/deployments"
        result = m2m("token", "--dpop", str(tmp_path / "k.pem"), "--url", url,
                     env=served.client_env())
        assert result.returncode == 0, result.stderr
        [line] = [line for line in result.stderr.splitlines() if line.startswith("curl ")]
        words = shlex.split(line)
        headers = dict(words[i + 1].split(": ", 1) for i, word in enumerate(words)
                       if word == "-H")
        if shutil.which("curl"):
            ran = subprocess.run([*words, "--noproxy", "*", "-s", "-o", "/dev/null", "-w",
                                  "%{http_code}"],
                                 capture_output=True, text=True, timeout=30, check=False)
            assert ran.stdout == "200", ran.stdout + ran.stderr
        else:  # the same request without curl
            assert httpx.get(url, headers=headers, trust_env=False).status_code == 200
        again = httpx.get(url, headers=headers, trust_env=False)
        assert (again.status_code, again.json()["error"]) == (401, "invalid_dpop_proof")


def test_token_dpop_usage_errors(served: Served, tmp_path: Path) -> None:
    not_a_key = tmp_path / "notes.txt"
    not_a_key.write_text("hello")
    bad = m2m("token", "--dpop", str(not_a_key), env=served.client_env())
    assert bad.returncode == 2 and "is not a DPoP private key" in bad.stderr
    alone = m2m("token", "--url", "http://127.0.0.1:8000/x", env=served.client_env())
    assert alone.returncode == 2 and "pass --dpop KEYFILE" in alone.stderr
    method = m2m("token", "--dpop", str(tmp_path / "k.pem"), "--url", "http://127.0.0.1:8/x",
                 "--method", "G T", env=served.client_env())
    assert method.returncode == 2 and "--method must be an HTTP method" in method.stderr


@pytest.mark.parametrize("answers", ["bearer", "nonce"])
def test_token_dpop_with_endpoints_the_local_issuer_is_not(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, answers: str) -> None:
    """What other authorization servers do (hence a mock transport): one without DPoP answers
    with a Bearer token (RFC 9449 §5), which the command refuses to pass off as bound; one
    requiring nonces answers use_dpop_nonce (§8), and the command asks once more with it."""
    import argparse

    from m2m_guard._core.encoding import b64url_decode
    from m2m_guard.cli import token as token_command

    seen: list[dict[str, Any]] = []

    def endpoint(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(b64url_decode(request.headers["dpop"].split(".")[1])))
        if answers == "bearer":
            return httpx.Response(200, json={"access_token": "a.b.c", "token_type": "Bearer"})
        if len(seen) == 1:
            return httpx.Response(400, headers={"DPoP-Nonce": "n-1"}, json={
                "error": "use_dpop_nonce", "error_description": "nonce required"})
        return httpx.Response(200, json={"access_token": "a.b.c", "token_type": "DPoP"})

    original = httpx.Client
    monkeypatch.setattr(token_command.httpx, "Client", lambda **options: original(
        transport=httpx.MockTransport(endpoint), **options))
    args = argparse.Namespace(client_id="a", client_secret="b", scope=[], issuer=None,
                              token_url="https://issuer.example/oauth/token", timeout=5.0,
                              basic=False, json=False, dpop=str(tmp_path / "k.pem"), url=None,
                              method="GET")
    if answers == "bearer":
        with pytest.raises(token_command.CommandError, match="not a DPoP-bound one"):
            token_command.run(args)
        return
    assert token_command.run(args) == 0
    assert [claims.get("nonce") for claims in seen] == [None, "n-1"]
    assert {claims["htu"] for claims in seen} == {"https://issuer.example/oauth/token"}
    assert seen[0]["jti"] != seen[1]["jti"]


# -- verify ------------------------------------------------------------------------------------

def test_verify_prints_the_claims(served: Served) -> None:
    token = served.token()
    result = m2m("verify", token, "--scope", "deploy:applications read:deployments",
                 env=served.guard_env())
    assert result.returncode == 0, result.stderr
    claims = json.loads(result.stdout)
    assert claims["sub"] == served.client_id and claims["oid"] == ORG
    assert claims["aud"] == [AUDIENCE] and claims["iss"] == served.url
    assert f"valid: client {served.client_id}" in result.stderr
    from_stdin = m2m("verify", "-", env=served.guard_env(), stdin=f"Bearer {token}\n")
    assert from_stdin.returncode == 0 and json.loads(from_stdin.stdout) == claims


def test_token_piped_into_verify(served: Served) -> None:
    token = m2m("token", env=served.client_env()).stdout
    result = m2m("verify", "-", env=served.guard_env(), stdin=token)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(("case", "expected"), [
    ("audience", "refused: HTTP 401 invalid_token (reason: wrong_audience): The token is not "
                 "meant for this audience."),
    ("tampered", "refused: HTTP 401 invalid_token (reason: bad_signature)"),
    ("scope", "refused: HTTP 403 insufficient_scope (reason: insufficient_scope): The access "
              "token lacks the scope: admin:platform"),
    ("garbage", "refused: HTTP 401 invalid_token (reason: malformed)"),
    # judged as the API judges an Authorization header: the same 401 and description
    ("json", "refused: HTTP 401 invalid_token (reason: malformed_authorization): The access "
             "token is malformed: it is JSON (a JSON-serialized JWS?); send the compact form "
             "header.payload.signature."),
    ("bearer-only", "refused: HTTP 401 invalid_token (reason: malformed_authorization): The "
                    "access token is malformed: the Authorization header has the Bearer scheme "
                    "but no token."),
    ("inner-space", "refused: HTTP 401 invalid_token (reason: malformed_authorization): The "
                    "access token is malformed: it contains whitespace; send exactly one token "
                    "after Bearer."),
])
def test_verify_says_exactly_why_a_token_is_refused(served: Served, case: str,
                                                    expected: str) -> None:
    from m2m_guard.cli.demo import tamper

    token = served.token()
    env = served.guard_env()
    args = ["verify", token]
    if case == "audience":
        env = served.guard_env(M2M_GUARD_AUDIENCE="another-api")
    elif case == "tampered":
        args = ["verify", tamper(token)]
    elif case == "scope":
        args += ["--scope", "admin:platform"]
    elif case == "json":
        args = ["verify", '{"protected":"e30","payload":"e30","signature":"c2ln"}']
    elif case == "bearer-only":
        args = ["verify", "Bearer"]
    elif case == "inner-space":
        args = ["verify", f"Bearer {token[:20]} {token[20:]}"]
    else:
        args = ["verify", "not-a-jwt"]
    result = m2m(*args, env=env)
    assert result.returncode == 1
    assert expected in result.stderr, result.stderr
    assert result.stdout == ""
    assert token not in result.stderr


def test_verify_with_the_issuer_down_and_nothing_cached() -> None:
    token = SigningKey.generate("ES256").sign(scalekit_claims("http://127.0.0.1:9"))
    env = clean_env(M2M_GUARD_ISSUER="http://127.0.0.1:9", M2M_GUARD_AUDIENCE="deployment-api")
    result = m2m("verify", token, env=env)
    assert result.returncode == 1
    assert "refused: HTTP 503 temporarily_unavailable (reason: issuer_unavailable): The token " \
        "issuer cannot be reached and no keys are cached." in result.stderr


def test_verify_configuration_errors_exit_2() -> None:
    missing = m2m("verify", "a.b.c")
    assert missing.returncode == 2
    assert "M2M_GUARD_ISSUER" in missing.stderr and "configuration error" in missing.stderr
    typo = m2m("verify", "a.b.c", env=clean_env(M2M_GUARD_ISSUER="https://a.example",
                                                 M2M_GUARD_AUDIENCES="x"))
    assert typo.returncode == 2 and "did you mean M2M_GUARD_AUDIENCE?" in typo.stderr


# -- doctor ----------------------------------------------------------------------------------

def test_doctor_reports_configuration_keys_and_caching(served: Served) -> None:
    result = m2m("doctor", env=served.guard_env(M2M_GUARD_LEEWAY="10s"))
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert re.search(r"leeway\s+10s\s+env M2M_GUARD_LEEWAY", out)
    assert re.search(r"jwks_refetch_cooldown\s+30s\s+default", out)
    assert re.search(r"audience\s+deployment-api\.acmecorp\.com\s+env M2M_GUARD_AUDIENCE", out)
    assert f"GET {served.url}/.well-known/openid-configuration -> 200" in out
    assert f"the document names {served.url}" in out
    kids = [key["kid"] for key in httpx.get(f"{served.url}/keys").json()["keys"]]
    for kid in kids:
        assert f"{kid}: RSA 2048 bits, alg RS256; verifies RS256" in out
    assert "Cache-Control: public, max-age=300" in out
    assert "5m (the issuer's max-age 300)" in out
    assert "Result: ok (0 failed" in out


def test_doctor_json(served: Served) -> None:
    result = m2m("doctor", "--json", env=served.guard_env(M2M_GUARD_JWKS_CACHE_TTL="20s"))
    assert result.returncode == 0, result.stdout
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert report["configuration"]["jwks_cache_ttl"] == {"value": "20s",
                                                         "source": "env M2M_GUARD_JWKS_CACHE_TTL"}
    assert report["configuration"]["realm"] == {"value": "api", "source": "default"}
    (issuer,) = report["issuers"]
    assert issuer["cache"]["ttl"] == 20.0 and issuer["cache"]["max_age"] == 300.0
    assert {key["kty"] for key in issuer["keys"]} == {"RSA"}


def test_doctor_shows_what_a_provider_preset_set(served: Served) -> None:
    result = m2m("doctor", "--json", env=served.guard_env(
        M2M_GUARD_PROVIDER="cognito", M2M_GUARD_ALLOWED_CLIENTS="1example23456789"))
    assert result.returncode == 0, result.stdout + result.stderr
    configuration = json.loads(result.stdout)["configuration"]
    assert configuration["provider"] == {"value": "cognito", "source": "env M2M_GUARD_PROVIDER"}
    assert configuration["scope_claims"] == {"value": "scope", "source": "provider cognito"}
    assert configuration["client_id_claims"] == {"value": "client_id",
                                                 "source": "provider cognito"}
    assert configuration["required_claim_values"] == {
        "value": '{"token_use": ["access"]}', "source": "provider cognito"}
    assert configuration["allowed_clients"]["source"] == "env M2M_GUARD_ALLOWED_CLIENTS"
    text = m2m("doctor", env=served.guard_env(M2M_GUARD_PROVIDER="okta")).stdout
    assert re.search(r"scope_claims\s+scp\s+provider okta", text)
    assert re.search(r"client_id_claims\s+cid\s+provider okta", text)


def test_doctor_fails_on_issuer_mismatch_and_unreachable_issuer(served: Served) -> None:
    port = served.url.rsplit(":", 1)[1]
    mismatch = m2m("doctor", env=clean_env(M2M_GUARD_ISSUER=f"http://localhost:{port}",
                                           M2M_GUARD_AUDIENCE=AUDIENCE))
    assert mismatch.returncode == 1
    assert f"names issuer '{served.url}', not the configured 'http://localhost:{port}'" \
        in mismatch.stdout
    down = m2m("doctor", env=clean_env(M2M_GUARD_ISSUER="http://127.0.0.1:9",
                                       M2M_GUARD_AUDIENCE=AUDIENCE, M2M_GUARD_HTTP_TIMEOUT="2s"))
    assert down.returncode == 1
    assert "FAIL  discovery" in down.stdout and "Connection refused" in down.stdout
    assert "Result: problems found (1 failed" in down.stdout


def test_doctor_shows_dropped_keys_and_fails_without_usable_keys() -> None:
    good = SigningKey.generate("ES256", kid="snk_good")
    weak = SigningKey.generate("RS256", kid="snk_weak", rsa_bits=1024)
    with KeySetServer([good], max_age=None) as keys:
        keys.extra_jwks = [weak.public_jwk(),
                           {"kty": "oct", "kid": "snk_oct\x1b[2J", "k": "c2VjcmV0"}]
        keys.discovery_extra = {"id_token_signing_alg_values_supported": [{"odd": 1}, "HS256"]}
        env = clean_env(M2M_GUARD_ISSUER=keys.url, M2M_GUARD_AUDIENCE=AUDIENCE)
        result = m2m("doctor", env=env)
        assert result.returncode == 0, result.stdout
        out = result.stdout
        assert "snk_good: EC 256 bits, alg ES256; verifies ES256" in out
        assert "dropped key     snk_weak: RSA key of 1024 bits; at least 2048 are required" in out
        # what the issuer sends reaches the terminal without control characters
        assert "dropped key     snk_oct?[2J: symmetric (oct) keys are never accepted" in out
        assert "Cache-Control: (none)" in out and "the default 10m" in out
        assert "the issuer advertises HS256; none is in M2M_GUARD_ALGORITHMS" in out
        assert "Result: ok (0 failed, 3 warnings)" in out

        only_rs = m2m("doctor", env={**env, "M2M_GUARD_ALGORITHMS": "RS256",
                                     "M2M_GUARD_JWKS_URL": keys.jwks_url})
        assert only_rs.returncode == 1
        assert f"{keys.jwks_url} (configured: discovery skipped)" in only_rs.stdout
        assert "/.well-known/" not in only_rs.stdout
        assert "none of its algorithms (ES256) is allowed" in only_rs.stdout
        assert "FAIL  keys            no usable key with an allowed algorithm" in only_rs.stdout


def test_doctor_ends_at_its_timeout_when_the_issuer_drips() -> None:
    """An issuer that sends its answer a byte at a time cannot hold `doctor` past its timeout:
    it uses the guard's own fetch, whose deadline covers the whole exchange."""
    with KeySetServer([SigningKey.generate("ES256")]) as keys:
        keys.set_fault("drip", delay=0.2)
        started = time.monotonic()
        result = m2m("doctor", env=clean_env(M2M_GUARD_ISSUER=keys.url, M2M_GUARD_AUDIENCE=AUDIENCE,
                                             M2M_GUARD_HTTP_TIMEOUT="1s"))
        elapsed = time.monotonic() - started
        keys.set_fault(None)
    assert result.returncode == 1, result.stdout
    assert "FAIL  discovery" in result.stdout and "timed out" in result.stdout
    assert elapsed < 15  # a drip of the ~300-byte discovery answer alone would take a minute


def test_doctor_configuration_error_exits_2() -> None:
    result = m2m("doctor", env=clean_env(M2M_GUARD_ISSUER="ftp://x", M2M_GUARD_AUDIENCE="a"))
    assert result.returncode == 2
    assert "M2M_GUARD_ISSUER must be an absolute https URL" in result.stderr


# -- rotate-keys -------------------------------------------------------------------------------

def test_rotate_keys_publishes_a_new_key_that_signs(served: Served) -> None:
    env = clean_env(SCALEKIT_ENVIRONMENT_URL=served.url, SCALEKIT_CLIENT_ID=served.admin_id,
                    SCALEKIT_CLIENT_SECRET=served.admin_secret)
    result = m2m("rotate-keys", "--publish-delay", "0", env=env)
    assert result.returncode == 0, result.stderr
    kid = re.search(r"new signing key (snk_\d+)", result.stdout)
    assert kid, result.stdout
    assert kid.group(1) in {key["kid"] for key in httpx.get(f"{served.url}/keys").json()["keys"]}
    token = served.token()
    verified = m2m("verify", token, env=served.guard_env())
    assert verified.returncode == 0, verified.stderr
    assert f"key {kid.group(1)}" in verified.stderr
    refused = m2m("rotate-keys", env=served.client_env())  # an M2M client is not the admin
    assert refused.returncode == 1
    assert "refused the rotation (HTTP 401): The token does not belong to the environment API " \
        "client." in refused.stderr


# -- demo ------------------------------------------------------------------------------------

def test_demo_serve_keeps_running_until_ctrl_c() -> None:
    process = subprocess.Popen([sys.executable, "-m", "m2m_guard", "demo", "--serve"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=clean_env(), preexec_fn=_ignore_sigint)
    try:
        assert process.stdout is not None
        seen = []
        for line in process.stdout:
            seen.append(line)
            if line.strip() == "m2m-guard doctor":
                break
        text = "".join(seen)
        assert "Both servers keep running" in text, text
        api = re.search(r"curl -i (http://127\.0\.0\.1:\d+)/deployments$", text, re.MULTILINE)
        assert api, text
        curl_token = re.search(r"TOKEN=\$\(curl -s (?:--cacert (\S+) )?(\S+) "
                               r"-d grant_type=client_credentials", text)
        credentials = re.search(r"-d client_id=(\S+) -d client_secret=(\S+)", text)
        assert curl_token and credentials
        # With the emulator extra the issuer is served over HTTPS by a local CA.
        verify: Any = (ssl.create_default_context(cafile=curl_token.group(1))
                       if curl_token.group(1) else True)
        token = httpx.post(curl_token.group(2), verify=verify, data={
            "grant_type": "client_credentials", "client_id": credentials.group(1),
            "client_secret": credentials.group(2)}).json()["access_token"]
        answer = httpx.get(api.group(1) + "/deployments",
                           headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 200
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(15)
    assert code == 0


def test_demo_exits_1_when_an_answer_is_not_the_expected_one() -> None:
    """An API that forgot to protect its admin route: the demo must notice and fail."""
    import io

    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from m2m_guard.asgi import M2MGuardMiddleware
    from m2m_guard.cli.demo import deployment_api

    def leaky(settings: Any) -> Any:
        protected = deployment_api(settings)

        async def admin(request: Any) -> JSONResponse:
            return JSONResponse({"audit": "everything"})

        routes = [Route("/admin/audit", admin), *protected.routes]
        return Starlette(routes=routes,
                         middleware=[Middleware(M2MGuardMiddleware, settings=settings)])

    out = io.StringIO()
    assert run_demo(leaky, out=out) == 1
    assert re.search(r"\[BAD\] GET  /admin/audit .*-> 200 \(expected 403\)", out.getvalue())
    assert "1 call(s) did not answer as expected" in out.getvalue()
