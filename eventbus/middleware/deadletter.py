"""Dead-lettering: the outermost step, where every failed delivery ends."""

from __future__ import annotations

import time
import traceback
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from .._log import logger
from .._testmode import failure_observer
from ..deadletter import DeadLetter
from ..handler import Handle
from ..record import Record
from .failures import Attempts, attempts_of

if TYPE_CHECKING:
    from ..subscription import Subscription

__all__ = ["bury", "dead_letter", "fail"]


def dead_letter(call_next: Handle, subscription: Subscription) -> Handle:
    """Turn whatever escapes the rest of the chain into a stored `DeadLetter`."""

    async def handle(record: Record) -> None:
        try:
            await call_next(record)
        except Exception as exc:
            await fail(subscription, record, exc)

    return handle


async def fail(subscription: Subscription, record: Record, exc: Exception) -> None:
    """End a delivery as a dead letter: count it and store the letter."""
    if (observe := failure_observer.get()) is not None:
        observe(exc)
    subscription.counters.dead_lettered += 1
    await bury(subscription, record, exc)


async def bury(
    subscription: Subscription, record: Record, exc: Exception, *, earlier: DeadLetter | None = None
) -> None:
    """Store a dead letter of ``subscription`` for ``record`` failing with ``exc``.

    ``earlier`` is the letter a failed redrive replaces: its attempts and
    first failure carry over. A store that cannot take the letter is logged
    with everything in it, so the failure is never silent.
    """
    now = time.time_ns()
    attempts = attempts_of(exc) or Attempts(1, now)
    count = attempts.count + (earlier.attempts if earlier else 0)
    first_failed_at = earlier.first_failed_at if earlier else _utc(attempts.first_failed_at)
    letter = DeadLetter(
        id=uuid.uuid4(),
        subscription=subscription.name,
        record=record,
        error_type=f"{type(exc).__module__}.{type(exc).__qualname__}",
        error_message=str(exc),
        traceback="".join(traceback.format_exception(exc)),
        attempts=count,
        first_failed_at=first_failed_at,
        last_failed_at=_utc(now),
    )
    log = logger.bind(subscription=subscription.name, seq=record.seq, type=record.type)
    log.error("delivery failed, dead-lettered", attempts=count, error=repr(exc), dead_letter=str(letter.id))
    try:
        await subscription.bus.store.add_dead_letters([letter])
    except Exception as store_exc:
        log.critical(
            "could not store dead letter",
            dead_letter=str(letter.id),
            event_id=str(record.event_id),
            error=repr(exc),
            store_error=repr(store_exc),
            traceback=letter.traceback,
        )


def _utc(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1_000_000_000, UTC)
