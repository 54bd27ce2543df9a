"""Scalekit's gRPC client-management service (``scalekit.v1.clients.ClientService``), as ASGI.

The official Scalekit SDKs register and manage M2M clients over gRPC on the environment URL's
origin (``create_organization_client``, ``m2m.createOrganizationClient``, …). This module serves
the methods of that flow beside the issuer's HTTP app, on the same port:

- ``CreateOrganizationClient``, ``GetOrganizationClient``, ``ListOrganizationClients``,
  ``UpdateOrganizationClient``, ``DeleteOrganizationClient``,
  ``CreateOrganizationClientSecret``, ``DeleteOrganizationClientSecret``.

Each handler converts the protobuf request into the management API's body and calls the same
`Clients` method and token check as the REST routes (one set of rules); the answers are
converted back. An `ApiError` becomes the gRPC status of its code (``INVALID_ARGUMENT``,
``NOT_FOUND``, ``FAILED_PRECONDITION``) with the message, and with Scalekit's error details: a
``google.rpc.Status`` whose one detail is a ``scalekit.v1.errdetails.ErrorInfo`` holding the
error code and each field violation. A call without a valid token of the environment API client
is ``UNAUTHENTICATED``; during a simulated outage every call is ``UNAVAILABLE``.

Protobuf messages come from the generated modules of the official Python SDK
(``scalekit-sdk-python``, MIT licence); the gRPC protocol itself (framing, trailers, deadlines,
compression) is connectrpc's. Both are in the ``emulator`` extra. proto3 cannot tell an unset
field from an empty one, so ``UpdateOrganizationClient`` changes the fields that are set
(non-empty, expiry non-zero), as Scalekit does; to empty a list, use the REST ``PATCH``.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from ..bearer import extract_bearer
from ..errors import GuardError, MissingToken
from .app import MAX_JSON_BYTES
from .clients import ApiError

if TYPE_CHECKING:
    from .issuer import LocalIssuer

__all__ = ["SERVICE", "GrpcUnavailable", "build_grpc_app", "grpc_available", "with_grpc"]

SERVICE = "scalekit.v1.clients.ClientService"
T = TypeVar("T")
_BASE_URL: contextvars.ContextVar[str] = contextvars.ContextVar("m2m_guard_grpc_base_url")


class GrpcUnavailable(RuntimeError):
    """The ``emulator`` extra (connectrpc, the Scalekit protobuf modules) is not installed."""


def grpc_available() -> bool:
    """True when the ``emulator`` extra is installed."""
    try:
        import connectrpc  # noqa: F401
        import scalekit.v1.clients.clients_pb2  # noqa: F401
    except ImportError:
        return False
    return True


def build_grpc_app(issuer: LocalIssuer) -> ASGIApp:
    """The ASGI app serving ``ClientService`` for `issuer` (paths ``/scalekit.v1.clients.
    ClientService/<Method>``); raises `GrpcUnavailable` without the ``emulator`` extra."""
    try:
        from connectrpc.code import Code
        from connectrpc.compat import google_protobuf_codecs
        from connectrpc.errors import ConnectError
        from connectrpc.method import IdempotencyLevel, MethodInfo, StreamType
        from connectrpc.server import ConnectASGIApplication, Endpoint
        from google.protobuf import empty_pb2
        from google.protobuf.timestamp_pb2 import Timestamp
        from protobuf.wkt import Any as AnyMessage
        from scalekit.v1.clients import clients_pb2 as pb
        from scalekit.v1.errdetails import errdetails_pb2 as errdetails
    except ImportError as exc:
        raise GrpcUnavailable(
            "the gRPC client-management service needs the emulator extra (Python 3.11+): "
            f"pip install 'm2m-guard[emulator]' ({exc})") from None

    codes = {"INVALID_ARGUMENT": Code.INVALID_ARGUMENT, "NOT_FOUND": Code.NOT_FOUND,
             "FAILED_PRECONDITION": Code.FAILED_PRECONDITION}

    def grpc_error(exc: ApiError) -> Exception:
        info = errdetails.ErrorInfo(error_code=exc.code)
        for violation in exc.details:
            info.validation_error_info.field_violations.add(
                field=violation["field"], description=violation["description"])
        detail = AnyMessage(type_url="type.googleapis.com/" + info.DESCRIPTOR.full_name,
                            value=info.SerializeToString())
        code = codes.get(exc.code, Code.INVALID_ARGUMENT if exc.status == 400 else Code.INTERNAL)
        return ConnectError(code, exc.message, details=[detail])

    async def call(ctx: Any, function: Callable[..., T], *args: Any) -> T:
        """Authorize the call as the REST gate does, then run `function` in a worker thread."""
        if issuer.unavailable:
            raise ConnectError(Code.UNAVAILABLE, "The issuer is unavailable (simulated outage).")
        # The Python SDK sends two Authorization values: its channel's call credentials (the
        # token it had when it was made) and its metadata (its current token). The call is
        # authorized when one of them is a valid token of the environment API client.
        values = list(dict.fromkeys(ctx.request_headers.getall("authorization"))) or [None]
        refusal: GuardError | None = None
        for value in values[:2]:
            try:
                token = extract_bearer([value] if value is not None else [])
                if token is None:
                    raise MissingToken("The management API needs the access token of the "
                                       "environment API client (client credentials of skc_…).")
                await run_in_threadpool(issuer.check_admin_token, token,
                                        issuer.base_url(_BASE_URL.get("")))
            except GuardError as exc:
                refusal = refusal or exc
            else:
                refusal = None
                break
        if refusal is not None or len(values) > 2:
            description = refusal.description if refusal is not None else \
                "The request has more than two Authorization values."
            raise ConnectError(Code.UNAUTHENTICATED, description)
        try:
            return await run_in_threadpool(function, *args)
        except ApiError as exc:
            raise grpc_error(exc) from None

    def timestamp(text: str) -> Any:
        value = Timestamp()
        value.FromJsonString(text)
        return value

    def secret_message(secret: Mapping[str, Any], plain: str | None = None) -> Any:
        message = pb.ClientSecret(id=secret["id"], secret_suffix=secret["secret_suffix"],
                                  status=pb.ClientSecretStatus.Value(secret["status"]))
        message.create_time.CopyFrom(timestamp(secret["create_time"]))
        message.update_time.CopyFrom(timestamp(secret["update_time"]))
        if "last_used_time" in secret:
            message.last_used_time.CopyFrom(timestamp(secret["last_used_time"]))
        if plain is not None:
            message.plain_secret = plain
        return message

    def client_message(client: Mapping[str, Any]) -> Any:
        message = pb.M2MClient(
            client_id=client["client_id"], name=client["name"],
            description=client["description"], organization_id=client["organization_id"],
            scopes=client["scopes"], audience=client["audience"], expiry=client["expiry"],
            custom_claims=[pb.CustomClaim(key=item["key"], value=item["value"])
                           for item in client["custom_claims"]],
            secrets=[secret_message(secret) for secret in client["secrets"]])
        message.create_time.CopyFrom(timestamp(client["create_time"]))
        message.update_time.CopyFrom(timestamp(client["update_time"]))
        return message

    def body_of(client: Any, *, creating: bool) -> dict[str, Any]:
        """The REST body of an `OrganizationClient`: every field on create (an unset expiry
        means the default), only the set ones on update."""
        body: dict[str, Any] = {
            "name": client.name, "description": client.description,
            "scopes": list(client.scopes), "audience": list(client.audience),
            "custom_claims": [{"key": item.key, "value": item.value}
                              for item in client.custom_claims]}
        if client.expiry:
            body["expiry"] = client.expiry
        if not creating:
            body = {name: value for name, value in body.items() if value}
        return body

    class ClientService:
        async def create_organization_client(self, request: Any, ctx: Any) -> Any:
            if not request.HasField("client"):
                raise grpc_error(_missing("client"))
            client, plain = await call(ctx, issuer.clients.create, request.organization_id,
                                       body_of(request.client, creating=True))
            return pb.CreateOrganizationClientResponse(client=client_message(client),
                                                       plain_secret=plain)

        async def get_organization_client(self, request: Any, ctx: Any) -> Any:
            client = await call(ctx, issuer.clients.get, request.organization_id,
                                request.client_id)
            return pb.GetOrganizationClientResponse(client=client_message(client))

        async def list_organization_clients(self, request: Any, ctx: Any) -> Any:
            def page() -> dict[str, Any]:
                return issuer.clients.list(request.organization_id,
                                           page_size=request.page_size or None,
                                           page_token=request.page_token or None)
            answer = await call(ctx, page)
            return pb.ListOrganizationClientsResponse(
                clients=[client_message(client) for client in answer["clients"]],
                next_page_token=answer["next_page_token"], total_size=answer["total_size"])

        async def update_organization_client(self, request: Any, ctx: Any) -> Any:
            if not request.HasField("client"):
                raise grpc_error(_missing("client"))
            client = await call(ctx, issuer.clients.update, request.organization_id,
                                request.client_id, body_of(request.client, creating=False))
            return pb.UpdateOrganizationClientResponse(client=client_message(client))

        async def delete_organization_client(self, request: Any, ctx: Any) -> Any:
            await call(ctx, issuer.clients.delete, request.organization_id, request.client_id)
            return empty_pb2.Empty()

        async def create_organization_client_secret(self, request: Any, ctx: Any) -> Any:
            secret, plain = await call(ctx, issuer.clients.add_secret, request.organization_id,
                                       request.client_id)
            return pb.CreateOrganizationClientSecretResponse(
                secret=secret_message(secret, plain), plain_secret=plain)

        async def delete_organization_client_secret(self, request: Any, ctx: Any) -> Any:
            await call(ctx, issuer.clients.delete_secret, request.organization_id,
                       request.client_id, request.secret_id)
            return empty_pb2.Empty()

    service_descriptor = pb.DESCRIPTOR.services_by_name["ClientService"]
    handlers = {
        "CreateOrganizationClient": "create_organization_client",
        "GetOrganizationClient": "get_organization_client",
        "ListOrganizationClients": "list_organization_clients",
        "UpdateOrganizationClient": "update_organization_client",
        "DeleteOrganizationClient": "delete_organization_client",
        "CreateOrganizationClientSecret": "create_organization_client_secret",
        "DeleteOrganizationClientSecret": "delete_organization_client_secret",
    }
    messages = {**{name: getattr(pb, name) for name in dir(pb) if name[:1].isupper()},
                "Empty": empty_pb2.Empty}

    def endpoints(service: ClientService) -> dict[str, Any]:
        table: dict[str, Any] = {}
        for name, attribute in handlers.items():
            method = service_descriptor.methods_by_name[name]
            info = MethodInfo(name=name, service_name=SERVICE,
                              input=messages[method.input_type.name],
                              output=messages[method.output_type.name],
                              idempotency_level=IdempotencyLevel.UNKNOWN,
                              stream_type=StreamType.UNARY)
            table[f"/{SERVICE}/{name}"] = Endpoint.unary(info, getattr(service, attribute))
        return table

    class ClientServiceApp(ConnectASGIApplication[ClientService]):  # type: ignore[misc, unused-ignore]
        @property
        def path(self) -> str:
            return f"/{SERVICE}"

    app = ClientServiceApp(service=ClientService(), endpoints=endpoints,
                           codecs=google_protobuf_codecs(), read_max_bytes=MAX_JSON_BYTES)
    return cast(ASGIApp, app)  # connectrpc types the ASGI scope more narrowly than Starlette


def _missing(field: str) -> ApiError:
    return ApiError(400, "INVALID_ARGUMENT", f"Invalid request: {field}: is required.",
                    [{"field": field, "description": "is required"}])


def with_grpc(http_app: ASGIApp, issuer: LocalIssuer) -> ASGIApp:
    """One ASGI app: Scalekit's gRPC services (paths under ``/scalekit.``) go to
    `build_grpc_app`, everything else to `http_app` (the REST API, unchanged)."""
    grpc_app = build_grpc_app(issuer)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/scalekit."):
            reset = _BASE_URL.set(str(Request(scope).base_url))
            try:
                await grpc_app(scope, receive, send)
            finally:
                _BASE_URL.reset(reset)
            return
        await http_app(scope, receive, send)

    return app
