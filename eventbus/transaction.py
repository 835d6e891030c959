"""`Transaction`: a transaction open on a connection to the store's database,
as `EventBus.transaction` yields it and as a projection's handler receives it
(`eventbus.projection`).

The transaction itself belongs to the connection and to the store
(`eventbus.store.Transactions`); a `Transaction` only carries the connection,
runs statements and publishes through it, so a handle kept past the block
refuses to publish (no transaction is open on its connection any more).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from typing import Protocol
from uuid import UUID

from .event import Event
from .exceptions import TransactionError


class _InTransaction(Protocol):
    """What a `HeldTransaction` asks of its store (`eventbus.store.Transactions` has it)."""

    def in_transaction(self, connection: object) -> bool: ...


__all__ = ["Execute", "HeldTransaction", "Publishes", "Transaction", "open_transaction"]

Execute = Callable[[str, Sequence[object]], Awaitable[None]]
"""Runs one statement, with its arguments, on a transaction's connection (`Transactions.execute_in`)."""


class HeldTransaction:
    """A connection the current task published through in a transaction, or
    a projection's delivery runs in: while its transaction is open, it holds
    (or may take) the store's append lock, and a plain publish from the task
    would wait for it forever.

    Attributes:
        store: the store's `Transactions` (what tells whether the transaction is still open).
        connection: the application's connection.
        last_seq: the greatest seq appended through it (0: none yet).
    """

    __slots__ = ("connection", "last_seq", "store")

    def __init__(self, store: _InTransaction, connection: object) -> None:
        self.store = store
        self.connection = connection
        self.last_seq = 0

    def appended(self, seq: int) -> None:
        """Records up to ``seq`` were appended through the connection."""
        self.last_seq = max(self.last_seq, seq)


open_transaction: ContextVar[HeldTransaction | None] = ContextVar("eventbus_open_transaction", default=None)
"""The connection through which the current task last published in a
transaction (``transaction=conn``, `EventBus.transaction`), or whose
transaction the projection it delivers for runs in."""


class Publishes(Protocol):
    """What a `Transaction` needs of the bus: its two ways to publish."""

    async def publish(
        self,
        event: Event,
        headers: Mapping[str, str] | None = None,
        *,
        event_id: UUID | None = None,
        transaction: object = None,
    ) -> int: ...

    async def publish_many(
        self,
        events: Iterable[Event],
        headers: Mapping[str, str] | None = None,
        *,
        event_ids: Iterable[UUID] | None = None,
        transaction: object = None,
    ) -> list[int]: ...


class Transaction:
    """A transaction open on a connection to the store's database.

    ```python
    async with bus.transaction(conn) as tx:
        await tx.execute("INSERT INTO orders (id, amount) VALUES ($1, $2)", "A1", 5)
        seq = await tx.publish(OrderPlaced(order_id="A1", amount=5))
    ```

    A projection's handler takes one as a parameter annotated `Transaction`
    (see `EventBus.subscribe`): its writes, the subscription's checkpoint and
    what it publishes commit together.

    Attributes:
        connection: the driver's connection the transaction is open on (the
            one given to `EventBus.transaction`; the store's own in a
            projection), for the application's own statements.
    """

    __slots__ = ("_bus", "_execute", "connection")

    def __init__(self, bus: Publishes | None, connection: object, execute: Execute) -> None:
        self._bus = bus
        self._execute = execute
        self.connection = connection

    def __repr__(self) -> str:
        return f"<Transaction on {self.connection!r}>"

    async def execute(self, sql: str, *args: object) -> None:
        """Run one statement in this transaction, with the driver's own
        placeholders: ``$1`` for asyncpg (PostgreSQL), ``?`` for sqlite3.

        A convenience that works on asyncio and trio alike; the driver's own
        `connection` is there for anything else (an asyncpg connection works
        on asyncio only)."""
        await self._execute(sql, args)

    async def publish(
        self, event: Event, headers: Mapping[str, str] | None = None, *, event_id: UUID | None = None
    ) -> int:
        """Append ``event`` inside this transaction and return its seq (see
        `EventBus.publish`): stored and delivered only once the transaction commits."""
        return await self._publisher().publish(event, headers, event_id=event_id, transaction=self.connection)

    async def publish_many(
        self,
        events: Iterable[Event],
        headers: Mapping[str, str] | None = None,
        *,
        event_ids: Iterable[UUID] | None = None,
    ) -> list[int]:
        """Append a batch inside this transaction and return its seqs in order (see `EventBus.publish_many`)."""
        return await self._publisher().publish_many(events, headers, event_ids=event_ids, transaction=self.connection)

    def _publisher(self) -> Publishes:
        """The bus to publish through; `TransactionError` for a transaction no bus
        runs (a projection's reset, in `eventbus.projection.rebuild_projection`)."""
        if self._bus is None:
            raise TransactionError("this transaction cannot publish: no bus runs it (a projection's reset)")
        return self._bus
