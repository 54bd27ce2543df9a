"""Readiness: `TokenVerifier.health()` as an HTTP answer any adapter (or your own probe) can send.

`health_response(verifier)` returns an `EndpointResponse`: status 200 when every issuer has a
usable key set (fresh, or stale within `jwks_max_stale`), else 503, and a JSON body::

    {"status": "ready" | "not_ready", "ready": true | false,
     "issuers": {"<issuer>": {"status": "fresh" | "stale" | "unavailable" | "cold",
                              "usable": ..., "keys": ..., "key_ids": [...], "age": ...,
                              "last_success": ..., "last_error": ..., "next_refresh": ...}}}

A not-ready answer also starts a background fetch for each issuer without a usable key set
(unless one is running or the failure backoff says wait): a pod that is not ready gets no
traffic, so without this nothing would ever retry. The answer itself never waits for a fetch,
so it stays within a probe's timeout.

The middleware serves it at `GuardSettings.health_path` (off by default); from your own readiness
route call ``health_response(verifier)`` or just read ``verifier.health()["ready"]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._core.answers import EndpointResponse, json_response

if TYPE_CHECKING:
    from .verifier import TokenVerifier

__all__ = ["EndpointResponse", "SUGGESTED_HEALTH_PATH", "health_response", "request_refresh"]

SUGGESTED_HEALTH_PATH = "/.well-known/m2m-guard/health"


def request_refresh(verifier: TokenVerifier) -> int:
    """Start a background fetch for every issuer whose key set is not usable, unless a fetch
    is already running or the failure backoff says to wait. Returns how many were started.

    Safe from any thread: on an asyncio event loop the fetch is a task, elsewhere a thread.
    """
    return verifier.key_store.request_refresh()


def health_response(verifier: TokenVerifier, *, refresh: bool = True) -> EndpointResponse:
    """`verifier.health()` as an HTTP answer: 200 when ready, else 503 (see the module doc).

    With `refresh` (the default), a not-ready answer starts background fetches for the issuers
    that lack a usable key set (`request_refresh`).
    """
    report = verifier.health()
    ready = bool(report["ready"])
    if not ready and refresh:
        request_refresh(verifier)
    document = {"status": "ready" if ready else "not_ready", **report}
    return json_response(200 if ready else 503, document)
