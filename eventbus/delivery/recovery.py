"""Store calls a subscription cannot do without, retried until they succeed.

A store error in a catch-up read, a checkpoint load or a tail wait (a network
store's connection reset, a locked SQLite file) must not stop the bus or the
subscription: it is logged, and the call is made again after a pause that
doubles up to `MAX_BACKOFF`. The subscription then goes on from where it was.

`HistoryTruncated` is not retried: the records are gone and asking again
cannot bring them back, so it reaches the caller (catch-up counts what was
lost and goes on from the first seq still stored).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio

from .._log import logger
from ..exceptions import HistoryTruncated

__all__ = ["Backoff", "FIRST_BACKOFF", "MAX_BACKOFF", "retrying"]

T = TypeVar("T")

FIRST_BACKOFF = 0.05
"""Seconds before the first retry of a failed store call."""
MAX_BACKOFF = 5.0
"""The longest pause between two retries of a failed store call."""


class Backoff:
    """Capped exponential pauses: `FIRST_BACKOFF`, doubling up to `MAX_BACKOFF`."""

    def __init__(self) -> None:
        self.delay = FIRST_BACKOFF

    def next(self) -> float:
        """The pause to take now; the next one is twice as long (capped)."""
        delay = self.delay
        self.delay = min(delay * 2, MAX_BACKOFF)
        return delay

    def reset(self) -> None:
        """Start again from `FIRST_BACKOFF` (after a success)."""
        self.delay = FIRST_BACKOFF


async def retrying(call: Callable[[], Awaitable[T]], what: str, subscription: str, **fields: Any) -> T:
    """``await call()`` until it returns, logging each failure with ``what`` and
    ``fields``; `HistoryTruncated` is raised at once."""
    backoff = Backoff()
    while True:
        try:
            return await call()
        except HistoryTruncated:
            raise
        except Exception as exc:
            delay = backoff.next()
            logger.error(
                f"{what} failed, retrying",
                subscription=subscription,
                error=repr(exc),
                retry_in=delay,
                **fields,
            )
            await anyio.sleep(delay)
