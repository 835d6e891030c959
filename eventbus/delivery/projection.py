"""`Projection`: a projection's deliveries, each one transaction on the store's
database (see `eventbus.projection` for what a projection is and promises).

Each delivery begins a transaction on a connection of the store's
(`Transactions.begin_projection`), calls the handler with it, saves the
subscription's checkpoint past the event in it, and commits. A failure rolls
back before the retry step tries again in a new transaction; the dead-letter
step stores its letter through `Projection.add_dead_letters`, with the
checkpoint past it, in one transaction. The save carries the lease's fence; a
refused one loses the lease and cancels the deliveries.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel

from .._log import logger
from ..exceptions import LeaseLost, TransactionError
from ..handler import ProjectionCall
from ..record import Record
from ..store.base import ProjectionTransaction, Store, Transactions, transactions
from ..transaction import HeldTransaction, Publishes, Transaction, open_transaction

if TYPE_CHECKING:
    from ..deadletters.letter import DeadLetter
    from .checkpoints import Checkpoints, Fencing

__all__ = ["Projection", "commit", "projection_store", "roll_back"]


def projection_store(store: Store, name: str) -> Transactions:
    """``store``'s `Transactions`, which a projection named ``name`` runs its
    deliveries through; `TransactionError` when the store offers none."""
    found = transactions(store)
    if found is None:
        raise TransactionError(
            f"subscription {name!r} is a projection (its handler takes a Transaction), which runs each delivery in "
            f"a transaction on the store's database, and {store!r} takes part in no transactions: use a store in a "
            "SQL database (eventbus-sqlite's SqliteStore, eventbus-postgres' PostgresStore). A TestBus takes part "
            "in none either: test a projection on the bus itself, with a SqliteStore in a temporary directory"
        )
    return found


class Projection:
    """A projection's deliveries during one run of the bus.

    Args:
        call: calls the handler.
        name: the subscription's name (its checkpoint's).
        store: the store's transactions.
        publisher: the bus, for what the handler publishes through its `Transaction`.
        checkpoints: the subscription's checkpoints, told of each save made in a transaction.
        lease: the subscription's lease, whose fence each save carries.
    """

    def __init__(
        self,
        call: ProjectionCall,
        name: str,
        store: Transactions,
        publisher: Publishes,
        checkpoints: Checkpoints,
        lease: Fencing | None,
    ) -> None:
        self._call = call
        self._name = name
        self._store = store
        self._publisher = publisher
        self._checkpoints = checkpoints
        self._lease = lease

    async def deliver(self, record: Record) -> None:
        """The innermost delivery step: the handler and the checkpoint past
        ``record``, in one transaction committed before this returns; rolled
        back when anything raises (the exception propagates).

        A record at or below the saved position is a redrive of a dead
        letter: its handler runs in a transaction too, and the checkpoint
        stays. A record the checkpoint read in the transaction is past
        already was applied (a commit in doubt that went through, another
        replica): its handler is not called again.
        """
        seq = record.seq
        redrive = seq <= self._checkpoints.saved
        opened = await self._store.begin_projection()
        connection = opened.connection
        # a plain publish from the handler would wait for this transaction's
        # lock (SQLite holds it from the start): it raises TransactionError
        held = open_transaction.set(HeldTransaction(self._store, connection))
        try:
            if not redrive and await self._applied(opened, seq):
                await roll_back(opened, self._name)
                return
            await self._call(
                record, Transaction(self._publisher, connection, partial(self._store.execute_in, connection))
            )
            if not redrive:
                await self._save(opened, seq)
        except BaseException:
            await roll_back(opened, self._name)
            raise
        finally:
            open_transaction.reset(held)
        await commit(opened)
        if not redrive:
            self._checkpoints.saved_in_transaction(seq)

    async def add_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        """Store ``letters`` (what the dead-letter step buries) with the
        checkpoint past their records, in one transaction; none when the
        checkpoint is past them already (the failure was a commit in doubt
        that went through: the event was applied)."""
        position = max(letter.record.seq for letter in letters)
        saving = position > self._checkpoints.saved
        opened = await self._store.begin_projection()
        try:
            if saving and await self._applied(opened, position):
                await roll_back(opened, self._name)  # it failed only to learn its commit had gone through
                return
            await opened.add_dead_letters(letters)
            if saving:
                await self._save(opened, position)
        except BaseException:
            await roll_back(opened, self._name)
            raise
        await commit(opened)
        if saving:
            self._checkpoints.saved_in_transaction(position)

    async def _applied(self, opened: ProjectionTransaction, seq: int) -> bool:
        """Whether the checkpoint, read (and locked) in ``opened``, is at ``seq`` or past it already."""
        stored = await opened.position(self._name)
        if stored is None or stored < seq:
            return False
        logger.warning(
            "a projection's event was applied already (a commit in doubt went through, or another replica "
            "applied it); not applying it again",
            subscription=self._name,
            seq=seq,
            checkpoint=stored,
        )
        self._checkpoints.saved_in_transaction(seq)  # not past seq: what lies between is for _applied to find
        return True

    async def _save(self, opened: ProjectionTransaction, position: int) -> None:
        """Save the checkpoint at ``position`` in ``opened``, fenced by the
        lease. A refused save loses the lease and raises the cancellation of
        the deliveries."""
        lease = self._lease
        try:
            await opened.save_checkpoint(self._name, position, None if lease is None else lease.fence)
        except LeaseLost:
            if lease is None:
                raise
            lease.lose("checkpoint save refused: another process has taken the lease")
            await anyio.lowlevel.checkpoint_if_cancelled()
            raise


async def commit(opened: ProjectionTransaction) -> None:
    """Commit ``opened``, shielded: once begun, a commit is not torn by a cancellation."""
    with anyio.CancelScope(shield=True):
        await opened.commit()


async def roll_back(opened: ProjectionTransaction, name: str) -> None:
    """Roll ``opened`` back, shielded; a failure to is logged (the server rolls
    back a transaction whose connection is gone), the original error goes on."""
    with anyio.CancelScope(shield=True):
        try:
            await opened.rollback()
        except Exception as exc:
            logger.warning("could not roll back a projection's transaction", subscription=name, error=repr(exc))
