"""`SqliteStore`: the embedded durable store, one SQLite file in WAL mode."""

from __future__ import annotations

import math
import os
import sqlite3
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import anyio
from anyio import to_thread

from eventbus.deadletters import DeadLetter
from eventbus.exceptions import StoreError, TransactionError
from eventbus.plugins import logger
from eventbus.record import Record
from eventbus.store import (
    DEFAULT_PAGE_SIZE,
    CompactionStep,
    CompactResult,
    HistoryNeed,
    LeaseFence,
    Retention,
    StoreFeatures,
    check_lease_ttl,
    check_letter_ids,
    check_read_arguments,
    compact_by_hand,
    history_truncated,
    needed_hold,
    redact_url,
)
from eventbus.store.codec import record_values

from . import _reader
from ._connection import sqlite_errors
from ._options import SqliteOptions
from ._pool import ReaderPool
from ._projections import ProjectionConnections, SqliteProjection
from ._statements import LAYOUT
from ._transactions import AppConnection, SqliteTransaction, app_connection, check_connection
from ._url import parse_url
from ._writer import AppendRequest, Writer, insert_rows

__all__ = ["SqliteStats", "SqliteStore"]

T = TypeVar("T")


STEP_RECORDS = 10_000
"""A background compaction step runs after this many appended records, even
before ``compact_interval`` has passed, so each step has little to remove."""
STEP_ROWS = 50_000
"""The most seqs one background step removes; a backlog goes over several steps."""
STEP_PAGES = 2_048
"""The most free pages (8 MiB) one background step gives back to the file system."""
HAND_ROWS = 100_000
"""Seqs per transaction when compacting by hand, so the write-ahead log stays small."""


@dataclass(frozen=True)
class SqliteStats:
    """Counters of a `SqliteStore` since it was opened.

    Attributes:
        appends: `SqliteStore.append` calls whose records were committed.
        commits: write transactions those appends took (group commit lets
            concurrent appends share one).
        records: records committed.
    """

    appends: int = 0
    commits: int = 0
    records: int = 0


class SqliteStore:
    """Events, checkpoints and dead letters in one SQLite file.

    ```python
    store = SqliteStore("events.db")                      # or SqliteStore.from_url("sqlite:///events.db")
    bus = EventBus(store=store)                           # or EventBus(store="sqlite:///events.db")
    ```

    The file is in WAL mode, so readers never wait for the writer. Every write
    goes through one connection, in a worker thread, under a lock; appends
    that arrive while a commit is running are committed together in the next
    transaction (group commit), and each `append` returns only after its
    commit. Reads use a small pool of read-only connections, each in a worker
    thread of its own. Sequence numbers come from ``AUTOINCREMENT`` inside the
    write transaction, so they are gapless, in commit order even when several
    processes append to the file, and never reused after rows are deleted.

    With ``retention=`` (see `Retention`) the store compacts while it is
    open: every `STEP_RECORDS` appended records or ``compact_interval``
    seconds, whichever comes first, a short transaction after an append
    removes the oldest records the policy lets go (never one at or above a
    durable checkpoint, one a dead letter refers to, or one the running bus
    still needs) and hands freed pages back to the file system
    (incremental auto-vacuum), so the file stays about the size of what it
    keeps. `compact` does the same by hand.

    The application may publish inside its own transaction on a
    `sqlite3.Connection` to the same file (``bus.publish(...,
    transaction=conn)``, ``bus.transaction(conn)``; see
    `eventbus.store.Transactions`): the records are inserted through that
    connection, on the calling thread, and the transaction holds the file's
    write lock until it ends, so this store's appends (and other
    processes') wait for it, up to ``busy_timeout``.

    Args:
        path: the database file; created with its schema on first `open`.
        options: durability and waiting; see `SqliteOptions`.
        create: ``False`` to open only an existing store: `open` then raises
            `StoreError` naming the file when it is missing or holds no
            eventbus tables, and creates nothing (what read-only tools want).
        retention: how much history to keep (a `Retention`, an int count or
            a `timedelta` age); overrides ``options.retention``.
    """

    features = StoreFeatures(
        persistent=True, shared_between_processes=True, gapless=True, retention=True, transactions=True
    )

    def __init__(
        self,
        path: str | os.PathLike[str],
        options: SqliteOptions | None = None,
        *,
        retention: Retention | int | timedelta | None = None,
        url: str = "",
        create: bool = True,
    ) -> None:
        if "\x00" in os.fspath(path):
            raise ValueError(
                f"SQLite store path {os.fspath(path)!r} holds a NUL character, which no file name can hold"
            )
        self.path = Path(path).absolute()
        options = options if options is not None else SqliteOptions()
        self.options = options if retention is None else replace(options, retention=Retention.of(retention))
        self.create = create
        self._where = f"{redact_url(url)} ({self.path})" if url else str(self.path)
        self._writer: Writer | None = None
        self._readers: ReaderPool | None = None
        self._projections: ProjectionConnections | None = None
        self._write_lock: anyio.Lock | None = None
        self._queued: list[AppendRequest] = []
        self._appended: anyio.Event | None = None
        """What `wait_for_append` callers wait on, made by the first of them after
        each wake: a commit nobody waits for makes no event (which cost each
        commit of an `EventBus.transaction` block about 3 µs)."""
        self._first_seq = 1
        self._needed: HistoryNeed | None = None
        self._since_step = 0
        self._last_step = -math.inf
        self._checked: AppConnection | None = None
        """The application's connection `check_connection` last accepted (held,
        since a `sqlite3.Connection` cannot be weakly referenced, until
        another is checked or the store closes): a connection's main
        database is the file it was opened on for as long as it lives, so
        each publish in a transaction on it does not read ``PRAGMA
        database_list`` and ``stat`` the file again (a statement and a system
        call, about 6 µs; with commits that wait for the disk, 12 % of such
        a transaction), and the other methods on it do not wrap it again."""

    @classmethod
    def from_url(cls, url: str, *, create: bool = True, **options: Any) -> SqliteStore:
        """The store a ``sqlite:///relative.db`` or ``sqlite:////absolute.db`` URL names.

        Keyword ``options`` (see `SqliteOptions`, ``retention=`` included)
        override those in the URL's query string; ``create`` as for the
        constructor. Raises `ValueError` naming the URL when it is not one, or
        names a bad option.
        """
        path, url_options = parse_url(url)
        unknown = set(options) - {field.name for field in fields(SqliteOptions)}
        if unknown:
            raise TypeError(f"unknown SQLite store option {sorted(unknown)[0]!r} for {url!r}")
        return cls(path, replace(url_options, **options), url=url, create=create)

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

    def stats(self) -> SqliteStats:
        """What this store has appended since it was opened (zeros when it is not open).

        ``commits`` below ``appends`` shows group commit at work: concurrent
        appends shared transactions.
        """
        writer = self._writer
        if writer is None:
            return SqliteStats()
        return SqliteStats(appends=writer.batches, commits=writer.commits, records=writer.records)

    async def open(self) -> None:
        """Open the file (creating it and its schema if needed) and switch it to WAL.

        Raises `StoreError` naming the file when it cannot be opened: a
        missing directory, a file that is not SQLite or is corrupt, a schema
        from a newer eventbus-sqlite; with ``create=False``, a missing file or
        one without the store's tables.
        """
        if self._writer is not None:
            raise StoreError(f"SQLite store {self._where} is already open")
        writer, self._first_seq = await to_thread.run_sync(
            partial(Writer.open, self.path, self.options, self._where, create=self.create)
        )
        self._writer = writer
        self._readers = ReaderPool(self.path, self.options, writer.identity, self._where)
        self._projections = ProjectionConnections(
            self.path, self.options, writer.identity, self._where, self._wake_tailers
        )
        self._write_lock = anyio.Lock()
        self._since_step = 0
        self._last_step = -math.inf

    @property
    def first_seq(self) -> int:
        """The first seq the file still holds, as this process last saw it (1 until a compaction)."""
        return self._first_seq

    async def close(self) -> None:
        """Wait for writes in progress, then close every connection. Closing twice does nothing.

        Closing finishes even when the caller is cancelled (the cancellation
        is delivered afterwards), so no connection is left for the garbage
        collector. A read in progress closes its connection when it ends.
        Forgets the `HistoryNeed` registered with `hold_history`.
        """
        self._needed = None
        self._checked = None
        with anyio.CancelScope(shield=True):
            if self._writer is None or self._write_lock is None:
                return
            async with self._write_lock:
                writer, self._writer = self._writer, None
                readers, self._readers = self._readers, None
                projections, self._projections = self._projections, None
                if projections is not None:
                    projections.close()
                await to_thread.run_sync(_close_all, writer, readers)

    async def append(self, records: Sequence[Record]) -> Collection[int]:
        """Commit ``records`` as one batch with consecutive seqs; returns after the
        commit, with the positions of the records whose event id was stored
        already (see `Store.append`).

        Cancellation waits for the batch: once this has begun, the records are
        either committed (and their seqs set) or not stored at all, and a
        cancelled caller gets the cancellation when the commit is over.
        Raises `StoreError` for a record that cannot be encoded or a failed
        commit; nothing of the batch is stored then.
        """
        if not records:
            return ()
        request = AppendRequest(records)
        with anyio.CancelScope(shield=True):
            lock = self._lock()
            self._queued.append(request)
            async with lock:
                if not request.committed and request.error is None:
                    await self._commit_queued()
        if request.error is not None:
            raise request.error
        return request.already

    async def _commit_queued(self) -> None:
        """Commit every queued request in one transaction (the caller holds the write lock)."""
        queued, self._queued = self._queued, []
        writer = self._writer
        if writer is None:
            for request in queued:
                request.error = self._closed_error()
            return
        try:
            await to_thread.run_sync(writer.append, queued)
        except Exception as exc:
            for request in queued:
                if not request.committed and request.error is None:
                    request.error = StoreError(f"SQLite store {self._where}: append failed: {exc}")
                    request.error.__cause__ = exc
        if any(request.committed for request in queued):
            self._wake_tailers()
        self._since_step += sum(len(request.records) for request in queued if request.committed)
        if self._compaction_due():
            await self._step(writer)

    def _wake_tailers(self) -> None:
        """Records were committed: wake this process's `wait_for_append` callers."""
        appended = self._appended
        if appended is not None:
            self._appended = None
            appended.set()

    async def check_connection(self, connection: object) -> None:
        """`TransactionError` unless ``connection`` is a `sqlite3.Connection`, or an
        aiosqlite connection (SQLAlchemy's ``sqlite+aiosqlite`` driver), whose main
        database is this store's file (compared by device and inode, so another
        path to the file is fine). Writes nothing; the connection checked last
        passes at once."""
        identity = self._require_writer().identity
        checked = self._checked
        if checked is not None and checked.connection is connection:
            return
        self._checked = await check_connection(self, connection, identity)

    def _app_connection(self, connection: object) -> AppConnection:
        """``connection`` as an `AppConnection` (`TransactionError` for what is none)."""
        checked = self._checked
        if checked is not None and checked.connection is connection:
            return checked
        return app_connection(self, connection)

    def in_transaction(self, connection: object) -> bool:
        """Whether ``connection`` (a `sqlite3.Connection` or an aiosqlite connection) has a transaction open."""
        try:
            return self._app_connection(connection).in_transaction
        except TransactionError:  # neither
            return False

    async def begin(self, connection: object) -> SqliteTransaction:
        """``BEGIN IMMEDIATE`` on ``connection``: it takes the file's write lock at
        once (waiting up to the connection's own timeout for another writer's
        commit, without blocking the event loop: see `AppConnection.begin`), so
        its first append cannot fail for a lock it cannot upgrade to."""
        checked = self._app_connection(connection)  # checked by check_connection before, as the protocol has it
        with sqlite_errors(self._where):
            await checked.begin()
        return SqliteTransaction(checked, self._wake_tailers, self._where)

    async def append_in(self, connection: object, records: Sequence[Record]) -> Collection[int]:
        """Insert ``records`` inside the write transaction open on ``connection``
        (its event ids looked up first, so a repeated one is left out instead of
        failing the application's transaction); sets their seqs."""
        checked = self._app_connection(connection)
        try:
            rows = [record_values(record, LAYOUT) for record in records]
        except ValueError as exc:
            raise StoreError(f"SQLite store {self._where}: {exc}") from exc
        with sqlite_errors(self._where):
            seqs, repeated = await checked.run(partial(insert_rows, rows=rows, where=self._where, deduplicate=True))
        if self._projections is not None:
            self._projections.appended_through(connection)
        for record, seq in zip(records, seqs, strict=True):
            record.seq = seq
        return sorted(repeated)

    async def execute_in(self, connection: object, sql: str, args: Sequence[object]) -> None:
        """Run one of the application's statements (``?`` placeholders) on
        ``connection``, where its statements run (see `AppConnection`)."""
        checked = self._app_connection(connection)
        with sqlite_errors(self._where):
            await checked.run(lambda connection: connection.execute(sql, tuple(args)))

    async def begin_projection(self) -> SqliteProjection:
        """A write transaction on a connection of this store's own, for one
        delivery of a projection (see `ProjectionConnections`)."""
        projections = self._projections
        if projections is None:
            raise self._closed_error()
        return await projections.begin()

    def _compaction_due(self) -> bool:
        retention = self.options.retention
        if retention is None or not retention.limited:
            return False
        return self._since_step >= STEP_RECORDS or time.monotonic() - self._last_step >= retention.compact_interval

    async def _step(self, writer: Writer) -> None:
        """One background compaction step (the caller holds the write lock); a failure is logged, never raised."""
        retention = self.options.retention
        assert retention is not None
        self._since_step = 0
        self._last_step = time.monotonic()
        plan = CompactionStep(retention, time.time_ns(), needed_hold(self._needed), STEP_ROWS)
        try:
            result, more = await to_thread.run_sync(writer.compact, plan)
            if result.removed:
                await to_thread.run_sync(partial(writer.reclaim, max_pages=STEP_PAGES))
        except StoreError as exc:
            logger.warning("background compaction failed", store=self._where, error=str(exc))
            return
        self._first_seq = max(self._first_seq, result.first_seq)
        if more:
            self._last_step = -math.inf

    async def read(
        self,
        from_seq: int = 1,
        *,
        to_seq: int | None = None,
        types: Collection[str] | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
    ) -> Sequence[Record]:
        """Up to ``limit`` records with ``from_seq <= seq <= to_seq`` (of ``types`` only, if given).

        Events stay undecoded until a record's ``event`` is read.
        """
        check_read_arguments(from_seq, limit)
        records, first = await self._read(
            partial(_reader.read_page, from_seq=from_seq, to_seq=to_seq, types=types, limit=limit)
        )
        if first is not None:
            self._first_seq = max(self._first_seq, first)
            if from_seq < first:
                raise history_truncated(f"SQLite store {self._where}", from_seq, first)
        return records

    async def head(self) -> int:
        """The greatest seq ever assigned (0 for a new file); deleting rows never lowers it."""
        return await self._read(_reader.head)

    async def compact(self, *, keep: int | None = None, keep_age: timedelta | None = None) -> CompactResult:
        """Remove old history now, then give the freed space back to the file system.

        ``keep`` / ``keep_age`` replace the store's ``retention`` for this
        call; with neither, the store's own applies (nothing is removed
        without one). Works through the backlog in transactions of
        `HAND_ROWS` seqs, letting appends in between, then truncates the file
        and its write-ahead log. On a file made by eventbus-sqlite 0.1 this
        runs one full ``VACUUM``, which converts it to incremental
        auto-vacuum. Never removes a record at or above a durable checkpoint,
        one a dead letter refers to, or one the registered `HistoryNeed`
        still needs.
        """
        own = keep is None and keep_age is None
        policy = self.options.retention if own else Retention(keep=keep, keep_age=keep_age)

        async def step(plan: CompactionStep) -> tuple[CompactResult, bool]:
            result, more = await self._write(partial(self._require_writer().compact, plan))
            self._first_seq = max(self._first_seq, result.first_seq)
            return result, more

        result = await compact_by_hand(policy, self._first_seq, self._needed, HAND_ROWS, step)
        if result.removed:
            await self._write(partial(self._require_writer().reclaim, max_pages=None))
        return result

    def hold_history(self, needed: HistoryNeed | None) -> None:
        """Register what the running bus still needs (see `Store.hold_history`); closing forgets it."""
        self._needed = needed

    async def wait_for_append(self, after_seq: int) -> None:
        """Return when a seq above ``after_seq`` may exist.

        This process's appends wake the caller at once; another process's are
        noticed within ``options.poll_interval`` seconds.
        """
        if self._writer is None:
            raise self._closed_error()
        # taken before reading the head: an append committed while it is read sets this event
        appended = self._appended
        if appended is None:
            appended = self._appended = anyio.Event()
        if await self.head() > after_seq:
            return
        with anyio.move_on_after(self.options.poll_interval):
            await appended.wait()

    async def load_checkpoint(self, name: str) -> int | None:
        """The position saved under ``name``, or ``None``."""
        return await self._read(partial(_reader.checkpoint, name=name))

    async def save_checkpoints(self, positions: Mapping[str, int], *, fence: LeaseFence | None = None) -> None:
        """Save several named positions in one transaction; with a ``fence``,
        only while its lease still carries its token (`LeaseLost` otherwise)."""
        if positions:
            await self._write(partial(self._require_writer().save_checkpoints, dict(positions), fence))

    async def checkpoints(self) -> Mapping[str, int]:
        """Every saved position by name."""
        return await self._read(_reader.checkpoints)

    async def acquire_lease(self, name: str, holder: str, ttl: float) -> int | None:
        """Take or renew the lease on ``name`` (see `Store.acquire_lease`); expiry on the machine's clock."""
        check_lease_ttl(ttl)
        return await self._write(partial(self._require_writer().acquire_lease, name, holder, ttl))

    async def release_lease(self, name: str, holder: str) -> None:
        """Give up ``holder``'s lease on ``name``, if it holds it."""
        await self._write(partial(self._require_writer().release_lease, name, holder))

    async def add_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        """Store dead letters in one transaction, each with the whole record it failed on."""
        if letters:
            await self._write(partial(self._require_writer().add_dead_letters, list(letters)))

    async def dead_letters(self, subscription: str | None = None) -> Sequence[DeadLetter]:
        """Stored dead letters, oldest first, optionally of one subscription."""
        return await self._read(partial(_reader.dead_letters, subscription=subscription))

    async def delete_dead_letters(self, ids: Collection[UUID]) -> int:
        """Delete the dead letters with these ids; returns how many existed."""
        wanted = check_letter_ids(ids)
        if not wanted:
            return 0
        return await self._write(partial(self._require_writer().delete_dead_letters, wanted))

    async def _write(self, work: Callable[[], T]) -> T:
        async with self._lock():
            self._require_writer()
            return await to_thread.run_sync(work)

    async def _read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        readers = self._readers
        if readers is None:
            raise self._closed_error()
        # Taken out of the list the thread returns: a worker thread keeps its last
        # result until its next job, which would keep a page of records (and the
        # events the caller decodes from them) alive after the caller dropped it,
        # and the garbage collector walking them: 3 200 instructions per replayed
        # event (benchmarks/sqlite_instructions.py).
        return (await to_thread.run_sync(self._run_reader, readers, work)).pop()

    def _run_reader(self, readers: ReaderPool, work: Callable[[sqlite3.Connection], T]) -> list[T]:
        """In a worker thread: run ``work`` on one of the pool's connections; its result in a list."""
        with sqlite_errors(self._where):
            return [readers.run(work)]

    def _lock(self) -> anyio.Lock:
        if self._write_lock is None:
            raise self._closed_error()
        return self._write_lock

    def _require_writer(self) -> Writer:
        if self._writer is None:
            raise self._closed_error()
        return self._writer

    def _closed_error(self) -> StoreError:
        return StoreError(f"SQLite store {self._where} is not open")


def _close_all(writer: Writer, readers: ReaderPool | None) -> None:
    try:
        if readers is not None:
            readers.close()
    finally:
        writer.close()
