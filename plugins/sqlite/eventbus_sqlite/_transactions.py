"""Appending through the application's own connection to the store's file,
inside its transaction (the outbox; see `eventbus.store.Transactions`).

The application's connection is a `sqlite3.Connection` or an
`aiosqlite.Connection` (what SQLAlchemy's ``sqlite+aiosqlite`` driver holds),
and each statement runs where the application's own statements run: a
`sqlite3.Connection` refuses other threads than the one that made it (unless
it was made with ``check_same_thread=False``), so its statements run on the
calling thread and block the event loop as the application's own do; an
aiosqlite connection's `sqlite3.Connection` lives on aiosqlite's own thread,
so they run there, and the caller awaits them. Its write transaction holds
the file's write lock until it ends: the store's own writer, and every other
process appending to the file, waits for it (up to their ``busy_timeout``).

aiosqlite is not a dependency of this plugin: an aiosqlite connection is
recognised through the module the application has imported already.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import anyio

from eventbus.store import Store, wrong_connection

from ._connection import FileIdentity, sqlite_errors

if TYPE_CHECKING:
    import aiosqlite

__all__ = ["AppConnection", "SqliteTransaction", "app_connection", "begin_without_blocking", "check_connection"]

T = TypeVar("T")


class AppConnection:
    """The application's connection, with a way to run work on its `sqlite3.Connection`.

    Attributes:
        connection: a `sqlite3.Connection`, or an aiosqlite connection (whose
            `sqlite3.Connection` is usable on aiosqlite's thread only).
    """

    __slots__ = ("connection",)

    def __init__(self, connection: sqlite3.Connection | aiosqlite.Connection) -> None:
        self.connection = connection

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction is open on it (False once it is closed)."""
        try:
            return self.connection.in_transaction
        except (sqlite3.ProgrammingError, ValueError):  # closed (aiosqlite says so with a ValueError)
            return False

    async def begin(self) -> None:
        """``BEGIN IMMEDIATE``. A `sqlite3.Connection` is used on the event
        loop's thread, where waiting for another writer's lock would stop the
        loop, and with it that writer when it is this process's own (a
        projection's transaction, another `EventBus.transaction`): so it tries
        without waiting and, while the file is busy, waits asynchronously and
        tries again, up to the connection's own busy timeout."""
        connection = self.connection
        if isinstance(connection, sqlite3.Connection):
            await begin_without_blocking(connection)
        else:
            await self.run(_begin_immediate)

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """``work(connection)`` on the thread the connection belongs to, its result or its exception.

        On aiosqlite's thread the work runs to its end even when the caller is
        cancelled meanwhile (the cancellation takes effect after it): a
        statement half-awaited would leave the caller unsure what the
        application's transaction holds.
        """
        connection = self.connection
        if isinstance(connection, sqlite3.Connection):
            return work(connection)
        with anyio.CancelScope(shield=True):
            result = await _on_aiosqlite_thread(connection, work)
        return result


async def _on_aiosqlite_thread(connection: aiosqlite.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``work`` on the `sqlite3.Connection` that ``connection`` wraps, on aiosqlite's thread.

    aiosqlite offers no public way to run a function on its thread, the
    only one its `sqlite3.Connection` accepts, and its public statements
    (``execute``, ``executemany``) would make the append, written once for
    `sqlite3.Connection`, a second time for aiosqlite. ``_execute`` queues a
    function on that thread (SQLAlchemy's aiosqlite driver queues on the same
    private queue) and ``_conn`` is the wrapped connection: the two private
    names this plugin uses, in this one place.
    """
    result: T = await connection._execute(lambda: work(connection._conn))  # type: ignore[no-untyped-call]
    return result


def app_connection(store: Store, connection: object) -> AppConnection:
    """``connection`` as an `AppConnection`; `TransactionError` naming its type
    when it is neither a `sqlite3.Connection` nor an aiosqlite connection."""
    aiosqlite = sys.modules.get("aiosqlite")  # an aiosqlite connection exists only once the module is imported
    if isinstance(connection, sqlite3.Connection) or (
        aiosqlite is not None and isinstance(connection, aiosqlite.Connection)
    ):
        return AppConnection(connection)
    raise wrong_connection(
        store,
        f"a SQLite store takes a sqlite3.Connection or an aiosqlite connection, got {type(connection).__qualname__}",
    )


async def check_connection(store: Store, connection: object, identity: FileIdentity) -> AppConnection:
    """``connection`` as an `AppConnection` whose main database is the file of
    ``identity`` (compared by ``(st_dev, st_ino)``, so another path to the same
    file is accepted); `TransactionError` naming what is wrong otherwise."""
    checked = app_connection(store, connection)
    if not isinstance(connection, sqlite3.Connection):
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            raise wrong_connection(
                store, "an aiosqlite connection works on asyncio only, and this task does not run on asyncio"
            ) from None
    try:
        databases = await checked.run(lambda connection: connection.execute("PRAGMA database_list").fetchall())
    except (sqlite3.Error, ValueError) as exc:  # ValueError: aiosqlite's word for a closed connection
        raise wrong_connection(store, f"the connection cannot be used ({exc})") from exc
    main = next((file for _, name, file in databases if name == "main"), "")
    if not main:
        raise wrong_connection(store, "the connection is to an in-memory or temporary database, not the store's file")
    try:
        stat = os.stat(main)
    except OSError as exc:
        raise wrong_connection(store, f"the connection's file {main} cannot be looked at ({exc})") from exc
    if (stat.st_dev, stat.st_ino) != identity:
        raise wrong_connection(store, f"the connection has {main} open, another file than the store's")
    return checked


class SqliteTransaction:
    """A ``BEGIN IMMEDIATE`` transaction on the application's connection (an `OpenTransaction`).

    Its ``COMMIT`` and ``ROLLBACK`` cannot be cut short by a cancelled
    caller: on a `sqlite3.Connection` they run without an await, and on
    aiosqlite's thread `AppConnection.run` shields them.

    Args:
        connection: the application's connection, its transaction begun.
        committed: called after the commit, to wake this process's tailing subscriptions.
        where: the store, for error messages.
    """

    def __init__(self, connection: AppConnection, committed: Callable[[], None], where: str) -> None:
        self._connection = connection
        self._committed = committed
        self._where = where

    async def commit(self) -> None:
        """``COMMIT``; `StoreError` when it fails (SQLite has rolled back then)."""
        with sqlite_errors(self._where):
            await self._connection.run(_commit)
        self._committed()

    async def rollback(self) -> None:
        """``ROLLBACK``, unless SQLite has ended the transaction already."""
        with sqlite_errors(self._where):
            await self._connection.run(_rollback)


_BEGIN_FIRST_DELAY = 0.001
_BEGIN_MAX_DELAY = 0.05
"""Seconds between tries of a ``BEGIN IMMEDIATE`` that found the file busy."""


async def begin_without_blocking(connection: sqlite3.Connection) -> None:
    """``BEGIN IMMEDIATE`` with the connection's busy timeout at 0, tried
    again after an asynchronous wait while the file is busy, until that
    timeout has passed (then the last busy error is raised). The clock is
    read only once the file is found busy: the usual begin finds it free."""
    (timeout_ms,) = connection.execute("PRAGMA busy_timeout").fetchone()
    connection.execute("PRAGMA busy_timeout = 0")
    try:
        deadline: float | None = None
        delay = _BEGIN_FIRST_DELAY
        while True:
            try:
                _begin_immediate(connection)
                return
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY:
                    raise
                now = anyio.current_time()
                if deadline is None:
                    deadline = now + timeout_ms / 1000
                if now >= deadline:
                    raise
            await anyio.sleep(min(delay, deadline - now))
            delay = min(delay * 2, _BEGIN_MAX_DELAY)
    finally:
        connection.execute(f"PRAGMA busy_timeout = {int(timeout_ms)}")


def _begin_immediate(connection: sqlite3.Connection) -> None:
    """``BEGIN IMMEDIATE``: a write transaction holding the file's write lock from its start."""
    connection.execute("BEGIN IMMEDIATE")


def _commit(connection: sqlite3.Connection) -> None:
    connection.execute("COMMIT")


def _rollback(connection: sqlite3.Connection) -> None:
    if connection.in_transaction:
        connection.execute("ROLLBACK")
