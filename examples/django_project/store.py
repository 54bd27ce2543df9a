"""The example's in-memory deployments, shared by the plain, async and DRF views."""

from __future__ import annotations

import threading
from typing import Any

from m2m_guard import AccessToken

DEPLOYMENTS: list[dict[str, Any]] = [
    {"id": "dep_1", "service": "billing", "version": "1.4.2", "status": "live"},
]
_lock = threading.Lock()


def queue_deployment(body: Any, token: AccessToken) -> dict[str, Any]:
    """Record a deployment request (not kept: the example stays the same between runs)."""
    fields = body if isinstance(body, dict) else {}
    with _lock:
        number = len(DEPLOYMENTS) + 1
    return {"id": f"dep_{number}", "service": fields.get("service"),
            "version": fields.get("version"), "status": "queued",
            "requested_by": token.client_id, "organization": token.organization_id}
