"""Per-attempt time limit: a handler that hangs is cancelled and fails."""

from __future__ import annotations

import anyio

from ..exceptions import HandlerTimeout
from ..handler import Handle
from ..record import Record
from .base import DeliveryContext, Middleware

__all__ = ["timeout"]


def timeout(seconds: float) -> Middleware:
    """Cancel each attempt that runs longer than ``seconds``; it fails with
    `HandlerTimeout` (and is retried or dead-lettered like any failure)."""

    def wrap(call_next: Handle, context: DeliveryContext) -> Handle:
        async def handle(record: Record) -> None:
            with anyio.move_on_after(seconds) as scope:
                await call_next(record)
            if scope.cancelled_caught:
                raise HandlerTimeout(
                    f"handler of subscription {context.name!r} ran past its timeout of "
                    f"{seconds}s on seq {record.seq} ({record.type})"
                )

        return handle

    return wrap
