"""Projections' transactions on the store's database (`Transactions.begin_projection`).

Each delivery of a projection borrows a connection from the store's pool,
begins a transaction on it, and gives it back when the transaction ends.
Every statement runs on the store's runner (the asyncio loop its pool lives
on), so ``tx.execute`` works under trio too; ``tx.connection``, asyncpg's own,
works on asyncio only.

The first statement of each transaction reads the projection's checkpoint
``FOR UPDATE`` (`PostgresProjection.position`): the row lock serializes
every transaction of one projection, and a delivery whose commit was lost
with its connection, or made by another replica, is found applied instead
of being applied again.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import asyncpg

from eventbus.asyncio_runner import Runner
from eventbus.store import LeaseFence, lease_lost
from eventbus.store.codec import letter_values

from ._pool import retried_unsent
from ._statements import LAYOUT, Statements, columns

if TYPE_CHECKING:
    from eventbus.deadletters import DeadLetter

__all__ = ["PostgresProjection", "begin_projection", "lock_checkpoint"]

Errors = Callable[[str], AbstractContextManager[None]]
"""Turns a driver error into the store's `StoreError`, naming what it was doing."""


def lock_checkpoint(schema: str) -> str:
    """$1 a checkpoint's name: its position, the row locked until the transaction ends."""
    return f"SELECT position FROM {schema}.checkpoints WHERE name = $1 FOR UPDATE"


async def begin_projection(
    pool: asyncpg.Pool[Any], give_back: Callable[[Any], Coroutine[Any, Any, None]]
) -> tuple[Any, Any]:
    """On the runner's loop: a connection of ``pool`` with a transaction begun on it
    (on another connection when asyncpg refuses the first, see `retried_unsent`)."""

    async def attempt() -> tuple[Any, Any]:
        conn = await pool.acquire()
        try:
            transaction = conn.transaction()
            await transaction.start()
        except BaseException:
            await give_back(conn)
            raise
        return conn, transaction

    return await retried_unsent(pool, attempt)


class PostgresProjection:
    """One projection's transaction (a `ProjectionTransaction`).

    Args:
        conn: the pooled connection, its transaction begun.
        transaction: asyncpg's transaction on it.
        release: gives ``conn`` back to the pool (on the runner's loop).
        runner: the store's runner.
        sql: the schema's statements.
        lock_sql: `lock_checkpoint` for the schema.
        errors: the store's driver-error context.
        where: the store, for `LeaseLost`.
    """

    def __init__(
        self,
        conn: Any,
        transaction: Any,
        release: Callable[[Any], Coroutine[Any, Any, None]],
        runner: Runner,
        sql: Statements,
        lock_sql: str,
        errors: Errors,
        where: str,
    ) -> None:
        self._conn = conn
        self._transaction = transaction
        self._release = release
        self._runner = runner
        self._sql = sql
        self._lock_sql = lock_sql
        self._errors = errors
        self._where = where

    @property
    def connection(self) -> Any:
        """asyncpg's connection (a pool's proxy) the transaction is open on; usable on asyncio only."""
        return self._conn

    async def position(self, name: str) -> int | None:
        """``name``'s saved position, its row locked until this transaction ends."""
        with self._errors("read a projection's checkpoint in"):
            position: int | None = await self._runner.call(self._conn.fetchval, self._lock_sql, name)
        return position

    async def save_checkpoint(self, name: str, position: int, fence: LeaseFence | None) -> None:
        """Save ``name``'s position in this transaction, fenced (`LeaseLost` when refused)."""
        sql, call = self._sql, self._runner.call
        with self._errors("save a projection's checkpoint in"):
            if fence is None:
                await call(self._conn.execute, sql.save_checkpoints, [name], [position])
                return
            saved = await call(
                self._conn.fetchval, sql.save_fenced_checkpoints, [name], [position], fence.name, fence.token
            )
        if saved is not True:
            raise lease_lost(fence, self._where)

    async def add_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        """Store ``letters`` in this transaction."""
        values = columns(letter_values(letter, LAYOUT) for letter in letters)
        with self._errors("add dead letters to"):
            await self._runner.call(self._conn.execute, self._sql.add_dead_letters, *values)

    async def commit(self) -> None:
        """``COMMIT``, and give the connection back."""
        try:
            with self._errors("commit a projection's transaction on"):
                await self._runner.call(self._transaction.commit)
        finally:
            await self._runner.call(self._release, self._conn)

    async def rollback(self) -> None:
        """``ROLLBACK``, and give the connection back."""
        try:
            with self._errors("roll back a projection's transaction on"):
                await self._runner.call(self._transaction.rollback)
        finally:
            await self._runner.call(self._release, self._conn)
