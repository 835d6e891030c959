"""Appending through the application's own `sqlite3.Connection` to the store's
file, inside its transaction (the outbox; see `eventbus.store.Transactions`).

The application's connection is used where the application uses it: on the
calling thread (a `sqlite3.Connection` refuses other threads unless it was
made with ``check_same_thread=False``), so each statement blocks the event
loop as the application's own statements do. Its write transaction holds
the file's write lock until it ends: the store's own writer, and every other
process appending to the file, waits for it (up to their ``busy_timeout``).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable

from eventbus.store import Store, wrong_connection

from ._connection import FileIdentity, sqlite_errors

__all__ = ["SqliteTransaction", "check_connection", "sqlite_connection"]


def sqlite_connection(store: Store, connection: object) -> sqlite3.Connection:
    """``connection`` as a `sqlite3.Connection`; `TransactionError` naming its type when it is not one."""
    if not isinstance(connection, sqlite3.Connection):
        raise wrong_connection(store, f"a SQLite store takes a sqlite3.Connection, got {type(connection).__qualname__}")
    return connection


def check_connection(store: Store, connection: object, identity: FileIdentity) -> sqlite3.Connection:
    """``connection`` as a `sqlite3.Connection` whose main database is the file
    of ``identity`` (compared by ``(st_dev, st_ino)``, so another path to the same
    file is accepted); `TransactionError` naming what is wrong otherwise."""
    connection = sqlite_connection(store, connection)
    try:
        databases = connection.execute("PRAGMA database_list").fetchall()
    except sqlite3.Error as exc:
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
    return connection


class SqliteTransaction:
    """A ``BEGIN IMMEDIATE`` transaction on the application's connection (an `OpenTransaction`).

    Args:
        connection: the application's connection, its transaction begun.
        committed: called after the commit, to wake this process's tailing subscriptions.
        where: the store, for error messages.
    """

    def __init__(self, connection: sqlite3.Connection, committed: Callable[[], None], where: str) -> None:
        self._connection = connection
        self._committed = committed
        self._where = where

    async def commit(self) -> None:
        """``COMMIT``; `StoreError` when it fails (SQLite has rolled back then)."""
        with sqlite_errors(self._where):
            self._connection.execute("COMMIT")
        self._committed()

    async def rollback(self) -> None:
        """``ROLLBACK``, unless SQLite has ended the transaction already."""
        with sqlite_errors(self._where):
            if self._connection.in_transaction:
                self._connection.execute("ROLLBACK")
