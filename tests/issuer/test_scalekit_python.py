"""The official Scalekit Python SDK (scalekit-sdk-python, pinned by the test extra), unchanged,
against the local issuer served with TLS and the gRPC client-management service: registration
over gRPC, tokens from the token endpoint (with the SDK's own Bearer header beside the form
credentials), narrowing by scope, validation, a secret rotation, and each error answer."""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from m2m_guard import GuardSettings, TokenVerifier
from m2m_guard.local_issuer import LocalIssuer, RunningIssuer, serve_issuer
from m2m_guard.local_issuer.tls import ensure_certificates
from tests.packages import require_package

from .conftest import ADMIN_ID, ADMIN_SECRET, ORG

require_package("connectrpc")  # the issuer's gRPC service
scalekit = require_package("scalekit", "scalekit-sdk-python")

import grpc  # noqa: E402  (installed with scalekit-sdk-python)
from scalekit import ScalekitClient  # noqa: E402
from scalekit.common.exceptions import (  # noqa: E402
    ScalekitBadRequestException,
    ScalekitNotFoundException,
    ScalekitServerException,
    ScalekitUnauthorizedException,
)
from scalekit.common.scalekit import TokenValidationOptions  # noqa: E402
from scalekit.v1.clients.clients_pb2 import (  # noqa: E402
    GetOrganizationClientRequest,
    ListOrganizationClientsRequest,
    OrganizationClient,
)
from scalekit.v1.clients.clients_pb2_grpc import ClientServiceStub  # noqa: E402

AUDIENCE = "deployment-api.acmecorp.com"


@pytest.fixture(scope="module")
def ca_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One CA for the module, trusted the way the issuer's banner says (grpcio reads
    GRPC_DEFAULT_SSL_ROOTS_FILE_PATH once per process, so every issuer here shares it)."""
    files = ensure_certificates(tmp_path_factory.mktemp("tls"))
    names = ("GRPC_DEFAULT_SSL_ROOTS_FILE_PATH", "REQUESTS_CA_BUNDLE")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update(dict.fromkeys(names, str(files.ca_cert)))
    try:
        yield files.directory
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="module")
def emulator(ca_file: Path) -> Iterator[RunningIssuer]:
    issuer = LocalIssuer(admin_client_id=ADMIN_ID, admin_client_secret=ADMIN_SECRET,
                         key_publish_delay=0)
    try:
        with serve_issuer(issuer, tls=ca_file, grpc=True) as running:
            yield running
    finally:
        issuer.close()


@pytest.fixture(scope="module")
def sdk(emulator: RunningIssuer) -> Iterator[Any]:
    # The quickstart's construction, with the local environment URL and credentials.
    client = ScalekitClient(emulator.url, ADMIN_ID, ADMIN_SECRET)
    yield client
    # its channel would go on reconnecting (and pinging) in grpcio's threads after the server
    # stopped, for the rest of the test session
    client.core_client.grpc_secure_channel.close()


def _trusting() -> ssl.SSLContext:
    return ssl.create_default_context(cafile=os.environ["REQUESTS_CA_BUNDLE"])


def _quickstart_client() -> Any:
    return OrganizationClient(
        name="GitHub Actions Deployment Service",
        description="Service account for GitHub Actions to deploy applications to production",
        custom_claims=[{"key": "github_repository", "value": "acmecorp/inventory-service"},
                       {"key": "environment", "value": "production_us"}],
        scopes=["deploy:applications", "read:deployments"],
        audience=[AUDIENCE],
        expiry=3600,
    )


def _created(sdk: Any, org: str = ORG) -> tuple[str, str]:
    response = sdk.m2m_client.create_organization_client(organization_id=org,
                                                         m2m_client=_quickstart_client())
    return response[0].client.client_id, response[0].plain_secret


def test_quickstart_registration_token_and_validation(sdk: Any, emulator: RunningIssuer) -> None:
    response = sdk.m2m_client.create_organization_client(organization_id=ORG,
                                                         m2m_client=_quickstart_client())
    created = response[0]
    client = created.client
    assert client.client_id.startswith("m2morg_") and client.organization_id == ORG
    assert created.plain_secret.startswith("test_") and len(client.secrets) == 1
    assert client.secrets[0].secret_suffix == created.plain_secret[-4:]
    assert list(client.scopes) == ["deploy:applications", "read:deployments"]
    assert [(c.key, c.value) for c in client.custom_claims] == [
        ("github_repository", "acmecorp/inventory-service"), ("environment", "production_us")]
    assert client.expiry == 3600 and client.create_time.seconds > 0

    # The same client through the REST API: one store, one set of rules.
    rest = httpx.get(f"{emulator.url}/api/v1/organizations/{ORG}/clients/{client.client_id}",
                     verify=_trusting(),
                     headers={"Authorization": "Bearer " + sdk.get_client_access_token()})
    assert rest.status_code == 200 and rest.json()["client"]["name"] == client.name

    token = sdk.generate_client_token(client_id=client.client_id,
                                      client_secret=created.plain_secret)
    claims = sdk.validate_access_token_and_get_claims(token, options=TokenValidationOptions(
        issuer=emulator.url, audience=[AUDIENCE], required_scopes=["deploy:applications"]))
    assert claims["client_id"] == client.client_id and claims["oid"] == ORG
    assert claims["scopes"] == ["deploy:applications", "read:deployments"]
    assert claims["custom_claims"]["github_repository"] == "acmecorp/inventory-service"
    assert sdk.validate_access_token(token, options=TokenValidationOptions(
        required_scopes=["admin:platform"])) is False

    # m2m_guard accepts the same token over HTTPS, trusting the local CA by its setting.
    assert emulator.tls is not None
    verifier = TokenVerifier(GuardSettings(issuer=emulator.url, audience=AUDIENCE,
                                           ca_bundle=str(emulator.tls.ca_cert)))
    try:
        assert verifier.verify_sync(token).client_id == client.client_id
    finally:
        verifier.close()


def test_narrowing_by_scope(sdk: Any) -> None:
    client_id, secret = _created(sdk)
    narrowed = sdk.generate_client_token(client_id=client_id, client_secret=secret,
                                         scopes=["read:deployments"])
    claims = sdk.validate_access_token_and_get_claims(narrowed)
    assert claims["scopes"] == ["read:deployments"]
    assert sdk.validate_access_token(narrowed, options=TokenValidationOptions(
        required_scopes=["deploy:applications"])) is False
    with pytest.raises(ScalekitServerException) as refused:
        sdk.generate_client_token(client_id=client_id, client_secret=secret,
                                  scopes=["admin:platform"])
    assert "invalid_scope" in refused.value.err_details


def test_get_list_update_and_delete(sdk: Any) -> None:
    org = "org_20000000000000002"
    first, _ = _created(sdk, org)
    second, secret = _created(sdk, org)
    got = sdk.m2m_client.get_organization_client(organization_id=org, client_id=first)[0]
    assert got.client.client_id == first and got.client.secrets[0].status == 0  # ACTIVE
    page = sdk.m2m_client.list_organization_clients(organization_id=org, page_size=1)[0]
    assert page.total_size == 2 and [c.client_id for c in page.clients] == [first]
    rest = sdk.m2m_client.list_organization_clients(organization_id=org, page_size=1,
                                                    page_token=page.next_page_token)[0]
    assert [c.client_id for c in rest.clients] == [second] and rest.next_page_token == ""

    updated = sdk.m2m_client.update_organization_client(
        organization_id=org, client_id=second,
        m2m_client=OrganizationClient(scopes=["read:deployments"], expiry=900))[0]
    assert list(updated.client.scopes) == ["read:deployments"] and updated.client.expiry == 900
    assert updated.client.name == "GitHub Actions Deployment Service"  # unset: unchanged
    claims = sdk.validate_access_token_and_get_claims(
        sdk.generate_client_token(client_id=second, client_secret=secret))
    assert claims["scopes"] == ["read:deployments"] and claims["exp"] - claims["iat"] == 900

    sdk.m2m_client.delete_organization_client(organization_id=org, client_id=first)
    with pytest.raises(ScalekitNotFoundException):
        sdk.m2m_client.get_organization_client(organization_id=org, client_id=first)
    left = sdk.m2m_client.list_organization_clients(organization_id=org)[0]
    assert [c.client_id for c in left.clients] == [second]


def test_secret_rotation(sdk: Any) -> None:
    client_id, old_secret = _created(sdk)
    added = sdk.m2m_client.add_organization_client_secret(organization_id=ORG,
                                                          client_id=client_id)[0]
    assert added.plain_secret.startswith("test_") and added.secret.id.startswith("sks_")
    assert added.secret.plain_secret == added.plain_secret
    assert sdk.generate_client_token(client_id=client_id, client_secret=added.plain_secret)
    secrets = sdk.m2m_client.get_organization_client(organization_id=ORG,
                                                     client_id=client_id)[0].client.secrets
    old = next(s.id for s in secrets if s.id != added.secret.id)
    sdk.m2m_client.remove_organization_client_secret(organization_id=ORG, client_id=client_id,
                                                     secret_id=old)
    with pytest.raises(ScalekitUnauthorizedException):
        sdk.generate_client_token(client_id=client_id, client_secret=old_secret)
    assert sdk.generate_client_token(client_id=client_id, client_secret=added.plain_secret)
    with pytest.raises(ScalekitBadRequestException) as last:  # a client keeps one secret
        sdk.m2m_client.remove_organization_client_secret(
            organization_id=ORG, client_id=client_id, secret_id=added.secret.id)
    assert last.value.error_code == "FAILED_PRECONDITION"
    assert last.value.grpc_status == grpc.StatusCode.FAILED_PRECONDITION


def _violations(error: Any) -> list[tuple[str, str]]:
    return [(v.field, v.description) for info in error._unpacked_details
            for v in info.validation_error_info.field_violations]


def test_error_answers_match_the_rest_api(sdk: Any, emulator: RunningIssuer) -> None:
    client_id, _ = _created(sdk)
    with pytest.raises(ScalekitNotFoundException) as unknown_org:
        sdk.m2m_client.get_organization_client(organization_id="org_404404404",
                                               client_id=client_id)
    assert unknown_org.value.error_code == "NOT_FOUND"
    assert unknown_org.value.grpc_status == grpc.StatusCode.NOT_FOUND
    assert _violations(unknown_org.value) == [("client_id", "not found")]

    bad = OrganizationClient(name="CI", scopes=["has space"], expiry=5)
    with pytest.raises(ScalekitBadRequestException) as invalid:
        sdk.m2m_client.create_organization_client(organization_id=ORG, m2m_client=bad)
    assert invalid.value.error_code == "INVALID_ARGUMENT"
    # the REST API answers the same body with the same message and details
    rest = httpx.post(f"{emulator.url}/api/v1/organizations/{ORG}/clients",
                      verify=_trusting(),
                      json={"name": "CI", "scopes": ["has space"], "expiry": 5},
                      headers={"Authorization": "Bearer " + sdk.get_client_access_token()})
    assert rest.status_code == 400
    assert invalid.value.message == rest.json()["message"]
    assert _violations(invalid.value) == [(d["field"], d["description"])
                                          for d in rest.json()["details"]]
    with pytest.raises(ScalekitBadRequestException) as bad_org:
        sdk.m2m_client.list_organization_clients(organization_id="not-an-org")
    assert _violations(bad_org.value)[0][0] == "organization_id"
    with pytest.raises(ScalekitBadRequestException) as no_name:
        sdk.m2m_client.create_organization_client(organization_id=ORG,
                                                  m2m_client=OrganizationClient())
    assert _violations(no_name.value) == [("name", "must not be empty")]

    with pytest.raises(ScalekitUnauthorizedException):  # wrong environment credentials
        ScalekitClient(emulator.url, ADMIN_ID, ADMIN_SECRET + "x")
    with pytest.raises(ScalekitUnauthorizedException):  # wrong M2M credentials
        sdk.generate_client_token(client_id=client_id, client_secret="test_wrong")


def _stub(emulator: RunningIssuer) -> Any:
    assert emulator.tls is not None
    credentials = grpc.ssl_channel_credentials(emulator.tls.ca_cert.read_bytes())
    channel = grpc.secure_channel(f"127.0.0.1:{emulator.port}", credentials)
    return channel, ClientServiceStub(channel)


def test_grpc_calls_need_the_environment_clients_token(emulator: RunningIssuer,
                                                       sdk: Any) -> None:
    channel, stub = _stub(emulator)
    request = ListOrganizationClientsRequest(organization_id=ORG)
    with channel:
        for metadata in [(), (("authorization", "Bearer not.a.token"),),
                         (("authorization", "Basic eDp5"),)]:
            with pytest.raises(grpc.RpcError) as refused:
                stub.ListOrganizationClients(request, metadata=metadata, timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        client_id, secret = _created(sdk)  # an M2M client's own token is not the admin's
        m2m_token = sdk.generate_client_token(client_id=client_id, client_secret=secret)
        with pytest.raises(grpc.RpcError) as not_admin:
            stub.ListOrganizationClients(request, timeout=10,
                                         metadata=(("authorization", "Bearer " + m2m_token),))
        assert not_admin.value.code() == grpc.StatusCode.UNAUTHENTICATED
        admin = (("authorization", "Bearer " + sdk.get_client_access_token()),)
        assert stub.ListOrganizationClients(request, metadata=admin, timeout=10).total_size >= 1
        # The SDK's channel keeps the token it was made with beside the current one: one valid
        # token of the environment client among the two values authorizes the call.
        stale = (("authorization", "Bearer " + m2m_token),) + admin
        assert stub.ListOrganizationClients(request, metadata=stale, timeout=10).total_size >= 1
        with pytest.raises(grpc.RpcError) as both_bad:
            stub.ListOrganizationClients(request, timeout=10, metadata=(
                ("authorization", "Bearer " + m2m_token), ("authorization", "Bearer x.y.z")))
        assert both_bad.value.code() == grpc.StatusCode.UNAUTHENTICATED
        emulator.issuer.unavailable = True
        try:
            with pytest.raises(grpc.RpcError) as down:
                stub.GetOrganizationClient(GetOrganizationClientRequest(
                    organization_id=ORG, client_id=client_id), metadata=admin, timeout=10)
            assert down.value.code() == grpc.StatusCode.UNAVAILABLE
        finally:
            emulator.issuer.unavailable = False


def test_grpc_over_plain_http2_and_rest_unchanged() -> None:
    """Without TLS the gRPC service speaks HTTP/2 by prior knowledge (as gRPC clients do over
    http://) beside the unchanged HTTP/1.1 API."""
    issuer = LocalIssuer(admin_client_id=ADMIN_ID, admin_client_secret=ADMIN_SECRET)
    try:
        with serve_issuer(issuer, grpc=True) as running:
            assert running.url.startswith("http://")
            token = httpx.post(running.url + "/oauth/token", auth=(ADMIN_ID, ADMIN_SECRET),
                               data={"grant_type": "client_credentials"}).json()["access_token"]
            created, _ = issuer.create_client(ORG, name="CI")
            with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                got = ClientServiceStub(channel).GetOrganizationClient(
                    GetOrganizationClientRequest(organization_id=ORG,
                                                 client_id=created["client_id"]),
                    metadata=(("authorization", "Bearer " + token),), timeout=10)
            assert got.client.name == "CI"
            keys = httpx.get(running.url + "/keys")
            assert keys.status_code == 200 and keys.http_version == "HTTP/1.1"
    finally:
        issuer.close()
