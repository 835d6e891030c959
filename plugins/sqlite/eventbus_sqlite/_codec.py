"""Records and dead letters to SQLite rows and back.

Both directions sit on the hot path of append and replay, so they work on the
compact forms `Record` keeps: ids as ints (stored as 16-byte big-endian
blobs), timestamps as integer nanoseconds, the event as the JSON pydantic
wrote. Nothing is decoded on read: `Record.event` validates the JSON when it
is first asked for.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from itertools import chain
from types import MappingProxyType
from typing import Any
from uuid import UUID

from eventbus.deadletter import DeadLetter
from eventbus.record import NO_HEADERS, Record

__all__ = [
    "CHUNK_ROWS",
    "INSERT_LETTER",
    "INSERT_RECORD",
    "INSERT_RECORD_CHUNK",
    "LETTER_COLUMNS",
    "RECORD_COLUMNS",
    "Row",
    "chunked",
    "letter_rows",
    "letters_from_rows",
    "record_rows",
    "records_from_rows",
]

RECORD_COLUMNS = "seq, type, version, data, event_id, recorded_at, correlation_id, causation_id, headers"
"""The columns `records_from_rows` reads, in its order."""

CHUNK_ROWS = 100
"""Rows per multi-row ``INSERT``: one statement step for many rows costs far
less than a step each (and keeps under SQLite's oldest limit of 999 parameters)."""

_INSERT_RECORDS = (
    "INSERT INTO eventbus_records "
    "(type, version, data, event_id, recorded_at, correlation_id, causation_id, headers) VALUES "
)
_RECORD_VALUES = "(?, ?, CAST(? AS TEXT), ?, ?, ?, ?, ?)"

INSERT_RECORD = _INSERT_RECORDS + _RECORD_VALUES
"""Takes a `record_rows` row; the seq comes from AUTOINCREMENT. ``CAST`` lets
SQLite turn pydantic's UTF-8 bytes into TEXT without a Python decode."""

INSERT_RECORD_CHUNK = _INSERT_RECORDS + ", ".join([_RECORD_VALUES] * CHUNK_ROWS)
"""Takes `CHUNK_ROWS` rows flattened into one tuple (see `chunked`)."""

LETTER_COLUMNS = (
    "id, subscription, error_type, error_message, traceback, attempts, first_failed_at, "
    "last_failed_at, " + RECORD_COLUMNS
)
"""The columns `letters_from_rows` reads and `letter_rows` writes, in order."""

INSERT_LETTER = (
    f"INSERT INTO eventbus_dead_letters ({LETTER_COLUMNS}) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, CAST(? AS TEXT), ?, ?, ?, ?, ?) "
    "ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{column} = excluded.{column}" for column in LETTER_COLUMNS.split(", ")[1:])
)
"""Takes a `letter_rows` row; a letter with an id already stored replaces it in place."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_NS_PER_MICROSECOND = 1_000

Row = tuple[Any, ...]


def record_rows(records: Iterable[Record]) -> list[Row]:
    """Rows for `INSERT_RECORD`; `ValueError` naming the record that cannot be stored."""
    rows: list[Row] = []
    append = rows.append
    record: Record | None = None
    try:
        for record in records:
            event_id, correlation_id, causation_id = record.ids
            headers = record.headers
            append(
                (
                    record.type,
                    record.version,
                    record.data,
                    _id_blob(event_id),
                    record.recorded_at_ns,
                    None if correlation_id is None else _id_blob(correlation_id),
                    None if causation_id is None else _id_blob(causation_id),
                    _headers_json(headers) if headers else None,
                )
            )
    except Exception as exc:
        raise ValueError(f"cannot store {record!r}: {exc}") from exc
    return rows


def chunked(rows: Sequence[Row]) -> tuple[list[Row], Sequence[Row]]:
    """Split ``rows`` into parameters for `INSERT_RECORD_CHUNK` and the rows left over for `INSERT_RECORD`."""
    whole = len(rows) - len(rows) % CHUNK_ROWS
    flatten = chain.from_iterable
    chunks = [tuple(flatten(rows[start : start + CHUNK_ROWS])) for start in range(0, whole, CHUNK_ROWS)]
    return chunks, rows[whole:]


def records_from_rows(rows: Iterable[Row]) -> list[Record]:
    """Records from rows of `RECORD_COLUMNS`, events still undecoded."""
    new = Record
    to_int = int.from_bytes
    return [
        new(
            seq,
            None,
            type_,
            version,
            to_int(event_id),
            recorded_at,
            None if correlation_id is None else to_int(correlation_id),
            None if causation_id is None else to_int(causation_id),
            NO_HEADERS if headers is None else _headers_of(headers),
            0,
            data,
        )
        for seq, type_, version, data, event_id, recorded_at, correlation_id, causation_id, headers in rows
    ]


def letter_rows(letters: Sequence[DeadLetter]) -> list[Row]:
    """Rows for `INSERT_LETTER`; `ValueError` naming the letter that cannot be stored."""
    rows: list[Row] = []
    for letter in letters:
        try:
            (record_row,) = record_rows([letter.record])
            rows.append(
                (
                    letter.id.bytes,
                    letter.subscription,
                    letter.error_type,
                    letter.error_message,
                    letter.traceback,
                    letter.attempts,
                    _ns_of(letter.first_failed_at),
                    _ns_of(letter.last_failed_at),
                    letter.record.seq,
                    *record_row,
                )
            )
        except Exception as exc:
            raise ValueError(f"cannot store the dead letter {letter.id} of {letter.subscription!r}: {exc}") from exc
    return rows


def letters_from_rows(rows: Iterable[Row]) -> list[DeadLetter]:
    """Dead letters from rows of `LETTER_COLUMNS`."""
    return [
        DeadLetter(
            id=UUID(bytes=letter_id),
            subscription=subscription,
            record=records_from_rows([tuple(record_row)])[0],
            error_type=error_type,
            error_message=error_message,
            traceback=traceback,
            attempts=attempts,
            first_failed_at=_datetime_of(first_failed_at),
            last_failed_at=_datetime_of(last_failed_at),
        )
        for (
            letter_id,
            subscription,
            error_type,
            error_message,
            traceback,
            attempts,
            first_failed_at,
            last_failed_at,
            *record_row,
        ) in rows
    ]


def _id_blob(value: UUID | int) -> bytes:
    return value.to_bytes(16) if isinstance(value, int) else value.bytes


def _headers_json(headers: Mapping[str, str]) -> str:
    return json.dumps(dict(headers), ensure_ascii=False, separators=(",", ":"))


def _headers_of(text: str) -> Mapping[str, str]:
    return MappingProxyType(json.loads(text))


def _ns_of(moment: datetime) -> int:
    """Exact integer nanoseconds of an aware datetime (no float rounding)."""
    if moment.utcoffset() is None:
        raise ValueError(f"{moment!r} is a naive datetime; dead letters carry aware UTC datetimes")
    return (moment - _EPOCH) // _MICROSECOND * _NS_PER_MICROSECOND


def _datetime_of(ns: int) -> datetime:
    return _EPOCH + timedelta(microseconds=ns // _NS_PER_MICROSECOND)
