"""Publishing in the transaction of a SQLAlchemy `AsyncSession` or `AsyncConnection`.

SQLAlchemy owns the transaction: `begin_transaction` begins it the way the
application would (``session.begin()``, ``connection.begin()``) and hands
back SQLAlchemy's own transaction object to commit or roll back, so
SQLAlchemy's state (the session's, the pool's) stays right. The events are appended
through the *driver's* connection underneath (asyncpg's, aiosqlite's), inside
that same database transaction: `driver_connection` finds it, has the store
check it, and makes sure the driver has really begun the transaction
SQLAlchemy says is open (both drivers begin lazily: SQLAlchemy's asyncpg
driver on its first statement, the sqlite3 module before its first write).

This module is imported only when the connection given to the bus is a
SQLAlchemy object (`eventbus.publishing` tells by its class's module,
without importing SQLAlchemy): SQLAlchemy is an optional extra (``pip install
'eventbus[sqlalchemy]'``), and ``import eventbus`` never imports it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import anyio
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, AsyncSessionTransaction, AsyncTransaction

from .exceptions import TransactionError
from .store import OpenTransaction, Transactions

__all__ = ["begin_transaction", "driver_connection", "execute_in"]

_START = {"sqlite": "BEGIN IMMEDIATE", "postgresql": "SELECT 1"}
"""By dialect, the statement run through SQLAlchemy that makes its driver begin
the database transaction SQLAlchemy has open: SQLite's write transaction
holding the file's write lock (the sqlite3 module would begin one only before
the first write, and as ``BEGIN DEFERRED``); for PostgreSQL any statement
(SQLAlchemy's asyncpg driver sends its ``BEGIN`` before the first one)."""


async def driver_connection(store: Transactions, connection: object, checked: object = None) -> object:
    """The driver's connection under ``connection``, a SQLAlchemy `AsyncSession`
    or `AsyncConnection` with a transaction open, checked by ``store`` (unless
    it is ``checked``, a driver's connection the store accepted before), its
    database transaction begun.

    Raises `TransactionError` when the caller does not run on asyncio (the
    only loop SQLAlchemy's asyncio extension works on), ``connection`` is
    another SQLAlchemy object, has no transaction open, or its database is not
    the store's (see `Transactions.check_connection`); nothing is written then.
    """
    connection = _session_or_connection(connection)
    if not connection.in_transaction():
        raise TransactionError(
            f"no transaction is open on {connection!r}: publish(..., transaction=) appends inside the transaction "
            "the application has open on it; begin one first (async with session.begin(): ...), "
            "or use bus.transaction(session)"
        )
    sa_connection = await connection.connection() if isinstance(connection, AsyncSession) else connection
    driver = await _driver(store, sa_connection, checked)
    if not store.in_transaction(driver):
        start = _START.get(sa_connection.dialect.name)
        if start is None:  # a store that takes another database's driver: never begin blind
            raise TransactionError(
                f"publishing in a SQLAlchemy {sa_connection.dialect.name} transaction is not supported"
            )
        await sa_connection.exec_driver_sql(start)
    return driver


class _Begun:
    """SQLAlchemy's transaction, to commit or roll back (an `OpenTransaction`).

    A commit that fails (a flush the database refuses, say) is rolled back
    as ``async with session.begin():`` does, so the session or connection
    comes out with no transaction open, ready for the next.
    """

    __slots__ = ("_transaction",)

    def __init__(self, transaction: AsyncSessionTransaction | AsyncTransaction) -> None:
        self._transaction = transaction

    async def commit(self) -> None:
        with anyio.CancelScope(shield=True):
            try:
                await self._transaction.commit()
            except BaseException:
                await self._transaction.rollback()
                raise

    async def rollback(self) -> None:
        with anyio.CancelScope(shield=True):
            await self._transaction.rollback()


async def begin_transaction(store: Transactions, connection: object) -> tuple[object, OpenTransaction]:
    """Begin a transaction on ``connection`` (an `AsyncSession` or `AsyncConnection`
    with none open) through SQLAlchemy; the driver's connection, checked by
    ``store``, and SQLAlchemy's transaction, to commit or roll back.

    The driver begins the database transaction with the first statement, as
    SQLAlchemy has it do (or a publish that comes first, see
    `driver_connection`): a SQLite one holds the file's write lock from the
    first write, which saves the hops to aiosqlite's thread of an early
    ``BEGIN IMMEDIATE``; a PostgreSQL one takes the store's lock with the
    first publish anyway. Raises `TransactionError` for what
    `driver_connection` refuses, or when a transaction is open on
    ``connection`` already; what was begun is rolled back then.
    """
    connection = _session_or_connection(connection)
    if connection.in_transaction():
        raise TransactionError(
            f"a transaction is already open on {connection!r}; publish in it with "
            "bus.publish(..., transaction=session), or commit it before bus.transaction(session)"
        )
    transaction = connection.begin()
    await transaction.start()
    try:
        sa_connection = await connection.connection() if isinstance(connection, AsyncSession) else connection
        driver = await _driver(store, sa_connection, None)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await transaction.rollback()
        raise
    return driver, _Begun(transaction)


async def execute_in(store: Transactions, connection: object, driver: object, sql: str, args: Sequence[object]) -> None:
    """`Transactions.execute_in` on ``driver``, the driver's connection under
    ``connection`` (a `begin_transaction` one's), once the driver has begun the
    database transaction: a statement it ran before would not be in it
    (SQLAlchemy's asyncpg driver, for one, sends ``BEGIN`` lazily)."""
    await store.execute_in(await driver_connection(store, connection, driver), sql, args)


async def _driver(store: Transactions, connection: AsyncConnection, checked: object) -> object:
    """The driver's connection under ``connection``, once ``store`` has checked it (unless it is ``checked``)."""
    raw = await connection.get_raw_connection()
    driver = raw.driver_connection
    if driver is not checked:
        await store.check_connection(driver)
    return driver


def _session_or_connection(connection: object) -> AsyncSession | AsyncConnection:
    """``connection`` when it is an `AsyncSession` or an `AsyncConnection` and the
    caller runs on asyncio; `TransactionError` naming what is wrong otherwise."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise TransactionError(
            f"cannot publish in the transaction of {type(connection).__qualname__}: SQLAlchemy's asyncio "
            "extension works on asyncio only, and this task does not run on asyncio"
        ) from None
    if not isinstance(connection, (AsyncSession, AsyncConnection)):
        raise TransactionError(
            "publishing in a SQLAlchemy transaction takes an AsyncSession or an AsyncConnection "
            f"(sqlalchemy.ext.asyncio), got {type(connection).__qualname__}"
        )
    return connection
