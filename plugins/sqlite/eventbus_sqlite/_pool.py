"""`ReaderPool`: the store's read-only connections, taken and given back inside worker threads.

A connection is only ever held by a worker thread: the thread takes one (or
opens one), runs the query and gives it back before it returns. The async
side never holds a connection, so a caller cancelled before, during or after
its read cannot lose one; and a connection given back after the pool closed
is closed there and then. That is how the store closes every connection it
opens, with no help from the garbage collector.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from ._connection import FileIdentity, connect_reader
from ._options import SqliteOptions

__all__ = ["ReaderPool"]

T = TypeVar("T")


class ReaderPool:
    """Idle reader connections of one open store; its methods block and run in worker threads."""

    def __init__(self, path: Path, options: SqliteOptions, identity: FileIdentity, where: str) -> None:
        self._path = path
        self._options = options
        self._identity = identity
        self._where = where
        self._lock = threading.Lock()
        self._idle: list[sqlite3.Connection] = []
        self._closed = False

    def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` on an idle connection (or a new one), then give that connection back."""
        connection = self._take()
        try:
            result = work(connection)
        except BaseException:
            # a connection whose query failed is not trusted again
            connection.close()
            raise
        self._give_back(connection)
        return result

    def close(self) -> None:
        """Close the idle connections now; those in use are closed when their query ends."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def _take(self) -> sqlite3.Connection:
        with self._lock:
            if self._closed:
                raise sqlite3.ProgrammingError("the store was closed")
            if self._idle:
                return self._idle.pop()
        return connect_reader(self._path, self._options, self._identity, self._where)

    def _give_back(self, connection: sqlite3.Connection) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(connection)
                return
        connection.close()
