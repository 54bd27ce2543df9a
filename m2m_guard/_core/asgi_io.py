"""Sending the guard's answers over ASGI (the middleware and FastAPI's endpoint middleware)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ..errors import RenderedError
from .answers import EndpointResponse

__all__ = ["ASGIApp", "Message", "Receive", "Scope", "Send", "send_answer", "send_refusal"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


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
