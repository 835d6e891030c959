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
from eventbus.store import CompactionStep, CompactResult, Hold, LeaseFence, lease_lost
from eventbus.store.codec import letter_values, record_values

from ._connection import connect_writer, sqlite_errors
from ._options import SqliteOptions
from ._reader import first_seq, head
from ._schema import migrate
from ._statements import INSERT_LETTER, INSERT_RECORD, INSERT_RECORD_CHUNK, LAYOUT, Row, chunked

__all__ = ["AppendRequest", "Writer"]

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

    The writer sets ``committed`` (the records' seqs are then set) or ``error``.
    """

    records: Sequence[Record]
    committed: bool = False
    error: StoreError | None = None


class Writer:
    """Owns the writer connection; every method is one transaction."""

    def __init__(self, connection: sqlite3.Connection, where: str) -> None:
        self._connection = connection
        self._where = where
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
        tables, raises `StoreError` and nothing is created.
        """
        if not create and not path.is_file():
            raise StoreError(f"SQLite store {where} does not exist (not created: the store must exist already)")
        with sqlite_errors(where):
            connection = connect_writer(path, options, create=create)
            try:
                migrate(connection, where, create=create)
                first = first_seq(connection)
            except BaseException:
                connection.close()
                raise
        return cls(connection, where), first

    def close(self) -> None:
        """Close the connection (SQLite checkpoints the WAL into the main file)."""
        with sqlite_errors(self._where):
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
                self._insert(batches)
                return
        for batch in batches:
            try:
                self._insert([batch])
            except StoreError as exc:
                batch[0].error = exc

    def save_checkpoints(self, positions: Mapping[str, int], fence: LeaseFence | None) -> None:
        """Upsert named positions; with a ``fence``, only while its lease still carries its token."""
        with self._transaction() as connection:
            if fence is not None:
                row = connection.execute("SELECT token FROM eventbus_leases WHERE name = ?", (fence.name,)).fetchone()
                if row is None or row[0] != fence.token:
                    raise lease_lost(fence, self._where)
            connection.executemany(
                "INSERT INTO eventbus_checkpoints (name, position) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET position = excluded.position",
                positions.items(),
            )

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
        try:
            rows = [letter_values(letter, LAYOUT) for letter in letters]
        except ValueError as exc:
            raise self._error(exc) from exc
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

    def _insert(self, batches: Sequence[tuple[AppendRequest, list[Row]]]) -> None:
        rows = [row for _, batch_rows in batches for row in batch_rows]
        with self._transaction() as connection:
            last = head(connection)
            chunks, rest = chunked(rows)
            connection.executemany(INSERT_RECORD_CHUNK, chunks)
            connection.executemany(INSERT_RECORD, rest)
            (newest,) = connection.execute("SELECT last_insert_rowid()").fetchone()
            if newest != last + len(rows):
                raise StoreError(
                    f"SQLite store {self._where}: {len(rows)} records after seq {last} got seqs up to "
                    f"{newest}; the store would have a gap, so nothing was appended"
                )
        self.commits += 1
        self.batches += len(batches)
        self.records += len(rows)
        seq = last
        for request, _ in batches:
            for record in request.records:
                seq += 1
                record.seq = seq
            request.committed = True

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT``, rolled back on any error; `sqlite3.Error` → `StoreError`."""
        connection = self._connection
        with sqlite_errors(self._where):
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    with suppress(sqlite3.Error):
                        connection.execute("ROLLBACK")
                raise

    def _error(self, exc: Exception) -> StoreError:
        error = StoreError(f"SQLite store {self._where}: {exc}")
        error.__cause__ = exc
        return error
