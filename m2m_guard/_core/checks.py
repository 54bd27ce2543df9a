"""`Check`: the extension point of the gate (`_core/gate.py`) for rules every authenticated
request must pass after its token is verified. Its own module so that checks (`_core/mtls.py`)
and the gate that lists them (`default_checks`) import it without a circle. See
docs/architecture.md ("How to add a check")."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from ..token import AccessToken
    from .request import RequestView

__all__ = ["Check"]


class Check:
    """A rule every authenticated request must pass after its token is verified.

    Override `check` (synchronous; it must not block, it runs on the event loop under ASGI) and,
    for a rule that needs I/O, `check_async` as well. Raise a `GuardError` to refuse: it is
    answered and reported like every other refusal.

    `only_bound` True declares that the check can refuse only sender-constrained tokens (those
    with a ``cnf`` claim, RFC 7800): the cache-hit fast path then stays on for other tokens and
    sends every token with ``cnf`` through the full path, so no bound token skips the check.
    """

    __slots__ = ()
    only_bound: ClassVar[bool] = False

    def check(self, request: RequestView, token: str, access: AccessToken) -> None:
        raise NotImplementedError

    async def check_async(self, request: RequestView, token: str, access: AccessToken) -> None:
        self.check(request, token, access)
