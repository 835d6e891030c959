"""Retry: call a failing handler again, with exponential backoff and jitter."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from .._log import logger
from .._testmode import retry_sleep
from ..exceptions import EventDecodeError
from ..handler import Handle
from ..policies import Retry
from ..record import Record
from .base import Middleware
from .failures import note_attempts

if TYPE_CHECKING:
    from ..subscription import Subscription

__all__ = ["retry"]


def retry(policy: Retry) -> Middleware:
    """Call the next step up to ``policy.attempts`` times while it raises.

    An event that cannot be decoded is never retried: it would fail the same
    way every time. The last failure is re-raised, noting how many attempts
    were made and when the first one failed, for the dead letter.
    """

    def wrap(call_next: Handle, subscription: Subscription) -> Handle:
        counters = subscription.counters

        async def handle(record: Record) -> None:
            attempt = 1
            first_failed_at: int | None = None
            while True:
                try:
                    await call_next(record)
                    return
                except EventDecodeError:
                    raise
                except Exception as exc:
                    if first_failed_at is None:
                        first_failed_at = time.time_ns()
                    if attempt >= policy.attempts:
                        note_attempts(exc, attempt, first_failed_at)
                        raise
                    delay = policy.delay(attempt)
                    counters.retried += 1
                    logger.warning(
                        "handler failed, retrying",
                        subscription=subscription.name,
                        seq=record.seq,
                        type=record.type,
                        attempt=attempt,
                        retry_in=round(delay, 4),
                        error=repr(exc),
                    )
                    await retry_sleep.get()(delay)
                    attempt += 1

        return handle

    return wrap
