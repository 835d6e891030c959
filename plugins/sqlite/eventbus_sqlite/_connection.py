"""Opening SQLite connections the way the store needs them, and naming failures.

Every connection is in autocommit mode (``isolation_level=None``): the
writer opens its own ``BEGIN IMMEDIATE`` transactions, and each ``SELECT``
of a reader is its own consistent snapshot of the write-ahead log. Connections
are made with ``check_same_thread=False`` because the store hands them to
worker threads; it never lets two threads use one connection at a time.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from types import TracebackType

from eventbus.exceptions import StoreError

from ._options import SqliteOptions

__all__ = ["FileIdentity", "check_file", "connect_reader", "connect_writer", "file_identity", "sqlite_errors"]

FileIdentity = tuple[int, int]
"""A file's ``(st_dev, st_ino)``: which file a path named when the store opened it."""

_STATEMENT_CACHE = 256
_JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024
"""Bytes of write-ahead log kept on disk after a checkpoint resets it."""
_READER_MMAP_BYTES = 256 * 1024 * 1024
"""Readers map up to this much of the file into memory: replay then reads pages
without a system call each (a third faster on large files). It reserves
address space, not memory."""


class sqlite_errors:
    """Turn any `sqlite3.Error` into a `StoreError` naming the store.

    A class rather than ``@contextmanager``: a generator's machinery cost
    each use about 0.8 µs, which a transaction that publishes one event
    pays three times."""

    __slots__ = ("_where",)

    def __init__(self, where: str) -> None:
        self._where = where

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if isinstance(exc, sqlite3.Error):
            raise StoreError(f"SQLite store {self._where}: {exc}") from exc


def file_identity(path: Path, where: str) -> FileIdentity:
    """The identity of the file at ``path``; `StoreError` naming the store when there is none."""
    try:
        stat = os.stat(path)
    except OSError as exc:
        raise StoreError(f"SQLite store {where}: cannot look at the database file: {exc}") from exc
    return stat.st_dev, stat.st_ino


def check_file(path: Path, identity: FileIdentity, where: str) -> None:
    """`StoreError` naming the store unless ``path`` still names the file of ``identity``.

    A SQLite connection keeps writing to the file it opened, even once that
    file is deleted or another one is renamed over its path; what it writes
    then is lost when it closes, or sits in a file nobody opens.
    """
    try:
        stat = os.stat(path)
    except FileNotFoundError as exc:
        raise StoreError(
            f"SQLite store {where}: the database file was deleted while the store was open; nothing more "
            "is written to it (reopen the store to start a new file there)"
        ) from exc
    except OSError as exc:
        raise StoreError(f"SQLite store {where}: cannot look at the database file: {exc}") from exc
    if (stat.st_dev, stat.st_ino) != identity:
        raise StoreError(
            f"SQLite store {where}: the database file was replaced by another file (renamed or copied over "
            "its path) while the store was open; nothing more is written to the file it opened (reopen the "
            "store to use the new file)"
        )


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


def connect_reader(path: Path, options: SqliteOptions, identity: FileIdentity, where: str) -> sqlite3.Connection:
    """A connection for reads only (``query_only``, so a bug cannot write through it) to
    the file of ``identity``: one made after the file was deleted or replaced raises
    `StoreError` (see `check_file`), and a deleted file is not created again."""
    connection = _connect(path, options, create=False)
    try:
        check_file(path, identity, where)
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
