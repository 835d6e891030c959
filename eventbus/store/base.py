"""The `Store` contract: everything the bus needs from a storage backend.

A store is small on purpose, the way Watermill keeps its whole pub/sub
contract in one interface. It appends batches atomically and numbers them,
reads ranges back in order, keeps named checkpoints and dead letters. The bus
builds catch-up, replay, durable subscriptions and dead-letter handling on
these few calls, so every store gets them for free. `eventbus.testing.conformance`
holds the conformance suite that every implementation runs in its own tests.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Protocol, TypeVar, cast, runtime_checkable
from uuid import UUID

from ..exceptions import LeaseLost, TransactionError

if TYPE_CHECKING:
    from .._entry import Entry
    from ..deadletters.letter import DeadLetter
    from ..event import Event
    from ..record import Record
    from .retention import CompactResult, HistoryNeed

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "ImmediateAppend",
    "LeaseFence",
    "OpenTransaction",
    "ProjectionTransaction",
    "Store",
    "StoreFeatures",
    "Transactions",
    "already_stored",
    "append_seqs",
    "check_lease_ttl",
    "check_letter_ids",
    "check_read_arguments",
    "immediate_append",
    "lease_lost",
    "transactions",
    "wrong_connection",
]

DEFAULT_PAGE_SIZE = 1_000
"""How many records a catch-up or replay asks a store for at a time."""


@dataclass(frozen=True)
class StoreFeatures:
    """What a store guarantees beyond the contract; the conformance suite
    switches its tests on these.

    Attributes:
        persistent: records survive closing the store and opening it again.
        shared_between_processes: other processes may append to the same
            store; the store then implements `Store.wait_for_append` and
            `from_seq` subscriptions tail it.
        gapless: seqs have no gaps (every integer from 1 to the head names a
            record that was committed, unless it was deleted afterwards).
        bounded: the store holds at most a fixed number of records and drops
            its oldest past that bound, whatever still needs them (the
            `MemoryStore`'s ``max_records``).
        retention: the store takes a `Retention` policy and compacts in the
            background while it is open, never removing a record that a
            checkpoint, a dead letter or a running subscription holds.
        immediate_append: the store's append never waits (it keeps its
            records in this process's memory), and the store implements
            `ImmediateAppend`; the bus checks that once when it starts (see
            `immediate_append`) and then appends without a coroutine.
        transactions: the store appends inside a transaction the application
            has open on its own connection to the store's database (the
            outbox), runs projections' deliveries in transactions of its own
            (`Transactions.begin_projection`), and implements `Transactions`;
            the bus checks that once when it starts (see `transactions`).
    """

    persistent: bool = False
    shared_between_processes: bool = False
    gapless: bool = True
    bounded: bool = False
    retention: bool = False
    immediate_append: bool = False
    transactions: bool = False


@dataclass(frozen=True)
class LeaseFence:
    """What a checkpoint save carries so that the store refuses it once the
    lease on ``name`` has changed hands (see `Store.save_checkpoints`).

    Attributes:
        name: the lease's name (a durable subscription's, as its checkpoint's).
        token: the fencing token `Store.acquire_lease` returned to the saving
            holder when it took the lease.
    """

    name: str
    token: int


@runtime_checkable
class Store(Protocol):
    """The storage contract. Every method may raise `StoreError`.

    Records passed to `append` come with ``seq == 0``; the store assigns the
    sequence numbers. All other records it returns are fully populated.

    History is removed only as a prefix: a store holds every record from
    `first_seq` to its head, and reading below `first_seq` raises
    `HistoryTruncated`.
    """

    features: StoreFeatures

    @property
    def first_seq(self) -> int:
        """The first seq the store still holds: 1 until retention removes anything.

        A store shared between processes reports what this process last
        saw (it learns of another process's compaction when a read runs
        into it).
        """
        ...

    async def open(self) -> None:
        """Connect, create the schema if needed. Called once by the bus on start."""

    async def close(self) -> None:
        """Release connections and files. Called once by the bus on close."""

    async def append(self, records: Sequence[Record]) -> Collection[int]:
        """Store ``records`` atomically and set each one's ``seq``; returns the
        positions in ``records`` of those that were already stored.

        Event ids are unique in a store: a record whose event id the store
        already holds (or which repeats an earlier record's id in the same
        batch) is not stored again; its ``seq`` is set to the stored one's
        and its position is in the returned collection (empty when every
        record was new). The new records get consecutive seqs, in their
        order, greater than every seq the store ever assigned (a seq is
        never reused, even after the newest rows are deleted), and become
        visible to readers all at once, after every smaller seq. When this
        returns, the batch is durable as far as the store promises
        durability. It must not be torn by cancellation: once begun, it
        either commits and returns, or fails without a trace.

        Every error is a `StoreError`, the driver's exception chained. A
        plain `StoreError` means nothing of the batch was stored. A store
        that loses its connection while committing finds out which before it
        answers; only when it cannot tell within a bounded time does it
        raise `PublishOutcomeUnknown`, carrying the batch's event ids.

        A store whose append never waits (one in memory) may also offer it
        without a coroutine: it declares ``StoreFeatures(immediate_append=True)``
        and implements `ImmediateAppend`.
        """

    async def read(
        self,
        from_seq: int = 1,
        *,
        to_seq: int | None = None,
        types: Collection[str] | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
    ) -> Sequence[Record]:
        """Up to ``limit`` records with ``from_seq <= seq <= to_seq``, in seq order.

        ``types`` keeps only records of those type names (``None``: all).
        Raises `ValueError` for ``from_seq < 1`` or ``limit < 1``, and
        `HistoryTruncated` when ``from_seq`` lies below `first_seq` (and
        ``to_seq`` does not end the range before it begins). Reading
        past the head returns an empty sequence. Payloads are decoded lazily,
        so a record that no longer validates fails only when its ``event`` is
        read.
        """
        ...

    async def head(self) -> int:
        """The greatest seq ever assigned (0 for a store that never held a record)."""
        ...

    async def compact(self, *, keep: int | None = None, keep_age: timedelta | None = None) -> CompactResult:
        """Remove old history now; returns what was removed and the new `first_seq`.

        ``keep`` / ``keep_age`` are the policy of this compaction (see
        `Retention`); with neither, the store's own ``retention=`` (if any)
        applies. Never removes a record at or above a durable checkpoint, one
        a dead letter refers to, or one the registered `HistoryNeed` still
        needs. Raises `ValueError` for a negative ``keep`` or a ``keep_age``
        that is not a positive `timedelta`.
        """
        ...

    def hold_history(self, needed: HistoryNeed | None) -> None:
        """Register what the running bus still needs; ``None`` forgets it.

        Compaction calls ``needed()`` before it removes anything, and removes
        no record at or above the seq it returns. The bus registers it when
        it starts; closing the store forgets it.
        """

    async def wait_for_append(self, after_seq: int) -> None:
        """Return once a record with a seq greater than ``after_seq`` may exist.

        Only called when ``features.shared_between_processes`` is true. It may
        return early (the caller reads again and waits again).
        """

    async def load_checkpoint(self, name: str) -> int | None:
        """The position saved under ``name``, or ``None``."""
        ...

    async def save_checkpoints(self, positions: Mapping[str, int], *, fence: LeaseFence | None = None) -> None:
        """Save several named positions in one round trip.

        With a ``fence``, the save is conditional: it happens only while the
        lease ``fence.name`` still carries ``fence.token``, checked in the
        same statement or transaction as the write, atomically across every
        process sharing the store (a takeover either comes after the save or
        refuses it). Otherwise it raises `LeaseLost` (see `lease_lost`) and
        saves nothing: another holder has taken the lease since the caller
        acquired it, so the caller's position may be older than the new
        holder's.
        """

    async def checkpoints(self) -> Mapping[str, int]:
        """Every saved position by name (for tools such as ``eventbus stats``)."""
        ...

    async def acquire_lease(self, name: str, holder: str, ttl: float) -> int | None:
        """Take or renew the lease on the durable subscription ``name`` for
        ``holder``, valid for ``ttl`` seconds from now; returns the lease's
        fencing token when ``holder`` holds it now, ``None`` when it does not.

        Succeeds when nobody holds the lease, when its holder's lease has
        expired or was released, or when ``holder`` holds it already (a
        renewal); fails, changing nothing, while another holder's lease is
        valid. Atomic across every process sharing the store: two holders can
        never both succeed for the same unexpired lease. Stores shared between
        processes measure expiry with a clock all of them read (SQLite: the
        machine's clock; PostgreSQL: the server's). Raises `ValueError` for a
        ``ttl`` that is not a positive number.

        The fencing token is a positive int kept with the lease for as long
        as the store lives (a release does not forget it). It grows each
        time the lease changes hands, and only then: a renewal, or a holder
        taking back the lease it had last, keeps it. So a save fenced with a
        token (`LeaseFence`) is refused exactly when another holder has
        taken the lease since that token was handed out.
        """
        ...

    async def release_lease(self, name: str, holder: str) -> None:
        """Give up ``holder``'s lease on ``name`` at once, so that a stand-by
        can take it (keeping its fencing token); does nothing when ``holder``
        does not hold it."""

    async def add_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        """Store dead letters (each carries the whole record it failed on)."""

    async def dead_letters(self, subscription: str | None = None) -> Sequence[DeadLetter]:
        """Stored dead letters, oldest first, optionally of one subscription."""
        ...

    async def delete_dead_letters(self, ids: Collection[UUID]) -> int:
        """Delete the dead letters with these ids; returns how many existed.

        Raises `TypeError` naming the first id that is not a `UUID` (see
        `check_letter_ids`), before deleting anything.
        """
        ...


class ImmediateAppend(Protocol):
    """The append of a store that never waits, offered without a coroutine.

    A store declares it with ``StoreFeatures(immediate_append=True)`` and
    implements the three methods; the bus checks that once when it starts
    (`immediate_append`), never per publish, and raises `TypeError` for a
    store that declares it without implementing it. A store that implements
    the methods without declaring them is appended to through
    `Store.append` only.

    While no other append is in flight (and no publish middleware needs to
    see every append), `EventBus.publish` calls these instead of awaiting
    `Store.append`, one coroutine less per publish; everything else
    (``publish_many``, ``ingest``, a publish while another append is in
    flight) still awaits `Store.append`. Each appends exactly as
    `Store.append` does: the same seqs, the same bound, the same records
    read back, so which one the bus used is never visible afterwards. The
    conformance suite's `ImmediateAppendConformance` holds a store to that.
    """

    def append_now(self, records: Sequence[Record]) -> Collection[int]:
        """`Store.append` of ``records`` without a coroutine: sets each one's
        ``seq``, returns the positions of those already stored."""

    def append_new(self, records: Sequence[Record]) -> None:
        """`append_now` of records whose ids the bus just made (so no store
        holds them yet): sets each one's ``seq`` without looking the ids up.

        What a publish under an id of the bus's own calls when a subscription
        needs the `Record` object (an event published from a handler, with
        headers, to a subscription with retry). The ids are as new as an
        entry's (see `append_entry`); a store keeps them unique as it does an
        entry's, by finding them when a later append looks ids up.
        """

    def append_entry(self, event: Event, type: str, version: int, event_id: int, recorded_at_ns: int) -> Entry:
        """Append one event published outside a handler, without headers, under
        an id the bus just made (so no store holds it yet), and return its
        entry: the tuple ``(seq, event, type, version, event_id,
        recorded_at_ns)``, the first arguments of its `Record`.

        The bus calls it instead of `append_now` when no subscription needs
        the `Record` object itself, so that none is built. The record read
        back is ``Record(*entry)``: no
        correlation or causation of its own, no headers, depth 0. A store may
        keep the entry and build its `Record` when a read asks for it (as
        `MemoryStore` does), or build it at once and `append_now` it.
        """
        ...


class OpenTransaction(Protocol):
    """A transaction `Transactions.begin` opened on the application's connection.

    `commit` and `rollback` run to their end even when the calling task is
    cancelled meanwhile (the cancellation takes effect after them): a store
    whose statements are awaited shields them itself, one whose statements
    run without an await (a `sqlite3.Connection`'s) needs nothing, and a
    transaction is never left half-ended by a cancelled caller.
    """

    async def commit(self) -> None:
        """Commit it; the records appended in it become visible to readers (and
        tailing subscriptions are woken) all at once."""

    async def rollback(self) -> None:
        """Roll it back: nothing appended in it is stored."""


class Transactions(Protocol):
    """Appending inside the application's own transaction (the outbox).

    A store declares it with ``StoreFeatures(transactions=True)`` and
    implements every method; the bus checks that once when it starts
    (`transactions`). ``connection`` is the driver's connection the
    application holds (an asyncpg connection, a `sqlite3.Connection`, …):
    each store says which it takes.

    Appends through a transaction take the store's append lock (PostgreSQL:
    the seq counter's row lock; SQLite: the file's write lock) and hold it
    until the application's transaction ends, so seqs stay gapless and in
    commit order, and every other append to the store waits meanwhile. The
    records become visible to readers when the transaction commits, and
    vanish with it when it rolls back; subscriptions see them through the
    store's tail (`Store.wait_for_append`), like another process's.
    """

    async def check_connection(self, connection: object) -> None:
        """`TransactionError` unless ``connection`` is a connection this store
        can append through: of the driver it uses, open, to the store's own
        database (see `wrong_connection`). Writes nothing."""

    def in_transaction(self, connection: object) -> bool:
        """Whether ``connection`` (one `check_connection` accepted) has a transaction open."""
        ...

    async def begin(self, connection: object) -> OpenTransaction:
        """Begin a transaction on ``connection`` (one `check_connection`
        accepted, with no transaction open), taking the store's append lock
        at once where the driver cannot take it later without risk (SQLite's
        ``BEGIN IMMEDIATE``)."""
        ...

    async def append_in(self, connection: object, records: Sequence[Record]) -> Collection[int]:
        """`Store.append` of ``records`` inside the transaction open on
        ``connection``: sets each one's ``seq``, returns the positions of those
        whose event id the store held already (or which repeat an earlier
        record's), and never fails the application's transaction for a
        repeated id. Nothing is visible to readers before the commit."""
        ...

    async def execute_in(self, connection: object, sql: str, args: Sequence[object]) -> None:
        """Run one statement of the application's on ``connection`` (inside
        whatever transaction is open there), with the driver's own
        placeholders (``$1`` for asyncpg, ``?`` for sqlite3)."""

    async def begin_projection(self) -> ProjectionTransaction:
        """Begin a transaction on a connection of the store's own, to its
        database, for one delivery of a projection (see `ProjectionTransaction`)."""
        ...


class ProjectionTransaction(Protocol):
    """A transaction on the store's database in which a projection's delivery
    runs (`Transactions.begin_projection`): the handler's writes, the
    checkpoint past the event (or its dead letter), and whatever it
    publishes commit together or not at all.

    Attributes:
        connection: the driver's connection the transaction is open on.
    """

    @property
    def connection(self) -> object:
        """The driver's connection the transaction is open on (the store's own)."""
        ...

    async def position(self, name: str) -> int | None:
        """``name``'s saved position (None: none), read first in the
        transaction and locked until it ends where the database locks rows
        (SQLite's transaction holds the whole file already): a delivery whose
        commit was in doubt, or another replica's, is found applied."""
        ...

    async def save_checkpoint(self, name: str, position: int, fence: LeaseFence | None) -> None:
        """Save ``name``'s position in this transaction; with a ``fence``, only
        while its lease still carries its token (`LeaseLost` otherwise)."""

    async def add_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        """`Store.add_dead_letters`, in this transaction."""

    async def commit(self) -> None:
        """Commit, and give the connection back to the store; `StoreError` when
        the store cannot commit (the transaction is rolled back then)."""

    async def rollback(self) -> None:
        """Roll back, and give the connection back to the store."""


def wrong_connection(store: Store, problem: str) -> TransactionError:
    """The `TransactionError` `Transactions.check_connection` raises for a
    connection it cannot append through; ``problem`` says why. Every store builds
    it here, so all of them refuse with the same shape of message."""
    return TransactionError(f"cannot publish in a transaction through this connection to {store!r}: {problem}")


def _declared(store: Store, feature: str, protocol: str, methods: Sequence[str]) -> None:
    """`TypeError` naming each of ``methods`` that ``store`` lacks although it declares ``feature``."""
    missing = [name for name in methods if not callable(getattr(store, name, None))]
    if missing:
        raise TypeError(
            f"{type(store).__qualname__} declares StoreFeatures({feature}=True) but does not implement "
            f"{' and '.join(f'{name}()' for name in missing)} of eventbus.store.{protocol}; "
            f"implement it or leave {feature} False"
        )


_IMMEDIATE_APPEND_METHODS = ("append_now", "append_new", "append_entry")
"""What `ImmediateAppend` asks for, in the order `immediate_append` names what is missing."""

_TRANSACTIONS_METHODS = ("check_connection", "in_transaction", "begin", "append_in", "execute_in", "begin_projection")
"""What `Transactions` asks for, in the order `transactions` names what is missing."""


def immediate_append(store: Store) -> ImmediateAppend | None:
    """The store's `ImmediateAppend` when its features declare one, else ``None``.

    What the bus calls once when it starts, so that the declaration, not the
    presence of a method, decides. Raises `TypeError` naming the store's class
    and each missing method when ``store.features.immediate_append`` is true
    but the store does not implement `ImmediateAppend`.
    """
    if not store.features.immediate_append:
        return None
    _declared(store, "immediate_append", "ImmediateAppend", _IMMEDIATE_APPEND_METHODS)
    return cast(ImmediateAppend, store)


def transactions(store: Store) -> Transactions | None:
    """The store's `Transactions` when its features declare them, else ``None``.

    What the bus calls once when it starts. Raises `TypeError` naming the
    store's class and each missing method when ``store.features.transactions``
    is true but the store does not implement `Transactions`.
    """
    if not store.features.transactions:
        return None
    _declared(store, "transactions", "Transactions", _TRANSACTIONS_METHODS)
    return cast(Transactions, store)


def check_read_arguments(from_seq: int, limit: int) -> None:
    """Raise the `ValueError` that `Store.read` owes for ``from_seq`` or ``limit`` below 1.

    Every store calls it first, so all of them refuse the same input with the
    same message.
    """
    if from_seq < 1:
        raise ValueError(f"from_seq must be >= 1, got {from_seq}")
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")


def check_lease_ttl(ttl: float) -> None:
    """Raise the `ValueError` that `Store.acquire_lease` owes for a ``ttl`` that is not a positive number.

    Every store calls it first, so all of them refuse the same input with the same message.
    """
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not 0 < ttl < float("inf"):
        raise ValueError(f"a lease's ttl must be a positive number of seconds, got {ttl!r}")


def lease_lost(fence: LeaseFence, where: str) -> LeaseLost:
    """The `LeaseLost` that `Store.save_checkpoints` raises when ``fence`` no
    longer holds; ``where`` names the store (its URL, passwords redacted).

    Every store builds it here, so all of them refuse a stale save with the same message.
    """
    return LeaseLost(
        f"checkpoint save refused by {where}: the lease on {fence.name!r} has changed hands since it was "
        f"acquired with fencing token {fence.token}; another process delivers this subscription now",
        name=fence.name,
        token=fence.token,
    )


def check_letter_ids(ids: Collection[UUID]) -> set[UUID]:
    """The distinct ids of ``ids``; `TypeError` naming the first one that is not a `UUID`.

    Every store's `Store.delete_dead_letters` calls it first, so a text id
    (``"3f2b..."`` instead of ``UUID("3f2b...")``) is refused the same way
    everywhere instead of matching nothing.
    """
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Collection):
        raise TypeError(f"dead letter ids must be a collection of UUIDs, got {type(ids).__name__} {ids!r}")
    for letter_id in ids:
        if not isinstance(letter_id, UUID):
            raise TypeError(
                f"dead letter ids must be UUIDs, got {type(letter_id).__name__} {letter_id!r}; "
                "use uuid.UUID(text) for an id given as text"
            )
    return set(ids)


_Id = TypeVar("_Id", bound=Hashable)


def append_seqs(event_ids: Sequence[_Id], stored: Mapping[_Id, int], last: int) -> list[int]:
    """The seq each record of an append gets, in order, for a store whose
    newest seq is ``last`` and which holds ``stored`` (seq by event id) of
    ``event_ids``: the stored seq for an id it holds or that came earlier in
    the batch, the next new seq for every other.

    For stores that look the ids of a batch up before inserting it, so that
    every one numbers a batch with repeated ids the same way (`already_stored`
    then names the repeats).
    """
    known = dict(stored)
    seqs: list[int] = []
    seq = last
    for event_id in event_ids:
        found = known.get(event_id)
        if found is None:
            seq += 1
            found = known[event_id] = seq
        seqs.append(found)
    return seqs


def already_stored(seqs: Sequence[int], last: int) -> list[int]:
    """The positions of the records that `append_seqs` gave a seq stored before
    (the store's, at most ``last``, or an earlier record's of the batch):
    what `Store.append` returns."""
    already: list[int] = []
    newest = last
    for index, seq in enumerate(seqs):
        if seq > newest:
            newest = seq
        else:
            already.append(index)
    return already
