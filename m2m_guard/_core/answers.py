"""The guard's own HTTP answers, framework-neutral: status, headers and body bytes, which every
adapter sends as they are (health document, RFC 9728 metadata, 405)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

__all__ = ["EndpointResponse", "json_response"]


@dataclass(frozen=True, slots=True)
class EndpointResponse:
    """An answer an adapter sends as is: status, headers (name, value) and body bytes."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


def _finite(value: Any) -> Any:
    """JSON-safe: non-finite floats become None (JSON has no Infinity)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


def json_response(status: int, document: dict[str, Any], *,
                  content_type: str = "application/json",
                  cache_control: str = "no-store") -> EndpointResponse:
    """`document` as compact JSON, not cached by default."""
    body = json.dumps(_finite(document), separators=(",", ":"), allow_nan=False).encode("utf-8")
    return EndpointResponse(status, (("content-type", content_type),
                                     ("cache-control", cache_control),
                                     ("content-length", str(len(body)))), body)
