"""The queries a SQLite store reads with; each runs in a worker thread on a reader connection."""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Sequence
from operator import itemgetter

from eventbus.deadletters import DeadLetter
from eventbus.record import Record
from eventbus.store.codec import EXTRA_FIELDS, MAX_SEQ, PLAIN_FIELDS, letters_from_rows, records_from_split_rows

from ._schema import HAS_EXTRAS
from ._statements import LETTER_COLUMNS

__all__ = ["checkpoint", "checkpoints", "dead_letters", "first_seq", "head", "read_page", "read_records"]

_RANGE = " FROM eventbus_records WHERE seq >= ? AND seq <= ?"
_UNNUMBERED = f"SELECT {', '.join(PLAIN_FIELDS)}{_RANGE}"
_NUMBERED = f"SELECT seq, {', '.join(PLAIN_FIELDS)}{_RANGE}"
_SEQS = f"SELECT seq{_RANGE}"
_EXTRAS = (
    f"SELECT seq, {', '.join(EXTRA_FIELDS)} FROM eventbus_records INDEXED BY eventbus_records_with_extras "
    f"WHERE seq >= ? AND seq <= ? AND {HAS_EXTRAS}"
)
_SEQ_AND_ROW = itemgetter(0, slice(1, None))


def read_records(
    connection: sqlite3.Connection,
    from_seq: int,
    to_seq: int | None,
    types: Collection[str] | None,
    limit: int,
) -> Sequence[Record]:
    """Up to ``limit`` records in ``[from_seq, to_seq]``, optionally of ``types`` only, in seq order.

    Without an index on ``type`` a filtered read walks the seq range and tests
    each row's type inside SQLite, which keeps appends fast and costs little
    next to building the records it returns.

    A page is read in one read transaction: first its first and last seq,
    then the columns most rows leave NULL (`EXTRA_FIELDS`) from the rows of
    that range that hold any (found through the partial index on them, not
    by testing every row: 1 050 instructions a row), then the columns every
    row has. A column fetched costs the reader thread about
    700 instructions a row (``sqlite3`` lets go of the GIL around each), a
    column scanned inside SQLite far less; so when the page's seqs are
    consecutive (seqs are gapless: only ``types`` leaves some out), they
    are counted rather than fetched.
    """
    upper = MAX_SEQ if to_seq is None else min(to_seq, MAX_SEQ)
    if from_seq > upper:
        return []
    where = ""
    names: tuple[str, ...] = ()
    if types is not None:
        names = tuple(sorted(set(types)))
        if not names:
            return []
        where = f" AND type IN ({', '.join('?' * len(names))})"
    connection.execute("BEGIN")
    try:
        bounds = (from_seq, upper, *names)
        found = connection.execute(f"{_SEQS}{where} ORDER BY seq LIMIT 1", bounds).fetchone()
        if found is None:
            return []
        first = found[0]
        found = connection.execute(f"{_SEQS}{where} ORDER BY seq LIMIT 1 OFFSET ?", (*bounds, limit - 1)).fetchone()
        last = upper if found is None else found[0]
        span = (first, last, *names)
        extras = {row[0]: row[1:] for row in connection.execute(_EXTRAS + where, span)}
        if last - first + 1 == limit:  # a full page, and no seq missing in between
            rows = connection.execute(f"{_UNNUMBERED}{where} ORDER BY seq", span)
            return records_from_split_rows(zip(range(first, last + 1), rows, strict=True), extras)
        rows = connection.execute(f"{_NUMBERED}{where} ORDER BY seq LIMIT ?", (*span, limit))
        return records_from_split_rows(map(_SEQ_AND_ROW, rows), extras)
    finally:
        if connection.in_transaction:
            connection.execute("COMMIT")


def read_page(
    connection: sqlite3.Connection,
    from_seq: int,
    to_seq: int | None,
    types: Collection[str] | None,
    limit: int,
) -> tuple[Sequence[Record], int | None]:
    """`read_records`, and the file's ``first_seq`` when the page may have run into it.

    Compaction removes a prefix and moves ``first_seq`` in one transaction,
    so a page that begins at ``from_seq`` is whole. Otherwise ``first_seq``
    is read afterwards (``None`` when it was not needed): if it now lies above
    ``from_seq``, the caller reports the records as gone.
    """
    records = read_records(connection, from_seq, to_seq, types, limit)
    if (records and records[0].seq == from_seq) or (to_seq is not None and to_seq < from_seq):
        return records, None
    return records, first_seq(connection)


def first_seq(connection: sqlite3.Connection) -> int:
    """Where retention has cut the history: every record from here to the head is kept."""
    row = connection.execute("SELECT value FROM eventbus_meta WHERE key = 'first_seq'").fetchone()
    return 1 if row is None else int(row[0])


def head(connection: sqlite3.Connection) -> int:
    """The greatest seq ever assigned: AUTOINCREMENT's high-water mark, which deleting rows never lowers."""
    row = connection.execute("SELECT seq FROM sqlite_sequence WHERE name = 'eventbus_records'").fetchone()
    return 0 if row is None else int(row[0])


def checkpoint(connection: sqlite3.Connection, name: str) -> int | None:
    """The position saved under ``name``."""
    row = connection.execute("SELECT position FROM eventbus_checkpoints WHERE name = ?", (name,)).fetchone()
    return None if row is None else int(row[0])


def checkpoints(connection: sqlite3.Connection) -> dict[str, int]:
    """Every saved position by name."""
    return dict(connection.execute("SELECT name, position FROM eventbus_checkpoints ORDER BY name"))


def dead_letters(connection: sqlite3.Connection, subscription: str | None) -> Sequence[DeadLetter]:
    """Dead letters in the order they were added, optionally of one subscription."""
    query = f"SELECT {LETTER_COLUMNS} FROM eventbus_dead_letters"
    if subscription is None:
        return letters_from_rows(connection.execute(f"{query} ORDER BY position"))
    return letters_from_rows(connection.execute(f"{query} WHERE subscription = ? ORDER BY position", (subscription,)))
