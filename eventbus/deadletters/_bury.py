"""`bury`: storing a dead letter, the one way a letter is made."""

from __future__ import annotations

import time
import traceback
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Protocol

from .._context import Attempts, current_attempts
from .._log import logger
from ..record import Record
from .letter import DeadLetter

__all__ = ["LetterBox", "bury"]


class LetterBox(Protocol):
    """Where `bury` stores a letter: a `Store`, or a projection, which stores
    it with the checkpoint past its record (`eventbus.delivery.projection`)."""

    async def add_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        """Store ``letters``."""


async def bury(
    store: LetterBox,
    subscription: str,
    record: Record,
    exc: BaseException,
    *,
    earlier: DeadLetter | None = None,
) -> bool:
    """Store a dead letter of ``subscription`` for ``record`` failing with ``exc``.

    The attempts and the time of the first failure are those the retry step
    noted for this delivery of ``record`` in the current context (read once);
    without them, the letter counts one attempt, failing now. ``earlier`` is
    the letter a failed redrive replaces: its attempts and first failure
    carry over. The letter is logged at error level; a store that cannot take
    it is logged at critical level with everything in it, so the failure is
    never silent. Counting the letter in a subscription's statistics is the
    caller's (the delivery pipeline's). Returns whether the letter was stored.

    Plugins call it for what they cannot deliver, under a subscription name
    of their own: ``await bury(bus.store, "my-bridge:inbound", record, exc)``.
    """
    now = time.time_ns()
    attempts = _attempts_of(record)
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


def _attempts_of(record: Record) -> Attempts | None:
    """The attempts the retry step noted for the delivery of ``record``, if any (once)."""
    attempts = current_attempts.get()
    if attempts is None:
        return None
    current_attempts.set(None)
    return attempts if attempts.record is record else None


def _utc(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1_000_000_000, UTC)
