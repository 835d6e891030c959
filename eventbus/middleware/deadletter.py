"""Dead-lettering: the outermost step, where every failed delivery ends.

The step is not a wrapping coroutine: the workers' ``except`` around the
delivery they await calls `fail` (see `eventbus.delivery.pipeline`), which
costs nothing while nothing fails."""

from __future__ import annotations

import time
import traceback
import uuid
from datetime import UTC, datetime

from .._context import Attempts, current_attempts
from .._log import logger
from .._testmode import failure_observer
from ..deadletter import DeadLetter
from ..record import Record
from ..store.base import Store
from .base import DeliveryContext

__all__ = ["attempts_of", "bury", "fail"]


async def fail(context: DeliveryContext, store: Store, record: Record, exc: BaseException) -> None:
    """End a delivery as a dead letter: store the letter and count it (once
    stored or given up on, so that the delivery is pending until then)."""
    if (observe := failure_observer.get()) is not None:
        observe(exc)
    await bury(store, context.name, record, exc, attempts_of(record))
    context.counters.dead_lettered()


async def bury(
    store: Store,
    subscription: str,
    record: Record,
    exc: BaseException,
    attempts: Attempts | None,
    *,
    earlier: DeadLetter | None = None,
) -> bool:
    """Store a dead letter of ``subscription`` for ``record`` failing with ``exc``.

    The attempts and the time of the first failure come from ``attempts``
    (None: one attempt, failing now);
    ``earlier`` is the letter a failed redrive replaces: its attempts and first
    failure carry over. A store that cannot take the letter is logged with
    everything in it, so the failure is never silent. Returns whether the
    letter was stored.
    """
    now = time.time_ns()
    count = (attempts.count if attempts is not None else 1) + (earlier.attempts if earlier else 0)
    first = attempts.first_failed_at if attempts is not None else now
    letter = DeadLetter(
        id=uuid.uuid4(),
        subscription=subscription,
        record=record,
        error_type=f"{type(exc).__module__}.{type(exc).__qualname__}",
        error_message=str(exc),
        traceback="".join(traceback.format_exception(exc)),
        attempts=count,
        first_failed_at=earlier.first_failed_at if earlier else _utc(first),
        last_failed_at=_utc(now),
    )
    log = logger.bind(subscription=subscription, seq=record.seq, type=record.type)
    log.error("delivery failed, dead-lettered", attempts=count, error=repr(exc), dead_letter=str(letter.id))
    try:
        await store.add_dead_letters([letter])
    except Exception as store_exc:
        log.critical(
            "could not store dead letter",
            dead_letter=str(letter.id),
            event_id=str(record.event_id),
            error=repr(exc),
            store_error=repr(store_exc),
            traceback=letter.traceback,
        )
        return False
    return True


def attempts_of(record: Record) -> Attempts | None:
    """The attempts the retry step noted for the delivery of ``record``, if any (once)."""
    attempts = current_attempts.get()
    if attempts is None:
        return None
    current_attempts.set(None)
    return attempts if attempts.record is record else None


def _utc(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1_000_000_000, UTC)
