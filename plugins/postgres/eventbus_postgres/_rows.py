"""Turning records and dead letters into column values, and rows back into them.

Columns hold ids as ``uuid``, ``recorded_at`` as integer nanoseconds since the
epoch (exactly what `Record` keeps, so it round-trips to the nanosecond), the
event's JSON as ``text`` (passed through untouched: nothing re-parses it on
the way in or out) and headers as ``jsonb`` (NULL when there are none). The
failure times of dead letters are ``timestamptz``, which holds the
microseconds a `datetime` has.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any
from uuid import UUID

import asyncpg

from eventbus.deadletter import DeadLetter
from eventbus.exceptions import StoreError
from eventbus.record import Record

__all__ = [
    "DEAD_LETTER_COLUMNS",
    "RECORD_COLUMNS",
    "columns",
    "dead_letter_from_row",
    "dead_letter_values",
    "record_from_row",
    "record_values",
]

RECORD_COLUMNS = (
    "seq",
    "type",
    "version",
    "event_id",
    "correlation_id",
    "causation_id",
    "recorded_at",
    "headers",
    "data",
)
"""The columns a record is stored in, in the order `record_values` gives them."""

_LETTER_OWN_COLUMNS = (
    "id",
    "subscription",
    "error_type",
    "error_message",
    "traceback",
    "attempts",
    "first_failed_at",
    "last_failed_at",
)
DEAD_LETTER_COLUMNS = _LETTER_OWN_COLUMNS + RECORD_COLUMNS
"""The columns of a dead letter: its own, then those of the record it carries."""

_RECORD_OFFSET = len(_LETTER_OWN_COLUMNS)


def record_values(record: Record) -> tuple[Any, ...]:
    """The values of ``record`` in `RECORD_COLUMNS` order."""
    event_id, correlation_id, causation_id = record.ids
    headers = record.headers
    return (
        record.seq,
        record.type,
        record.version,
        _uuid(event_id),
        None if correlation_id is None else _uuid(correlation_id),
        None if causation_id is None else _uuid(causation_id),
        record.recorded_at_ns,
        json.dumps(dict(headers)) if headers else None,
        _json(record),
    )


def dead_letter_values(letter: DeadLetter) -> tuple[Any, ...]:
    """The values of ``letter`` in `DEAD_LETTER_COLUMNS` order."""
    return (
        letter.id,
        letter.subscription,
        letter.error_type,
        letter.error_message,
        letter.traceback,
        letter.attempts,
        letter.first_failed_at,
        letter.last_failed_at,
        *record_values(letter.record),
    )


def columns(rows: Iterable[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Rows of values turned into one sequence per column (what ``unnest`` takes)."""
    return list(zip(*rows, strict=True))


def record_from_row(row: asyncpg.Record, offset: int = 0) -> Record:
    """The `Record` of a row whose `RECORD_COLUMNS` start at ``offset``; decoded lazily."""
    headers = row[offset + 7]
    return Record.from_stored(
        seq=row[offset],
        type=row[offset + 1],
        version=row[offset + 2],
        event_id=row[offset + 3],
        correlation_id=row[offset + 4],
        causation_id=row[offset + 5],
        recorded_at=row[offset + 6],
        headers=None if headers is None else json.loads(headers),
        data=row[offset + 8],
    )


def dead_letter_from_row(row: asyncpg.Record) -> DeadLetter:
    """The `DeadLetter` of a row in `DEAD_LETTER_COLUMNS` order."""
    return DeadLetter(
        id=UUID(int=row[0].int),
        subscription=row[1],
        error_type=row[2],
        error_message=row[3],
        traceback=row[4],
        attempts=row[5],
        first_failed_at=row[6],
        last_failed_at=row[7],
        record=record_from_row(row, _RECORD_OFFSET),
    )


def _json(record: Record) -> str:
    """The event's JSON as text; `StoreError` naming the record if it does not encode."""
    try:
        data = record.data
    except (TypeError, ValueError) as exc:
        raise StoreError(
            f"cannot store event {record.event_id} of type {record.type!r}: it does not encode as JSON: {exc}"
        ) from exc
    return data if isinstance(data, str) else data.decode()


def _uuid(value: UUID | int) -> UUID | str:
    """An id as asyncpg encodes it: a `UUID` as it is, a compact int as 32 hex digits."""
    return f"{value:032x}" if isinstance(value, int) else value
