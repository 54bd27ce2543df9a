"""Schemathesis hooks for the local issuer campaign (loaded through SCHEMATHESIS_HOOKS).

JSON Schema cannot say "the custom-claim keys are unique" (``uniqueItems`` compares whole
items), so a generated body with a repeated key is valid to the document but refused by the
issuer, rightly. Such bodies are dropped before they are sent; every other body is sent.
"""

from __future__ import annotations

from typing import Any

import schemathesis


@schemathesis.hook
def filter_case(ctx: Any, case: Any) -> bool:
    body = getattr(case, "body", None)
    claims = body.get("custom_claims") if isinstance(body, dict) else None
    if not isinstance(claims, list):
        return True
    keys = [repr(item.get("key")) for item in claims if isinstance(item, dict)]
    return len(keys) == len(set(keys))
