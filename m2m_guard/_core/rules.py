"""What every adapter decides before verification, framework-free: is the path public, is the
request a CORS preflight. ASGI, WSGI, Flask and Django adapters share these."""

from __future__ import annotations

__all__ = ["PathRules", "is_cors_preflight"]


class PathRules:
    """Public-path matching: exact paths, and prefixes given with a trailing ``*``."""

    __slots__ = ("exact", "prefixes")

    def __init__(self, patterns: tuple[str, ...]) -> None:
        self.exact = frozenset(p for p in patterns if not p.endswith("*"))
        self.prefixes = tuple(p[:-1] for p in patterns if p.endswith("*"))

    def is_public(self, path: str) -> bool:
        return path in self.exact or (bool(self.prefixes) and path.startswith(self.prefixes))


def is_cors_preflight(method: str, has_origin: bool, has_request_method: bool) -> bool:
    """A CORS preflight: ``OPTIONS`` with both `Origin` and `Access-Control-Request-Method`."""
    return method == "OPTIONS" and has_origin and has_request_method
