"""Sending the guard's answers over ASGI (the middleware and FastAPI's endpoint middleware)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from ..errors import RenderedError
from .answers import EndpointResponse

if TYPE_CHECKING:
    from .endpoints import OperationalEndpoints

__all__ = ["ASGIApp", "Message", "Receive", "ReceiveTracker", "Scope", "Send", "SendTracker",
           "EndpointsMiddleware", "send_answer", "send_refusal"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ReceiveTracker:
    """A websocket app's `receive`: notes whether the app consumed the connect event."""

    __slots__ = ("connect_consumed", "receive")

    def __init__(self, receive: Receive) -> None:
        self.receive = receive
        self.connect_consumed = False

    async def __call__(self) -> Message:
        message = await self.receive()
        if message.get("type") == "websocket.connect":
            self.connect_consumed = True
        return message


class SendTracker:
    """The app's `send`: notes that the response started and hands the message on (a plain call
    returning the server's awaitable: no extra coroutine per message)."""

    __slots__ = ("send", "started")

    def __init__(self, send: Send) -> None:
        self.send = send
        self.started = False

    def __call__(self, message: Message) -> Awaitable[None]:
        self.started = True
        return self.send(message)


def _raw(headers: tuple[tuple[str, str], ...]) -> list[tuple[bytes, bytes]]:
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]


async def send_answer(send: Send, answer: EndpointResponse, *, head: bool) -> None:
    """One of the guard's own answers (HEAD: the same headers, no body)."""
    await send({"type": "http.response.start", "status": answer.status,
                "headers": _raw(answer.headers)})
    await send({"type": "http.response.body", "body": b"" if head else answer.body})


async def send_refusal(scope: Scope, receive: Receive, send: Send, rendered: RenderedError,
                       body_error: str, *, connect_consumed: bool = False) -> None:
    """A refusal: an HTTP response, or for a websocket a denial response before accepting where
    the server supports it, else a close with code 1008 (consuming the connect event first)."""
    headers = _raw(rendered.headers)
    headers.append((b"content-length", str(len(rendered.body)).encode("ascii")))
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": rendered.status,
                    "headers": headers})
        await send({"type": "http.response.body", "body": rendered.body})
        return
    if not connect_consumed:
        message = await receive()
        if message.get("type") != "websocket.connect":
            return
    if "websocket.http.response" in scope.get("extensions", {}):
        await send({"type": "websocket.http.response.start", "status": rendered.status,
                    "headers": headers})
        await send({"type": "websocket.http.response.body", "body": rendered.body})
    else:
        await send({"type": "websocket.close", "code": 1008, "reason": body_error})


class EndpointsMiddleware:
    """Answers the guard's operational endpoints (health, RFC 9728) before the app, for apps
    guarded without `M2MGuardMiddleware` (FastAPI dependencies). `endpoints()` is asked per
    request: None means "nothing to answer here"."""

    def __init__(self, app: ASGIApp, endpoints: Callable[[], OperationalEndpoints | None]) -> None:
        self.app = app
        self.endpoints = endpoints

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            endpoints = self.endpoints()
            if endpoints is not None:
                answer = endpoints.answer(scope["path"], scope["method"])
                if answer is not None:
                    await send_answer(send, answer, head=scope["method"] == "HEAD")
                    return
        await self.app(scope, receive, send)
