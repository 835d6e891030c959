"""The writing side of a SQLite store: one connection, one transaction at a time.

Its methods block and run in worker threads; the store calls them under its
write lock, so the connection is never used by two threads at once.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

from eventbus.deadletters import DeadLetter
from eventbus.exceptions import StoreError
from eventbus.record import Record
from eventbus.store import CompactionStep, CompactResult, Hold, LeaseFence, already_stored, append_seqs, lease_lost
from eventbus.store.codec import letter_values, record_values

from ._connection import FileIdentity, check_file, connect_writer, file_identity, sqlite_errors
from ._options import SqliteOptions
from ._reader import first_seq, head
from ._schema import migrate
from ._statements import (
    EVENT_ID_COLUMN,
    INSERT_LETTER,
    INSERT_RECORD,
    INSERT_RECORD_CHUNK,
    INSERT_UNSEEN_RECORD,
    LAYOUT,
    Row,
    chunked,
    find_event_ids,
)

__all__ = ["AppendRequest", "Writer", "insert_rows", "letter_rows", "save_checkpoints"]

_INCREMENTAL = 2
"""``PRAGMA auto_vacuum`` of a file that can give free pages back a few at a time."""
_SLACK_PAGES = 256
"""Free pages a background step leaves in the file (appends reuse them)."""
_SLACK_DIVISOR = 8
"""...and at least an eighth of the file, so steady retention never shrinks
the file only for the next appends to grow it again."""


@dataclass(eq=False)
class AppendRequest:
    """One caller's batch on its way to the file, perhaps in a transaction with others'.

    The writer sets ``committed`` (the records' seqs are then set, and
    ``already`` holds the positions of those whose event id was stored
    before) or ``error``.
    """

    records: Sequence[Record]
    committed: bool = False
    error: StoreError | None = None
    already: Sequence[int] = ()


class Writer:
    """Owns the writer connection; every method is one transaction.

    Each write transaction checks, just before and just after its commit,
    that the path still names the file the writer opened (`identity`, see
    `check_file`): a file deleted or replaced while the store is open fails
    the transaction with `StoreError` instead of committing into a file that
    is gone.
    """

    def __init__(self, connection: sqlite3.Connection, where: str, path: Path, identity: FileIdentity) -> None:
        self._connection = connection
        self._where = where
        self._path = path
        self.identity = identity
        """The ``(st_dev, st_ino)`` of the file opened."""
        self.commits = 0
        """Append transactions committed so far."""
        self.batches = 0
        """Callers' batches committed so far (several may share one commit)."""
        self.records = 0
        """Records committed so far."""

    @classmethod
    def open(cls, path: Path, options: SqliteOptions, where: str, *, create: bool = True) -> tuple[Writer, int]:
        """Connect, switch to WAL and bring the schema up to date; also the file's ``first_seq``.

        With ``create=False`` a missing file, or one without the store's
        tables, raises `StoreError` and nothing is created; a missing folder
        is a `StoreError` naming it either way.
        """
        if not create and not path.is_file():
            raise StoreError(f"SQLite store {where} does not exist (not created: the store must exist already)")
        if not path.parent.is_dir():
            raise StoreError(
                f"SQLite store {where}: the folder {path.parent} does not exist "
                "(the store creates its file, not folders)"
            )
        with sqlite_errors(where):
            connection = connect_writer(path, options, create=create)
            try:
                migrate(connection, where, create=create)
                first = first_seq(connection)
                identity = file_identity(path, where)
            except BaseException:
                connection.close()
                raise
        return cls(connection, where, path, identity), first

    def close(self) -> None:
        """Close the connection (SQLite checkpoints the WAL into the main file, unless the
        file was deleted or replaced: then the writer empties the log first)."""
        with sqlite_errors(self._where):
            self._empty_log_if_moved()
            self._connection.close()

    def append(self, requests: Sequence[AppendRequest]) -> None:
        """Commit every request that can be stored, together in one transaction when they all can.

        Group commit: the batches of concurrent callers share one transaction
        and one fsync. A batch that cannot be encoded fails alone; if the
        shared transaction fails, each batch is tried on its own, so one
        caller's bad input never fails another's append.
        """
        batches: list[tuple[AppendRequest, list[Row]]] = []
        for request in requests:
            try:
                batches.append((request, [record_values(record, LAYOUT) for record in request.records]))
            except ValueError as exc:
                request.error = self._error(exc)
        if len(batches) > 1:
            with suppress(StoreError):
                self._insert_unique(batches)
                return
        for batch in batches:
            try:
                self._insert_unique([batch])
            except StoreError as exc:
                batch[0].error = exc

    def save_checkpoints(self, positions: Mapping[str, int], fence: LeaseFence | None) -> None:
        """Upsert named positions; with a ``fence``, only while its lease still carries its token."""
        with self._transaction() as connection:
            save_checkpoints(connection, positions, fence, self._where)

    def acquire_lease(self, name: str, holder: str, ttl: float) -> int | None:
        """Take or renew a lease unless another holder's is unexpired; its fencing
        token when ``holder`` holds it now (one more than before when it changed
        hands), else None."""
        now = time.time_ns()
        with self._transaction() as connection:
            cursor = connection.execute(
                "INSERT INTO eventbus_leases (name, holder, expires_at, token) VALUES (?, ?, ?, 1) "
                "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at, "
                "token = eventbus_leases.token + (eventbus_leases.holder <> excluded.holder) "
                "WHERE eventbus_leases.holder = excluded.holder OR eventbus_leases.expires_at <= ?",
                (name, holder, now + round(ttl * 1e9), now),
            )
            if cursor.rowcount != 1:
                return None
            (token,) = connection.execute("SELECT token FROM eventbus_leases WHERE name = ?", (name,)).fetchone()
            return int(token)

    def release_lease(self, name: str, holder: str) -> None:
        """Let ``holder``'s lease on ``name`` expire now, if it holds it; the row keeps its token."""
        with self._transaction() as connection:
            connection.execute(
                "UPDATE eventbus_leases SET expires_at = 0 WHERE name = ? AND holder = ?", (name, holder)
            )

    def add_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        """Store dead letters; one with an id already stored replaces it."""
        rows = letter_rows(letters, self._where)
        with self._transaction() as connection:
            connection.executemany(INSERT_LETTER, rows)

    def delete_dead_letters(self, ids: Collection[UUID]) -> int:
        """Delete dead letters by id; how many existed."""
        with self._transaction() as connection:
            cursor = connection.executemany(
                "DELETE FROM eventbus_dead_letters WHERE id = ?", [(LAYOUT.id(letter_id),) for letter_id in ids]
            )
            return cursor.rowcount

    def compact(self, step: CompactionStep) -> tuple[CompactResult, bool]:
        """One compaction step in one transaction; also whether ``max_rows`` left more to remove.

        Removes the records below the new ``first_seq`` (see
        `eventbus.store.retention`) and stores that seq with them.
        """
        with self._transaction() as connection:
            first, last = first_seq(connection), head(connection)
            first_young: int | None = None
            threshold = step.young_threshold_ns
            if threshold is not None:
                row = connection.execute(
                    "SELECT seq FROM eventbus_records WHERE seq >= ? AND seq < ? AND recorded_at >= ? "
                    "ORDER BY seq LIMIT 1",
                    (first, step.upper(first, last), threshold),
                ).fetchone()
                first_young = None if row is None else int(row[0])
            bound, held_by, more = step.decide(first, last, first_young, self._holds(connection))
            removed = 0
            if bound > first:
                removed = connection.execute("DELETE FROM eventbus_records WHERE seq < ?", (bound,)).rowcount
                connection.execute("UPDATE eventbus_meta SET value = ? WHERE key = 'first_seq'", (bound,))
        return CompactResult(removed=removed, first_seq=bound, held_by=held_by), more

    def reclaim(self, *, max_pages: int | None) -> None:
        """Give free pages back to the file system.

        In the background (``max_pages`` set) only once the free pages pass a
        slack that appends would soon reuse, and at most ``max_pages`` at a
        time. By hand (``None``) all of them, then the write-ahead log is
        checkpointed and truncated. A file made before incremental
        auto-vacuum (eventbus-sqlite 0.1) can only shrink by a full
        ``VACUUM``, which compacting by hand runs once and which converts it.
        """
        connection = self._connection
        with sqlite_errors(self._where):
            free = connection.execute("PRAGMA freelist_count").fetchone()[0]
            incremental = connection.execute("PRAGMA auto_vacuum").fetchone()[0] == _INCREMENTAL
            if max_pages is not None:
                pages = connection.execute("PRAGMA page_count").fetchone()[0]
                slack = max(_SLACK_PAGES, pages // _SLACK_DIVISOR)
                if incremental and free > slack:
                    connection.executescript(f"PRAGMA incremental_vacuum({min(free - slack, max_pages)});")
                return
            if incremental:
                connection.executescript("PRAGMA incremental_vacuum;")
            elif free:
                connection.execute("PRAGMA auto_vacuum = INCREMENTAL")
                connection.execute("VACUUM")
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    @staticmethod
    def _holds(connection: sqlite3.Connection) -> list[Hold]:
        """The lowest durable checkpoint and the oldest record a dead letter refers to."""
        holds: list[Hold] = []
        row = connection.execute("SELECT name, position FROM eventbus_checkpoints ORDER BY position LIMIT 1").fetchone()
        if row is not None:
            holds.append(Hold.checkpoint(row[0], int(row[1])))
        row = connection.execute("SELECT subscription, seq FROM eventbus_dead_letters ORDER BY seq LIMIT 1").fetchone()
        if row is not None:
            holds.append(Hold.dead_letter(row[0], int(row[1])))
        return holds

    def _insert_unique(self, batches: Sequence[tuple[AppendRequest, list[Row]]]) -> None:
        """`_insert` the batches as they are; when the unique index on event
        ids refuses that (an id stored before, or twice in the batches),
        `_insert` them again, looking their ids up first.

        Appends of new ids, nearly all of them, pay for the index and
        nothing else."""
        try:
            self._insert(batches, deduplicate=False)
        except StoreError as exc:
            if not isinstance(exc.__cause__, sqlite3.IntegrityError):
                raise
            self._insert(batches, deduplicate=True)

    def _insert(self, batches: Sequence[tuple[AppendRequest, list[Row]]], *, deduplicate: bool) -> None:
        """Insert the batches' rows in one transaction and number their records.

        With ``deduplicate`` a row whose event id is stored already, or came
        earlier in the batches, is left out, and its record takes that seq.
        """
        rows = [row for _, batch_rows in batches for row in batch_rows]
        with self._transaction() as connection:
            seqs, repeated = insert_rows(connection, rows, self._where, deduplicate=deduplicate)
        self.commits += 1
        self.batches += len(batches)
        self.records += len(rows) - len(repeated)
        start = 0
        for request, _ in batches:
            end = start + len(request.records)
            for record, seq in zip(request.records, seqs[start:end], strict=True):
                record.seq = seq
            request.already = [index - start for index in sorted(repeated) if start <= index < end]
            request.committed = True
            start = end

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT``, rolled back on any error; `sqlite3.Error` → `StoreError`.

        The file is looked at before the commit (gone: rolled back, nothing
        written) and after it (gone during the commit: what it wrote is in a
        file no longer at the path, and the caller is told so).
        """
        connection = self._connection
        try:
            with sqlite_errors(self._where):
                connection.execute("BEGIN IMMEDIATE")
                try:
                    yield connection
                    check_file(self._path, self.identity, self._where)
                    connection.execute("COMMIT")
                except BaseException:
                    if connection.in_transaction:
                        with suppress(sqlite3.Error):
                            connection.execute("ROLLBACK")
                    raise
            try:
                check_file(self._path, self.identity, self._where)
            except StoreError as exc:
                raise StoreError(f"{exc}; the transaction that had just committed went to that file") from exc.__cause__
        except StoreError:
            self._empty_log_if_moved()
            raise

    def _empty_log_if_moved(self) -> None:
        """When the path no longer names the file opened, checkpoint the write-ahead log into
        that file and truncate it. SQLite leaves the log of a moved file behind under the
        path's name, where the file now at the path, or the next one made there, would
        read its pages as its own."""
        try:
            check_file(self._path, self.identity, self._where)
        except StoreError:
            with suppress(sqlite3.Error):
                self._connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    def _error(self, exc: Exception) -> StoreError:
        error = StoreError(f"SQLite store {self._where}: {exc}")
        error.__cause__ = exc
        return error


def save_checkpoints(
    connection: sqlite3.Connection, positions: Mapping[str, int], fence: LeaseFence | None, where: str
) -> None:
    """Upsert named positions inside the write transaction open on
    ``connection``; with a ``fence``, only while its lease still carries its
    token (`LeaseLost` otherwise, and nothing is saved)."""
    if fence is not None:
        row = connection.execute("SELECT token FROM eventbus_leases WHERE name = ?", (fence.name,)).fetchone()
        if row is None or row[0] != fence.token:
            raise lease_lost(fence, where)
    connection.executemany(
        "INSERT INTO eventbus_checkpoints (name, position) VALUES (?, ?) "
        "ON CONFLICT (name) DO UPDATE SET position = excluded.position",
        positions.items(),
    )


def letter_rows(letters: Sequence[DeadLetter], where: str) -> list[Row]:
    """The rows ``INSERT_LETTER`` stores ``letters`` as; `StoreError` for one that cannot be encoded."""
    try:
        return [letter_values(letter, LAYOUT) for letter in letters]
    except ValueError as exc:
        raise StoreError(f"SQLite store {where}: {exc}") from exc


def insert_rows(
    connection: sqlite3.Connection, rows: Sequence[Row], where: str, *, deduplicate: bool
) -> tuple[Sequence[int], set[int]]:
    """Insert ``record_values`` rows inside the write transaction open on
    ``connection``; the seq of each and the positions of those left out.

    With ``deduplicate`` a row whose event id is stored already, or came
    earlier in ``rows``, is left out and takes that seq (see `append_seqs`);
    without, every row is inserted (and the unique index on event ids refuses
    a repeated one). Raises `StoreError` when ``AUTOINCREMENT`` would leave a
    gap; the caller rolls back.
    """
    if deduplicate and len(rows) == 1:
        return _insert_unseen(connection, rows[0], where)
    last = head(connection)
    seqs = _numbered(connection, rows, last) if deduplicate else range(last + 1, last + len(rows) + 1)
    repeated = set(already_stored(seqs, last)) if deduplicate else set()
    new = [row for index, row in enumerate(rows) if index not in repeated] if repeated else rows
    chunks, rest = chunked(new)
    connection.executemany(INSERT_RECORD_CHUNK, chunks)
    connection.executemany(INSERT_RECORD, rest)
    (newest,) = connection.execute("SELECT last_insert_rowid()").fetchone()
    if new:
        _check_gapless(last, len(new), newest, where)
    return seqs, repeated


def _insert_unseen(connection: sqlite3.Connection, row: Row, where: str) -> tuple[Sequence[int], set[int]]:
    """`insert_rows` of one row, deduplicated, in one statement (`INSERT_UNSEEN_RECORD`)
    when its event id is new: the common append of a single publish."""
    event_id = row[EVENT_ID_COLUMN]
    inserted = connection.execute(INSERT_UNSEEN_RECORD, (*row, event_id)).fetchone()
    if inserted is None:  # stored already: it keeps the seq it has
        statement, ids = next(find_event_ids([event_id]))
        ((_, seq),) = connection.execute(statement, ids).fetchall()
        return [seq], {0}
    seq, last = inserted
    _check_gapless(last or 0, 1, seq, where)
    return [seq], set()


def _check_gapless(last: int, count: int, newest: int, where: str) -> None:
    """`StoreError` unless ``count`` records appended after seq ``last`` end at seq ``newest``:
    AUTOINCREMENT skips seqs when ``sqlite_sequence`` was set below the greatest seq.
    The caller rolls back."""
    if newest != last + count:
        raise StoreError(
            f"SQLite store {where}: {count} records after seq {last} got seqs up to "
            f"{newest}; the store would have a gap, so nothing was appended"
        )


def _numbered(connection: sqlite3.Connection, rows: Sequence[Row], last: int) -> list[int]:
    """The seq of each row (see `append_seqs`), its event id looked up."""
    ids = [row[EVENT_ID_COLUMN] for row in rows]
    stored: dict[bytes, int] = {}
    for statement, chunk in find_event_ids(ids):
        stored.update(connection.execute(statement, chunk).fetchall())
    return append_seqs(ids, stored, last)
