"""Projections: durable subscriptions whose every delivery is one transaction
on the store's database.

A durable subscription whose handler takes a parameter annotated
`Transaction` is a projection (a read model kept up to date from the events).
Each delivery begins a transaction on a connection of the store's
(`Transactions.begin_projection`), calls the handler with it, saves the
subscription's checkpoint past the event in it, and commits: the handler's
writes, the checkpoint and whatever the handler published through the
transaction are stored together or not at all. The checkpoint is the commit's
own marker, so a process that crashes anywhere resumes after the last event
whose effects committed, and each event's effect is in the read model exactly
once.

A failed attempt rolls back before the retry step (`retry=`) tries again in a
new transaction; a dead letter and the checkpoint past it commit together. The
checkpoint save is fenced by the subscription's lease (every durable
subscription on a SQL store holds one): once another replica has taken the
lease, the save is refused, the transaction rolls back with the handler's
writes, and this replica stands by. A redrive of a projection's dead letter
runs the handler in a transaction too, and leaves the checkpoint where it is.

`rebuild_projection` starts a projection over from seq 1: its checkpoint is
reset in one transaction with the application's own reset of the read model.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial

import anyio

from ._log import logger
from .delivery.lease import new_holder
from .delivery.projection import commit, projection_store, roll_back
from .exceptions import HistoryTruncated, TransactionError
from .store.base import LeaseFence, Store
from .transaction import Transaction

__all__ = ["REBUILD_LEASE_TTL", "rebuild_projection"]

REBUILD_LEASE_TTL = 60.0
"""Seconds a rebuild holds the projection's lease (it releases it when done),
so that no replica starts delivering the projection halfway through."""


async def rebuild_projection(
    store: Store, name: str, reset: Callable[[Transaction], Awaitable[None]] | None = None
) -> None:
    """Start the projection ``name`` over from seq 1: ``reset`` (the
    application's own clearing of the read model, given the `Transaction`)
    and the checkpoint's reset commit together.

    ```python
    async def clear(tx: Transaction) -> None:
        await tx.execute("DELETE FROM orders_view")

    await rebuild_projection(store, "orders-view", clear)   # on an open store, with no bus running it
    ```

    It holds the projection's lease meanwhile, so it refuses to run while
    a process delivers the projection (`TransactionError`: stop it first),
    and no replica starts delivering halfway through. The next start
    delivers every stored event to it again, in order. Raises `HistoryTruncated` when
    compaction has removed records the rebuild would need (the store's
    ``first_seq`` is above 1), `TransactionError` when the store takes part
    in no transactions, and what ``reset`` raises (nothing is changed then).
    """
    store_transactions = projection_store(store, name)
    if store.first_seq > 1:
        raise HistoryTruncated(
            f"cannot rebuild projection {name!r} from seq 1: compaction removed the records before seq "
            f"{store.first_seq}",
            first_seq=store.first_seq,
            requested=1,
        )
    holder = f"rebuild:{new_holder()}"
    token = await store.acquire_lease(name, holder, REBUILD_LEASE_TTL)
    if token is None:
        raise TransactionError(
            f"cannot rebuild projection {name!r}: a process delivers it now (it holds its lease); stop it first"
        )
    try:
        opened = await store_transactions.begin_projection()
        try:
            if reset is not None:
                execute = partial(store_transactions.execute_in, opened.connection)
                await reset(Transaction(None, opened.connection, execute))
            await opened.save_checkpoint(name, 0, LeaseFence(name, token))
        except BaseException:
            await roll_back(opened, name)
            raise
        await commit(opened)
    finally:
        with anyio.CancelScope(shield=True):
            await store.release_lease(name, holder)
    logger.info("projection reset: it starts over from seq 1", subscription=name)
