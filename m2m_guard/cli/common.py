"""What the commands share: exit codes, the error they raise, input and URL checks."""

from __future__ import annotations

import ipaddress
import signal
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "CommandError",
    "check_client_url",
    "plain",
    "read_stdin_value",
    "split_scopes",
    "wait_for_stop",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class CommandError(Exception):
    """Stops a command with a message for the user and an exit code (2 unless said)."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def plain(value: Any) -> Any:
    """A JSON-ready copy of read-only claims (mappings to dicts, tuples to lists)."""
    if isinstance(value, Mapping):
        return {str(name): plain(item) for name, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return value


def split_scopes(values: list[str]) -> list[str]:
    """Scopes given as repeated options and/or space-separated strings, in order, once each."""
    return list(dict.fromkeys(scope for value in values for scope in value.split()))


def read_stdin_value(what: str) -> str:
    """The first non-empty line of stdin, stripped; `CommandError` when there is none."""
    for line in sys.stdin:
        if line.strip():
            return line.strip()
    raise CommandError(f"expected {what} on stdin, got nothing")


def _is_loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_client_url(name: str, url: str) -> str:
    """Refuse URLs credentials must not be sent to: not http(s), or plain http off loopback."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise CommandError(f"{name} must be an absolute http(s) URL, got {url!r}")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise CommandError(f"{name} is {url!r}: client secrets are sent over https only "
                           f"(plain http is accepted for loopback addresses)")
    return url


@contextmanager
def _stop_signals(stop: threading.Event) -> Iterator[None]:
    # Handlers for SIGINT and SIGTERM that set `stop`, installed even when SIGINT was inherited
    # as ignored (a process started in the background by a non-interactive shell), so Ctrl-C
    # and `kill -INT` always stop a server cleanly.
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def wait_for_stop(stop: threading.Event | None = None) -> None:
    """Block until Ctrl-C, SIGTERM or `stop` is set."""
    event = stop if stop is not None else threading.Event()
    with _stop_signals(event):
        try:
            while not event.wait(0.2):
                pass
        except KeyboardInterrupt:  # a handler installed by the caller raised it
            pass
