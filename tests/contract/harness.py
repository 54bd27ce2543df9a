"""The contract suite's plumbing: what a driver is, what it returns, and helpers drivers share.

A *driver* builds one framework's example deployment API from a `GuardSettings` and sends
requests to it with that framework's own test client. Each `tests/contract/drivers_<name>.py`
module exposes ``DRIVERS: dict[str, DriverFactory]``; `test_contract_matrix.py` imports every such
module and runs the same requests through every driver.

The example deployment API every driver builds (with the settings it is given, which carry
``public_paths=("/health",)``):

- ``GET  /deployments``  needs ``read:deployments``, answers 200 with a JSON object;
- ``POST /deployments``  needs ``deploy:applications``, answers 202 with a JSON object;
- ``GET  /admin/audit``  needs ``admin:platform``, answers 200 with a JSON object;
- ``GET  /health``       public, answers 200 with a JSON object.

A driver factory is a context manager: entering it builds the app (and runs its startup, as the
framework's test client does), leaving it shuts the app down (closing the guard's verifier).
"""

from __future__ import annotations

import json as jsonlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from m2m_guard import GuardSettings

__all__ = [
    "Driver",
    "DriverFactory",
    "Headers",
    "Reply",
    "header_pairs",
    "joined_headers",
    "make_reply",
]

#: Request headers: a mapping, or (name, value) pairs when a name repeats (two Authorization
#: headers). Drivers whose test client takes a mapping only use `joined_headers`.
Headers = Mapping[str, str] | Sequence[tuple[str, str]]


@dataclass(frozen=True)
class Reply:
    """A response as the contract sees it.

    `headers` has lower-case names; a name sent several times holds its values joined with
    ``", "`` (so a doubled challenge shows up as a mismatch). `body` is the parsed JSON, None for
    an empty body, or the raw text when the body is not JSON (a mismatch worth seeing).
    """

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Any = None


class Driver(Protocol):
    """One running example app and the framework test client that talks to it."""

    name: str

    def request(self, method: str, path: str, headers: Headers | None = None,
                json: Any = None) -> Reply:
        """Send one request (`path` may carry a query string); `json` is sent as a JSON body."""
        ...


DriverFactory = Callable[[GuardSettings], AbstractContextManager[Driver]]


def header_pairs(headers: Headers | None) -> list[tuple[str, str]]:
    """`headers` as a list of (name, value) pairs, repeats kept in order."""
    if headers is None:
        return []
    if isinstance(headers, Mapping):
        return [(str(name), str(value)) for name, value in headers.items()]
    return [(str(name), str(value)) for name, value in headers]


def joined_headers(headers: Headers | None) -> dict[str, str]:
    """`headers` as a dict, repeated names joined with ``", "``.

    That is how WSGI servers (waitress, gunicorn, Werkzeug) hand repeated request headers to the
    application in `environ`, so a driver whose test client takes a dict (Django's) sends what a
    real WSGI server would.
    """
    joined: dict[str, str] = {}
    by_lower: dict[str, str] = {}
    for name, value in header_pairs(headers):
        key = by_lower.setdefault(name.lower(), name)
        joined[key] = f"{joined[key]}, {value}" if key in joined else value
    return joined


def make_reply(status: int, headers: Iterable[tuple[str, str]], body: bytes | str) -> Reply:
    """A `Reply` from a status, response header pairs and the raw body."""
    collected: dict[str, str] = {}
    for name, value in headers:
        key = name.lower()
        collected[key] = f"{collected[key]}, {value}" if key in collected else value
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    parsed: Any
    if not text:
        parsed = None
    else:
        try:
            parsed = jsonlib.loads(text)
        except ValueError:
            parsed = text
    return Reply(status, collected, parsed)
