"""The `mcp` SDK's own client over streamable HTTP, recording the refusals it receives."""

from __future__ import annotations

from typing import Any

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client


class _Recorder:
    """The HTTP answers the SDK's client received (status, WWW-Authenticate, the JSON body or
    else the text)."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, str | None, Any]] = []

    async def __call__(self, response: httpx2.Response) -> None:
        if response.status_code >= 400:
            await response.aread()
            try:
                body: Any = response.json()
            except ValueError:
                body = response.text
            self.answers.append((response.status_code,
                                 response.headers.get("www-authenticate"), body))


async def call_tool(url: str, token: str | None, tool: str,
                    arguments: dict[str, Any] | None = None) -> tuple[Any, _Recorder]:
    """Call `tool` with the SDK's client; (the tool's structured result or the exception the
    client raised, the refusals it received)."""
    recorder = _Recorder()
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with httpx2.AsyncClient(headers=headers, timeout=30,
                                  event_hooks={"response": [recorder]}) as http:
        try:
            async with Client(streamable_http_client(url, http_client=http)) as client:
                result = await client.call_tool(tool, arguments or {})
                return (result.structured_content if not result.is_error else result), recorder
        except Exception as exc:  # the client's own error for a refused request
            return exc, recorder
