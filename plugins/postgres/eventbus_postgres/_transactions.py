"""Appending through the application's own asyncpg connection, inside its
transaction (the outbox; see `eventbus.store.Transactions`).

The append takes the seq counter's row lock in the application's
transaction, as every append does first, and so holds it until that
transaction ends: other appenders to the schema, in this process or any
other, wait for it, which keeps seqs gapless and in commit order. Its NOTIFY
is delivered when the transaction commits, waking every process's tail.

A connection is accepted when it reaches the store's schema in the store's
database on the store's server: the database's name, the ``seq_counter``
table's oid and the server's start time, read on the store's own pool when
it opens, must all match what the connection reads. What a connection reads
is remembered for as long as it lives (`known_identity`): a server session
never changes database or server, so only its first transaction pays the
round trip that reads it.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, cast

import anyio
import asyncpg
import sniffio
from asyncpg.pool import PoolConnectionProxy
from asyncpg.transaction import Transaction

from eventbus.store import Store, wrong_connection

__all__ = [
    "IDENTITY",
    "PostgresTransaction",
    "StoreIdentity",
    "asyncpg_connection",
    "check_identity",
    "check_library",
    "known_identity",
    "remember_identity",
]

IDENTITY = "SELECT current_database(), to_regclass($1)::oid, pg_postmaster_start_time()"
"""$1 the schema's quoted ``seq_counter`` table: what identifies a store (see `StoreIdentity`)."""

StoreIdentity = tuple[str, int | None, object]
"""The database's name, the oid of the store's ``seq_counter`` table (None: none there), the server's start time."""


def asyncpg_connection(store: Store, connection: object) -> Any:
    """``connection`` when it is an asyncpg connection (or a pool's proxy of one);
    `TransactionError` naming its type otherwise."""
    if not isinstance(connection, (asyncpg.Connection, PoolConnectionProxy)):
        raise wrong_connection(
            store, f"a PostgreSQL store takes an asyncpg connection, got {type(connection).__qualname__}"
        )
    return connection


_FOUND: weakref.WeakKeyDictionary[Any, dict[str, tuple[int, StoreIdentity]]] = weakref.WeakKeyDictionary()
"""By asyncpg's own connection, weakly: by store table (``IDENTITY``'s $1), the
server session's pid and the identity it read there, accepted by a store."""


def _session(connection: Any) -> Any:
    """asyncpg's own connection behind ``connection``: a pool lends a new proxy
    of the same connection on each acquire. None once the proxy is released."""
    return cast(Any, connection)._con if isinstance(connection, PoolConnectionProxy) else connection


def known_identity(connection: Any, table: str) -> StoreIdentity | None:
    """What ``connection`` read for ``table`` and a store accepted
    (`remember_identity`), while it is open and the same server session;
    None when it must be read."""
    session = _session(connection)
    if session is None or session.is_closed():
        return None
    pid, identity = _FOUND.get(session, {}).get(table, (None, None))
    return identity if pid == session.get_server_pid() else None


def remember_identity(connection: Any, table: str, identity: StoreIdentity) -> None:
    """Remember that ``connection`` reads ``identity`` for ``table``, for `known_identity`."""
    session = _session(connection)
    if session is not None:
        _FOUND.setdefault(session, {})[table] = (session.get_server_pid(), identity)


def check_library(store: Store) -> None:
    """`TransactionError` unless the caller runs on asyncio, the only loop an asyncpg connection works on."""
    library = sniffio.current_async_library()
    if library != "asyncio":
        raise wrong_connection(store, f"an asyncpg connection works on asyncio only, and this task runs on {library}")


def check_identity(store: Store, schema: str, found: StoreIdentity, expected: StoreIdentity) -> None:
    """`TransactionError` naming the difference unless ``found`` (what the
    application's connection reads) is the store's ``expected`` identity."""
    database, table, started = found
    if database != expected[0]:
        raise wrong_connection(
            store, f"it is connected to database {database!r}, and the store lives in {expected[0]!r}"
        )
    if table is None:
        raise wrong_connection(store, f"database {database!r} it is connected to has no store in schema {schema!r}")
    if (table, started) != expected[1:]:
        raise wrong_connection(
            store, f"it is connected to another server's database {database!r}, not the one the store uses"
        )


class PostgresTransaction:
    """A transaction begun on the application's connection (an `OpenTransaction`).

    Args:
        transaction: asyncpg's, started; nested ``conn.transaction()`` blocks
            inside it become savepoints, as asyncpg makes them.
        errors: turns a driver error into the store's `StoreError`.
    """

    def __init__(self, transaction: Transaction, errors: Callable[[str], AbstractContextManager[None]]) -> None:
        self._transaction = transaction
        self._errors = errors

    async def commit(self) -> None:
        """``COMMIT``: the records appended in it become visible, and their NOTIFY
        goes out. Runs to its end even when the caller is cancelled meanwhile."""
        with anyio.CancelScope(shield=True), self._errors("commit a transaction on"):
            await self._transaction.commit()

    async def rollback(self) -> None:
        """``ROLLBACK``: nothing appended in it is stored. Runs to its end even
        when the caller is cancelled meanwhile."""
        with anyio.CancelScope(shield=True), self._errors("roll back a transaction on"):
            await self._transaction.rollback()
