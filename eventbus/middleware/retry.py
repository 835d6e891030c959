"""Retry: call a failing handler again, with exponential backoff and jitter."""

from __future__ import annotations

import time

from .._context import Attempts, current_attempts
from .._log import logger
from .._testmode import retry_sleep
from ..exceptions import EventDecodeError
from ..failures import is_failure
from ..handler import Handle
from ..policies import Retry
from ..record import Record
from .base import DeliveryContext, Middleware

__all__ = ["retry"]


def retry(policy: Retry) -> Middleware:
    """Call the next step up to ``policy.attempts`` times while it fails.

    An event that cannot be decoded is never retried: it would fail the same
    way every time. The last failure is re-raised; how many attempts were made
    and when the first one failed go in `current_attempts`, for the dead
    letter.
    """

    def wrap(call_next: Handle, context: DeliveryContext) -> Handle:
        counters = context.counters

        async def handle(record: Record) -> None:
            attempts: Attempts | None = None
            attempt = 1
            while True:
                try:
                    await call_next(record)
                    return
                except EventDecodeError:
                    raise
                except BaseException as exc:
                    if not is_failure(exc):
                        raise
                    if attempts is None:
                        attempts = Attempts(record, time.time_ns())
                        current_attempts.set(attempts)
                    attempts.failed(attempt)
                    if attempt >= policy.attempts:
                        raise
                    delay = policy.delay(attempt)
                    counters.retried()
                    logger.warning(
                        "handler failed, retrying",
                        subscription=context.name,
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
