"""`Transaction`: publishing inside a transaction the bus began on the
application's own connection (`EventBus.transaction`).

The transaction itself belongs to the application's connection and to the
store (`eventbus.store.Transactions`); a `Transaction` only carries the
connection and publishes through it, so a handle kept past the block refuses
to publish (no transaction is open on its connection any more).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol
from uuid import UUID

from .event import Event

__all__ = ["Transaction"]


class _Publishes(Protocol):
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
    """A transaction open on the application's connection, as `EventBus.transaction` yields it.

    ```python
    async with bus.transaction(conn) as tx:
        ...                                   # the application's writes through tx.connection
        seq = await tx.publish(OrderPlaced(order_id="A1", amount=5))
    ```

    Attributes:
        connection: the driver's connection the transaction is open on (the
            one given to `EventBus.transaction`), for the application's own
            statements.
    """

    __slots__ = ("_bus", "connection")

    def __init__(self, bus: _Publishes, connection: object) -> None:
        self._bus = bus
        self.connection = connection

    def __repr__(self) -> str:
        return f"<Transaction on {self.connection!r}>"

    async def publish(
        self, event: Event, headers: Mapping[str, str] | None = None, *, event_id: UUID | None = None
    ) -> int:
        """Append ``event`` inside this transaction and return its seq (see
        `EventBus.publish`): stored and delivered only once the transaction commits."""
        return await self._bus.publish(event, headers, event_id=event_id, transaction=self.connection)

    async def publish_many(
        self,
        events: Iterable[Event],
        headers: Mapping[str, str] | None = None,
        *,
        event_ids: Iterable[UUID] | None = None,
    ) -> list[int]:
        """Append a batch inside this transaction and return its seqs in order (see `EventBus.publish_many`)."""
        return await self._bus.publish_many(events, headers, event_ids=event_ids, transaction=self.connection)
