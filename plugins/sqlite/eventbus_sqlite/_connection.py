"""Opening SQLite connections the way the store needs them, and naming failures.

Every connection is in autocommit mode (``isolation_level=None``): the
writer opens its own ``BEGIN IMMEDIATE`` transactions, and each ``SELECT``
of a reader is its own consistent snapshot of the write-ahead log. Connections
are made with ``check_same_thread=False`` because the store hands them to
worker threads; it never lets two threads use one connection at a time.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from eventbus.exceptions import StoreError

from ._options import SqliteOptions

__all__ = ["connect_reader", "connect_writer", "sqlite_errors"]

_STATEMENT_CACHE = 256
_JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024
"""Bytes of write-ahead log kept on disk after a checkpoint resets it."""
_READER_MMAP_BYTES = 256 * 1024 * 1024
"""Readers map up to this much of the file into memory: replay then reads pages
without a system call each (a third faster on large files). It reserves
address space, not memory."""


@contextmanager
def sqlite_errors(where: str) -> Iterator[None]:
    """Turn any `sqlite3.Error` into a `StoreError` naming the store."""
    try:
        yield
    except sqlite3.Error as exc:
        raise StoreError(f"SQLite store {where}: {exc}") from exc


def connect_writer(path: Path, options: SqliteOptions, *, create: bool = True) -> sqlite3.Connection:
    """The connection every write goes through: WAL, ``synchronous`` as configured.

    With ``create=False`` a missing file is an error instead of a new database.
    A new, empty file gets ``auto_vacuum = INCREMENTAL`` (it must be set
    before the first table), which lets compaction hand freed pages back to
    the file system (see `Writer.reclaim`); an existing file is not touched
    here.
    ``journal_size_limit`` truncates the write-ahead log after a checkpoint,
    so one large transaction does not leave a large ``-wal`` file behind.
    """
    connection = _connect(path, options, create=create)
    try:
        if connection.execute("PRAGMA page_count").fetchone()[0] == 0:
            connection.execute("PRAGMA auto_vacuum = INCREMENTAL")
        connection.execute(f"PRAGMA journal_size_limit = {_JOURNAL_SIZE_LIMIT}")
        mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise sqlite3.OperationalError(f"cannot switch the file to WAL mode (it stays in {mode!r} mode)")
        connection.execute(f"PRAGMA synchronous = {options.synchronous.upper()}")
    except BaseException:
        connection.close()
        raise
    return connection


def connect_reader(path: Path, options: SqliteOptions) -> sqlite3.Connection:
    """A connection for reads only (``query_only``, so a bug cannot write through it)."""
    connection = _connect(path, options)
    try:
        connection.execute("PRAGMA query_only = ON")
        connection.execute(f"PRAGMA mmap_size = {_READER_MMAP_BYTES}")
    except BaseException:
        connection.close()
        raise
    return connection


def _connect(path: Path, options: SqliteOptions, *, create: bool = True) -> sqlite3.Connection:
    # mode=rw opens an existing file only: SQLite itself refuses to create it, so no race with a check
    return sqlite3.connect(
        path if create else f"{path.absolute().as_uri()}?mode=rw",
        uri=not create,
        timeout=options.busy_timeout,
        isolation_level=None,
        check_same_thread=False,
        cached_statements=_STATEMENT_CACHE,
    )
