"""Projections' transactions on the store's file (`Transactions.begin_projection`).

A projection's delivery needs a write transaction of its own, on a
connection of the store's (not the writer's, which group-commits appends):
`ProjectionConnections` keeps a few, opened as needed and closed with the
store. ``BEGIN IMMEDIATE`` is tried on the event loop without waiting, and
again after an asynchronous pause while another writer holds the lock
(`begin_without_blocking`); ``COMMIT`` runs in a worker thread (it fsyncs);
the statements in between run on the loop, where the handler uses
``tx.connection``: they are quick, the transaction holding the lock
already. Only a transaction that published wakes the process's tailing
subscriptions when it commits: a projection's own writes are nothing they
read.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING

from anyio import to_thread

from eventbus.exceptions import StoreError
from eventbus.store import LeaseFence

from ._connection import FileIdentity, check_file, connect_writer, sqlite_errors
from ._options import SqliteOptions
from ._statements import INSERT_LETTER
from ._transactions import begin_without_blocking
from ._writer import letter_rows, save_checkpoints

if TYPE_CHECKING:
    from eventbus.deadletters import DeadLetter

__all__ = ["ProjectionConnections", "SqliteProjection"]


class ProjectionConnections:
    """The store's connections for projections' transactions, one per transaction at a time.

    Args:
        path: the store's file.
        options: the store's options (``busy_timeout``, ``synchronous``).
        identity: the file's identity, checked when connecting and around each commit.
        where: the store, for error messages.
        committed: called after a commit, to wake this process's tailing subscriptions.
    """

    def __init__(
        self,
        path: Path,
        options: SqliteOptions,
        identity: FileIdentity,
        where: str,
        committed: Callable[[], None],
    ) -> None:
        self._path = path
        self._options = options
        self._identity = identity
        self._where = where
        self._committed = committed
        self._idle: list[sqlite3.Connection] = []
        self._in_transaction: set[int] = set()
        """The ids of the connections lent to a projection's transaction."""
        self._published: set[int] = set()
        """Those of them whose transaction appended records."""
        self._closed = False

    async def begin(self) -> SqliteProjection:
        """``BEGIN IMMEDIATE`` on an idle connection (a new one when none is):
        the transaction holds the file's write lock from the start, waiting up
        to ``busy_timeout`` for another writer's."""
        if self._closed:
            raise StoreError(f"SQLite store {self._where} is not open")
        connection = self._idle.pop() if self._idle else await to_thread.run_sync(self._connect)
        try:
            with sqlite_errors(self._where):
                await begin_without_blocking(connection)
        except BaseException:
            self.give_back(connection)
            raise
        self._in_transaction.add(id(connection))
        return SqliteProjection(connection, self, self._where)

    def appended_through(self, connection: object) -> None:
        """Records were appended through ``connection``: if it is one of these,
        in a projection's transaction, its commit wakes the tailing subscriptions."""
        if id(connection) in self._in_transaction:
            self._published.add(id(connection))

    def _connect(self) -> sqlite3.Connection:
        with sqlite_errors(self._where):
            connection = connect_writer(self._path, self._options, create=False)
        try:
            check_file(self._path, self._identity, self._where)
        except BaseException:
            connection.close()
            raise
        return connection

    async def commit(self, connection: sqlite3.Connection) -> None:
        """``COMMIT`` in a worker thread, the file's identity checked before
        (gone: rolled back) and after; `StoreError` when it fails."""
        try:
            check_file(self._path, self._identity, self._where)
            with sqlite_errors(self._where):
                await to_thread.run_sync(connection.execute, "COMMIT")
        except BaseException:
            if connection.in_transaction:
                with suppress(sqlite3.Error):
                    connection.execute("ROLLBACK")
            self.give_back(connection)
            raise
        published = id(connection) in self._published
        self.give_back(connection)
        if published:
            self._committed()
        check_file(self._path, self._identity, self._where)

    def give_back(self, connection: sqlite3.Connection) -> None:
        """A transaction on ``connection`` ended: keep it for the next one (close it once the store is closed)."""
        self._in_transaction.discard(id(connection))
        self._published.discard(id(connection))
        if self._closed or connection.in_transaction:
            connection.close()
        else:
            self._idle.append(connection)

    def close(self) -> None:
        """Close the idle connections; one in a transaction is closed when that ends."""
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()


class SqliteProjection:
    """One projection's transaction (a `ProjectionTransaction`).

    Args:
        connection: the store's connection, its ``BEGIN IMMEDIATE`` done.
        connections: where it goes back when the transaction ends.
        where: the store, for error messages.
    """

    def __init__(self, connection: sqlite3.Connection, connections: ProjectionConnections, where: str) -> None:
        self._connection = connection
        self._connections = connections
        self._where = where

    @property
    def connection(self) -> sqlite3.Connection:
        """The `sqlite3.Connection` the transaction is open on."""
        return self._connection

    async def position(self, name: str) -> int | None:
        """``name``'s saved position (the transaction holds the file's write lock already)."""
        with sqlite_errors(self._where):
            row = self._connection.execute(
                "SELECT position FROM eventbus_checkpoints WHERE name = ?", (name,)
            ).fetchone()
        return None if row is None else int(row[0])

    async def save_checkpoint(self, name: str, position: int, fence: LeaseFence | None) -> None:
        """Save ``name``'s position in this transaction, fenced (`LeaseLost` when refused)."""
        positions: Mapping[str, int] = {name: position}
        with sqlite_errors(self._where):
            save_checkpoints(self._connection, positions, fence, self._where)

    async def add_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        """Store ``letters`` in this transaction."""
        rows = letter_rows(letters, self._where)
        with sqlite_errors(self._where):
            self._connection.executemany(INSERT_LETTER, rows)

    async def commit(self) -> None:
        """Commit (in a worker thread: it fsyncs) and give the connection back."""
        await self._connections.commit(self._connection)

    async def rollback(self) -> None:
        """Roll back and give the connection back."""
        try:
            with sqlite_errors(self._where):
                if self._connection.in_transaction:
                    self._connection.execute("ROLLBACK")
        finally:
            self._connections.give_back(self._connection)
