"""The app `tests/test_dpop_workers.py` serves with ``uvicorn --workers 2``: a DPoP-guarded
route configured from M2M_GUARD_* variables, and every response tagged with the worker's pid
(``x-worker-pid``, added outside the guard, so refusals carry it too)."""

from __future__ import annotations

import os
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from m2m_guard.asgi import M2MGuardMiddleware

PID = str(os.getpid()).encode()


async def _pid(request: Request) -> JSONResponse:
    return JSONResponse({"pid": os.getpid()})


_inner = Starlette(routes=[Route("/pid", _pid), Route("/deployments", _pid)],
                   middleware=[Middleware(M2MGuardMiddleware)])


async def app(scope: Any, receive: Any, send: Any) -> None:
    async def tagged(message: Any) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()),
                                              (b"x-worker-pid", PID)]}
        await send(message)

    await _inner(scope, receive, tagged if scope["type"] == "http" else send)
