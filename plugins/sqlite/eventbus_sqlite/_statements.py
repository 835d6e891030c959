"""The SQL a SQLite store writes and reads records and dead letters with.

The values themselves come from `eventbus.store.codec`, the conversion every
store shares: the columns are its `RECORD_FIELDS` and `DEAD_LETTER_FIELDS`,
ids are 16-byte big-endian blobs and dead letters' failure times integer
nanoseconds (`LAYOUT`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import chain
from typing import Any

from eventbus.store.codec import DEAD_LETTER_FIELDS, RECORD_FIELDS, Layout, id_bytes, ns_of

__all__ = [
    "CHUNK_ROWS",
    "EVENT_ID_COLUMN",
    "INSERT_LETTER",
    "INSERT_RECORD",
    "INSERT_RECORD_CHUNK",
    "INSERT_UNSEEN_RECORD",
    "LAYOUT",
    "LETTER_COLUMNS",
    "RECORD_COLUMNS",
    "Row",
    "chunked",
    "find_event_ids",
]

LAYOUT = Layout(id=id_bytes, failed_at=ns_of)
"""Ids as 16-byte blobs, failure times as integer nanoseconds; the event's JSON
stays bytes, which ``CAST(? AS TEXT)`` turns into TEXT without a Python decode."""

RECORD_COLUMNS = ", ".join(RECORD_FIELDS)
"""The columns `eventbus.store.codec.records_from_rows` reads, in its order."""

LETTER_COLUMNS = ", ".join(DEAD_LETTER_FIELDS)
"""The columns `eventbus.store.codec.letters_from_rows` reads and ``letter_values`` writes, in order."""

CHUNK_ROWS = 100
"""Rows per multi-row ``INSERT``: one statement step for many rows costs far
less than a step each (and keeps under SQLite's oldest limit of 999 parameters)."""

_INSERT_RECORDS = f"INSERT INTO eventbus_records ({', '.join(RECORD_FIELDS[1:])}) VALUES "
_RECORD_VALUES = "(?, ?, CAST(? AS TEXT), ?, ?, ?, ?, ?, ?)"

INSERT_RECORD = _INSERT_RECORDS + _RECORD_VALUES
"""Takes a ``record_values`` row; the seq comes from AUTOINCREMENT."""

INSERT_RECORD_CHUNK = _INSERT_RECORDS + ", ".join([_RECORD_VALUES] * CHUNK_ROWS)
"""Takes `CHUNK_ROWS` rows flattened into one tuple (see `chunked`)."""

INSERT_UNSEEN_RECORD = (
    f"{_INSERT_RECORDS.removesuffix('VALUES ')}SELECT {_RECORD_VALUES[1:-1]} "
    "WHERE NOT EXISTS (SELECT 1 FROM eventbus_records WHERE repeat_of IS NULL AND event_id = ?) "
    "RETURNING seq, (SELECT seq FROM sqlite_sequence WHERE name = 'eventbus_records')"
)
"""Takes a ``record_values`` row and its event id once more: inserts the row
unless a record with that event id is stored, and returns the new seq with
the newest seq before it (SQLite runs the subquery before the statement's end
moves ``sqlite_sequence`` on). Appending one record is then one statement
instead of four (head, lookup, insert, ``last_insert_rowid``): what a
transaction that publishes one event runs."""

_LETTER_OWN_VALUES = "?, " * (len(DEAD_LETTER_FIELDS) - len(RECORD_FIELDS) + 1)

INSERT_LETTER = (
    f"INSERT INTO eventbus_dead_letters ({LETTER_COLUMNS}) VALUES ({_LETTER_OWN_VALUES}{_RECORD_VALUES[1:]} "
    "ON CONFLICT (id) DO UPDATE SET " + ", ".join(f"{column} = excluded.{column}" for column in DEAD_LETTER_FIELDS[1:])
)
"""Takes a ``letter_values`` row; a letter with an id already stored replaces it in place."""

Row = tuple[Any, ...]


def chunked(rows: Sequence[Row]) -> tuple[list[Row], Sequence[Row]]:
    """Split ``rows`` into parameters for `INSERT_RECORD_CHUNK` and the rows left over for `INSERT_RECORD`."""
    whole = len(rows) - len(rows) % CHUNK_ROWS
    flatten = chain.from_iterable
    chunks = [tuple(flatten(rows[start : start + CHUNK_ROWS])) for start in range(0, whole, CHUNK_ROWS)]
    return chunks, rows[whole:]


EVENT_ID_COLUMN = RECORD_FIELDS[1:].index("event_id")
"""Where a ``record_values`` row holds the event id."""

_IDS_PER_LOOKUP = 500
"""Ids per lookup statement (under SQLite's oldest limit of 999 parameters)."""


def find_event_ids(ids: Sequence[bytes]) -> Iterator[tuple[str, Sequence[bytes]]]:
    """Statements with their parameters that together return ``(event_id, seq)``
    for each of ``ids`` the store holds (through the unique index on event ids)."""
    for start in range(0, len(ids), _IDS_PER_LOOKUP):
        chunk = ids[start : start + _IDS_PER_LOOKUP]
        marks = ", ".join("?" * len(chunk))
        yield f"SELECT event_id, seq FROM eventbus_records WHERE repeat_of IS NULL AND event_id IN ({marks})", chunk
