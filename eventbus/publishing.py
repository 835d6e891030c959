"""Publishing: how an event gets into the store and to its subscriptions.

Every way in (`Publisher.publish`, `~Publisher.publish_many`,
`~Publisher.ingest`, `~Publisher.ingest_many`) builds what the store keeps, waits for room in full
``"block"`` subscriptions, appends, and ends in one *accepted* step: the
head moves, the append is counted and logged, and each record is offered to
the inboxes its class routes to (`eventbus.delivery.inbox.offer`).

Appends go through the *group commit*: one store append in flight at a time.
Publishes that arrive while an append is in flight wait and go into the next
append together, which keeps routing in seq order (the order catch-up relies
on) and lets a durable store amortise its commit over many publishes. A store
that offers the immediate append (`~eventbus.store.ImmediateAppend`, the
`MemoryStore`) is appended to at once, without a coroutine, whenever no
append is in flight and no publish middleware has to see it.

Cancellation never leaves a publish half-done: a store's append either
commits and returns or stores nothing (the `Store` contract), and a
publisher's wait for the append carrying its records is shielded until that
outcome is decided. A publish that returns stored its records; one that
raises stored nothing, except for `PublishOutcomeUnknown`, the store's word
that it cannot tell. A cancellation that arrives meanwhile takes effect at
the caller's next checkpoint.

Event ids are unique in a store (see `Store.append`): a record whose id is
already stored keeps the stored seq and is not routed again, which is what
makes publishing with the caller's own ids (``event_id=``, ``event_ids=``)
and `~Publisher.ingest` idempotent.

Publishing in the application's transaction (``transaction=conn``,
`~Publisher.transaction`; the store's `~eventbus.store.Transactions`) takes
another way: the records go through the publish middleware (a second chain
of the same middleware, whose innermost step appends through the
application's connection), outside the group commit, and nobody here routes
them. They become visible when the application commits, and subscriptions
that tail the store (``from_seq``, ``durable=True``) read them from there,
like records another process appended; live subscriptions, which take only
what this bus routes, do not see them. A SQLAlchemy session or connection
is handed over to `eventbus._sqlalchemy`, which begins and ends the
transaction through SQLAlchemy and gives the store the driver's connection
underneath. Such an append holds the store's append lock until the
application's transaction ends, so the task remembers the (driver's)
connection (`open_transaction`), and a plain publish from it, which would
wait for that lock forever, raises `TransactionError` while the
connection's transaction is open.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from contextvars import ContextVar, Token
from functools import partial
from time import time_ns
from types import MappingProxyType, TracebackType
from uuid import UUID

import anyio

from ._context import current_record
from ._entry import SEQ, Entry, Item, causation_of, seq_of, type_of
from ._ids import first_id
from ._log import logger
from ._weak import weak_method
from .delivery.inbox import Inbox, offer
from .event import Event, check_round_trip
from .exceptions import BackpressureError, BusClosed, CausationLoopError, PublishOutcomeUnknown, TransactionError
from .middleware.base import Commit, PublishMiddleware
from .record import NO_HEADERS, Record
from .routing import Route, Router
from .store import ImmediateAppend, OpenTransaction, Store, Transactions, immediate_append, transactions
from .transaction import Execute, HeldTransaction, Transaction, open_transaction

__all__ = ["DEFAULT_MAX_CAUSATION_DEPTH", "ORIGIN_HEADER", "Publisher"]

DEFAULT_MAX_CAUSATION_DEPTH = 64
ORIGIN_HEADER = "origin"
"""The header `EventBus.ingest` sets to where an event came from."""

_current_record = current_record.get
"""Bound once: neither CPython 3.11 nor 3.13 specializes looking up a
`ContextVar`'s method, and ``current_record.get()`` in `Publisher.publish`
costs a one-handler publish-to-handled 527 instructions on 3.11 (12 968
against 12 441) and 702 on 3.13 (14 804 against 14 102)."""


_appending_through: ContextVar[tuple[Transactions, object] | None] = ContextVar(
    "eventbus_appending_through", default=None
)
"""The store and connection the publish in a transaction under way appends
through, for the innermost step of its publish middleware chain."""


class Publisher:
    """Accepts events into a store and routes them: what an `EventBus` does to
    publish (`EventBus` is a `Publisher`; its lifecycle hands each run's store
    to `_begin_run`, and opens and closes the way in with `_accept_publishes`
    and `_refuse_publishes`, protected methods an `EventBus` calls on itself).

    Args:
        router: the bus's type → subscriptions index.
        publish_middleware: middleware around every append (outermost first).
        publish_timeout: seconds a publish may wait for room in a full
            ``"block"`` subscription (None: no limit).
        max_causation_depth: how deep a chain of events published from
            handlers may grow.
    """

    # Slotted: an EventBus instance holds these and its own attributes, about
    # forty, past the thirty up to which CPython 3.11 keeps an instance's dict
    # shared and its attribute reads specialized. Unslotted, a one-handler
    # publish-to-handled costs 232 instructions more on 3.11 (12 673 against
    # 12 441) and 286 more on 3.13 (14 388 against 14 102), 2 % on both.
    __slots__ = (
        "__weakref__",
        "_busy",
        "_chain",
        "_chain_in_transaction",
        "_crowded",
        "_encode_waiting",
        "_entry_now",
        "_head",
        "_idle",
        "_immediate",
        "_log_publishes",
        "_middleware_sees_appends",
        "_next_id",
        "_now",
        "_pending",
        "_published",
        "_refusal",
        "_routes",
        "_store",
        "_transactions",
        "max_causation_depth",
        "publish_timeout",
    )

    def __init__(
        self,
        router: Router,
        *,
        publish_middleware: Sequence[PublishMiddleware],
        publish_timeout: float | None,
        max_causation_depth: int,
    ) -> None:
        if publish_timeout is not None and not publish_timeout > 0:
            raise ValueError(f"publish_timeout must be a positive number of seconds, got {publish_timeout!r}")
        if isinstance(max_causation_depth, bool) or not isinstance(max_causation_depth, int) or max_causation_depth < 1:
            raise ValueError(f"max_causation_depth must be an int >= 1, got {max_causation_depth!r}")
        self._routes = router
        self._crowded = router.crowded
        # the innermost step holds this publisher weakly: the chain is ours, and a
        # bound method would close a reference cycle (see eventbus._weak)
        chain: Commit = weak_method(self._commit)
        chain_in_transaction: Commit = weak_method(self._commit_in_transaction)
        for wrap in reversed(publish_middleware):
            chain = wrap(chain)
            chain_in_transaction = wrap(chain_in_transaction)
        self._chain = chain
        self._chain_in_transaction = chain_in_transaction
        """The publish middleware around appends inside the application's transactions."""
        self._store: Store | None = None
        self._immediate: ImmediateAppend | None = None
        """The store's immediate append, when it has one and no publish middleware must see appends."""
        self._transactions: Transactions | None = None
        """The store's appends inside the application's transactions, when it offers them."""
        self._now: ImmediateAppend | None = None
        """`_immediate` while no append is in flight, else None."""
        self._entry_now: Callable[[Event, str, int, int, int], Entry] | None = None
        """``_now.append_entry`` (see `eventbus._entry`), bound once, while `_now` is set, else None."""
        self._busy = False
        self._pending: list[_Pending] = []
        self._encode_waiting = False
        """Whether records that wait for the append in flight have their JSON made meanwhile (see `_encode_ahead`)."""
        self._idle: anyio.Event | None = None
        self._next_id = first_id()
        """The next event id, a UUIDv7 value as an int, one more each time (see eventbus._ids)."""
        self._head = 0
        self._published = 0
        self._log_publishes = False
        self._refusal: str | None = "stopped"
        """Why publishes are refused (the bus's state), or None while they are accepted."""
        self.publish_timeout = publish_timeout
        self.max_causation_depth = max_causation_depth
        self._middleware_sees_appends = bool(publish_middleware)

    # -- the lifecycle's side: protected, an EventBus calls these on itself ----------

    def _begin_run(self, store: Store, head: int) -> None:
        """A run of the bus starts on ``store``, whose newest seq is ``head``."""
        self._store = store
        self._head = head
        immediate = immediate_append(store)  # checked even where publish middleware leaves it unused
        self._immediate = None if self._middleware_sees_appends else immediate
        self._set_at_once(not self._busy)
        self._transactions = transactions(store)
        self._encode_waiting = store.features.persistent
        # Asked once per run, not per publish: the check costs more than a publish.
        self._log_publishes = logger.is_enabled_for(logging.DEBUG)

    def _accept_publishes(self) -> None:
        """Accept publishes (the bus is running or draining)."""
        self._refusal = None

    def _refuse_publishes(self, state: str) -> None:
        """Refuse publishes with `BusClosed`, saying that the bus is ``state``."""
        self._refusal = state

    @property
    def _accepting(self) -> bool:
        """Publishes are accepted."""
        return self._refusal is None

    @property
    def head(self) -> int:
        """The newest seq this bus has appended or found in its store."""
        return self._head

    def _current_head(self) -> int:
        """`head`, as a plain method the subscriptions' runs call."""
        return self._head

    @property
    def _appending(self) -> bool:
        """An append is in flight."""
        return self._busy

    async def _wait_appended(self) -> None:
        """Return once no append is in flight."""
        if self._busy:
            if self._idle is None:
                self._idle = anyio.Event()
            await self._idle.wait()

    # -- the ways in ---------------------------------------------------------------

    # ``event_id`` and ``transaction`` are not keyword-only, unlike the other
    # ways in's options (callers pass them by keyword all the same): neither
    # CPython 3.11 nor 3.13 specializes a call to a function with a
    # keyword-only parameter. Keyword-only, ``event_id`` cost a one-handler
    # publish-to-handled 225 instructions on 3.11 (12 739 against 12 514) and
    # 161 on 3.13 (14 346 against 14 185), and ``transaction`` 115 more on
    # 3.11 (13 423 against 13 308).
    async def publish(
        self,
        event: Event,
        headers: Mapping[str, str] | None = None,
        event_id: UUID | None = None,
        transaction: object = None,
    ) -> int:
        """Store ``event``, route it to its subscriptions, and return its seq.

        Returns once the event is stored (committed, for durable stores); it
        does not wait for handlers. ``event_id`` (pass it by keyword) gives
        the event the caller's id instead of a new one: when the store
        already holds a record with that id, nothing is stored or routed, and
        that record's seq is returned (the stored event is not compared with
        ``event``).

        ``transaction`` is the application's own connection to the store's
        database (an asyncpg connection for `PostgresStore`, a
        `sqlite3.Connection` or an aiosqlite connection to the file for
        `SqliteStore`, or a SQLAlchemy ``AsyncSession`` or
        ``AsyncConnection`` on either) with a transaction open on it: the
        event is appended inside that transaction, gets its seq now, and is
        stored and delivered only if and when the application commits (see
        `transaction` and the Transactions guide). Raises `TransactionError`
        when the store does not take part in transactions, the connection is
        another database's or has no transaction open; and, without
        ``transaction``, when this task holds a transaction it published in
        open (a plain append would wait for that transaction's lock forever).

        Raises `TypeError` for anything that is not an `Event` (or an
        ``event_id`` that is not a `UUID`), `BusClosed` when the bus is not
        running (or closes while the publish waits for room),
        `BackpressureError` when a full ``"block"`` subscription stays full
        past ``publish_timeout``, `CausationLoopError` when called from a
        handler at the bottom of a too-deep causation chain, and
        `StoreError` when the store fails. A publish that raises stored
        nothing, except one that raises `PublishOutcomeUnknown`: the store
        lost its connection while committing and could not tell; publishing
        again with the error's ``event_ids`` is safe.
        """
        if self._refusal is not None:
            raise BusClosed(f"cannot publish {type(event).__qualname__}: the bus is {self._refusal}")
        if transaction is not None:
            store = self._transactional()
            one = self._new_record(event, self._routes[type(event)], headers, _current_record(), event_id)
            return (await self._publish_in(store, transaction, [one]))[0]
        route = self._routes[type(event)]
        parent = _current_record()
        record = (
            None
            if parent is None and headers is None and event_id is None
            else self._new_record(event, route, headers, parent, event_id)
        )
        if self._crowded:  # some inbox may be full: look at this route's
            await self._wait_if_full(route.blocking, parent)
        item: Item
        if record is None:
            new_id = self._next_id
            self._next_id = new_id + 1
            append_entry = self._entry_now
            if append_entry is not None and route.entries:
                # no subscription needs a Record: the store keeps an entry (see eventbus._entry)
                item = append_entry(event, route.name, route.version, new_id, time_ns())
                seq = item[SEQ]
            else:
                if route.round_trip:
                    check_round_trip(event)
                record = Record(0, event, route.name, route.version, new_id, time_ns())
        if record is not None:
            now = self._now
            if now is None:
                await self._commit_reserving((record,), dict.fromkeys(route.blocking, 1))
                return record.seq
            if event_id is None:
                now.append_new((record,))  # under an id just made: nothing to look up
            elif now.append_now((record,)):
                return record.seq  # stored before, under the caller's event_id: routed then
            item, seq = record, record.seq
        # The store took the item at once, and nothing ran in between: what
        # `_accepted` does, written out for one item. Calling a method for it
        # costs a one-handler publish-to-handled 421 instructions on CPython
        # 3.11 (12 862 against 12 441, 3.4 %) and 639 on 3.13 (14 741 against
        # 14 102, 4.5 %).
        self._head = seq
        self._published += 1
        if self._log_publishes:
            _log_published(seq, seq, route.name)
        offer(route.targets, item)
        return seq

    async def publish_many(
        self,
        events: Iterable[Event],
        headers: Mapping[str, str] | None = None,
        *,
        event_ids: Iterable[UUID] | None = None,
        transaction: object = None,
    ) -> list[int]:
        """Store a batch in one atomic append, route it, and return the seqs in order.

        ``event_ids`` gives the events the caller's ids, one per event, in
        order: an event whose id is already stored (or repeats an earlier one
        of the batch) is not stored or routed again, and gets the stored seq.
        ``transaction``: append the batch inside the application's open
        transaction, as for `publish`. Raises what `publish` raises, and
        `ValueError` when ``event_ids`` does not hold one id per event.
        """
        if self._refusal is not None:
            raise BusClosed(f"cannot publish: the bus is {self._refusal}")
        parent = _current_record()
        if transaction is not None:
            store = self._transactional()
            return await self._publish_in(store, transaction, self._batch(events, headers, parent, event_ids))
        records = self._batch(events, headers, parent, event_ids)
        if not records:
            return []
        routes = self._routes
        blocking: dict[Inbox, int] = {}
        for record in records:
            for inbox in routes[type(record.decoded)].blocking:
                blocking[inbox] = blocking.get(inbox, 0) + 1
        await self._wait_if_full(tuple(blocking), parent)
        await self._commit_reserving(records, blocking)
        return [record.seq for record in records]

    async def ingest(
        self,
        event: Event,
        *,
        event_id: UUID,
        origin: str,
        correlation_id: UUID | None = None,
        causation_id: UUID | None = None,
        headers: Mapping[str, str] | None = None,
        depth: int = 0,
    ) -> int:
        """Append an event that originated elsewhere (another process, a broker)
        and route it like a local one; returns its local seq.

        For bridges and other plugins. The event gets a new local seq but keeps
        its ``event_id``, ``correlation_id`` (its own id when None),
        ``causation_id``, ``headers`` and causation ``depth``, plus an
        ``origin`` header (`ORIGIN_HEADER`) saying where it came from. It is
        idempotent on ``event_id``, like `publish` with an ``event_id``: when
        the store already holds that id (ingested before, or published here
        and come back), nothing is appended or routed and the stored seq is
        returned. Raises what `publish` raises, and `CausationLoopError`
        when ``depth`` exceeds ``max_causation_depth``.
        """
        if self._refusal is not None:
            raise BusClosed(f"cannot ingest {type(event).__qualname__}: the bus is {self._refusal}")
        record = self._ingested(event, event_id, origin, correlation_id, causation_id, headers, depth)
        blocking = self._routes[type(event)].blocking
        await self._wait_if_full(blocking, None)
        await self._commit_reserving((record,), dict.fromkeys(blocking, 1))
        return record.seq

    async def ingest_many(self, records: Iterable[Record], *, origin: str | None = None) -> list[int]:
        """`ingest` a batch in one atomic append; returns the local seqs in order.

        For bridges that take events in by the batch (the NATS bridge ingests
        what one fetch brought). Each record gives the event
        (``record.event``), its ``event_id``, ``correlation_id``,
        ``causation_id``, ``headers`` and ``depth``, all kept as `ingest`
        keeps them; its seq, type, version and time are not used (the event
        is stored as its class's current version, under a new local seq).
        Where a record came from is its ``origin`` header, or ``origin``
        for a record without one. Idempotent on event ids like `ingest`: a
        record whose id the store holds, or that repeats an earlier one of the
        batch, is not appended or routed again and gets the stored seq.

        Raises what `ingest` raises, naming the record's index (``records[3]:
        ...``), and `ValueError` for a record with no origin; when it raises,
        nothing of the batch is stored.
        """
        if self._refusal is not None:
            raise BusClosed(f"cannot ingest: the bus is {self._refusal}")
        built: list[Record] = []
        for index, given in enumerate(records):
            try:
                if not isinstance(given, Record):
                    raise TypeError(f"ingest_many takes Records, got {given!r}")
                headers = dict(given.headers)
                built.append(
                    self._ingested(
                        given.event,
                        given.event_id,
                        headers.pop(ORIGIN_HEADER, origin),
                        given.correlation_id,
                        given.causation_id,
                        headers,
                        given.depth,
                    )
                )
            except (TypeError, ValueError, CausationLoopError) as exc:
                raise type(exc)(f"records[{index}]: {exc}") from None
        if not built:
            return []
        routes = self._routes
        blocking: dict[Inbox, int] = {}
        for record in built:
            for inbox in routes[type(record.decoded)].blocking:
                blocking[inbox] = blocking.get(inbox, 0) + 1
        await self._wait_if_full(tuple(blocking), None)
        await self._commit_reserving(built, blocking)
        return [record.seq for record in built]

    def _ingested(
        self,
        event: Event,
        event_id: UUID,
        origin: str | None,
        correlation_id: UUID | None,
        causation_id: UUID | None,
        headers: Mapping[str, str] | None,
        depth: int,
    ) -> Record:
        """The record `ingest` appends, its arguments checked."""
        for name, value in (("event_id", event_id), ("correlation_id", correlation_id), ("causation_id", causation_id)):
            if value is not None and not isinstance(value, UUID):
                raise TypeError(f"ingest({name}=...) takes a UUID, got {value!r}")
        if not isinstance(origin, str) or not origin:
            raise ValueError(f"ingest(origin=...) must name where the event came from, got {origin!r}")
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
            raise ValueError(f"ingest(depth=...) must be an int >= 0, got {depth!r}")
        route = self._routes[type(event)]
        if depth > self.max_causation_depth:
            raise CausationLoopError(
                f"ingesting {route.name!r} (event id {event_id}) from {origin!r}: its causation chain is {depth} "
                f"events deep (max_causation_depth={self.max_causation_depth})"
            )
        if route.round_trip:
            check_round_trip(event)
        stamped = _checked_headers({**(headers or {}), ORIGIN_HEADER: origin})
        return Record(
            0, event, route.name, route.version, event_id, time_ns(), correlation_id, causation_id, stamped, depth
        )

    # -- in the application's transaction ------------------------------------------

    def transaction(self, connection: object) -> AbstractAsyncContextManager[Transaction]:
        """Begin a transaction on the application's ``connection`` and publish in it.

        ```python
        async with bus.transaction(conn) as tx:
            conn.execute("INSERT INTO orders ...")                 # the application's own writes
            await tx.publish(OrderPlaced(order_id="A1", amount=5))
        ```

        Commits on a normal exit and rolls back when the block raises (the
        exception propagates unchanged); the events published through ``tx``
        are stored and delivered only once the commit is done, and then
        `drain` waits for them too. ``connection`` is what
        ``publish(..., transaction=)`` takes, with no transaction open yet; a
        SQLAlchemy ``AsyncSession`` or ``AsyncConnection`` is begun,
        committed and rolled back through SQLAlchemy (``session.begin()``),
        and is the yielded transaction's ``connection`` (its ``execute``
        runs on the driver's connection underneath). The transaction holds
        the store's append lock from its first publish (SQLite: from its
        start; through SQLAlchemy: from its first write) to its end: every
        other publisher of the store waits meanwhile, so keep it short.
        Raises `TransactionError` before beginning anything when the store
        does not take part in transactions, or the connection is another
        database's or already in a transaction; `BusClosed` when the bus is
        not running.
        """
        return _TransactionBlock(self, connection)

    async def _begin_block(self, connection: object) -> tuple[_BlockHeld, OpenTransaction, Transaction]:
        """Begin `transaction`'s block on ``connection``: what holds it, the
        transaction to end, and the `Transaction` the block publishes through."""
        if self._refusal is not None:
            raise BusClosed(f"cannot begin a transaction: the bus is {self._refusal}")
        store = self._transactional()
        opened: OpenTransaction
        execute: Execute
        if _is_sqlalchemy(connection):
            from ._sqlalchemy import begin_transaction, execute_in

            driver, opened = await begin_transaction(store, connection)
            execute = partial(execute_in, store, connection, driver)
        else:
            await store.check_connection(connection)
            if store.in_transaction(connection):
                raise TransactionError(
                    f"a transaction is already open on {connection!r}; publish in it with "
                    "bus.publish(..., transaction=conn), or commit it before bus.transaction(conn)"
                )
            driver, opened = connection, await store.begin(connection)
            execute = partial(store.execute_in, connection)
        return _BlockHeld(store, driver), opened, Transaction(self, connection, execute)

    def _block_committed(self, held: HeldTransaction) -> None:
        """A `transaction` block committed: every seq up to its last is
        committed now (seqs go in commit order), so the head moves, and
        `drain` waits for tailing subscriptions to deliver them."""
        self._head = max(self._head, held.last_seq)

    def _transactional(self) -> Transactions:
        """The store's `Transactions`; `TransactionError` when it offers none."""
        store = self._transactions
        if store is None:
            raise TransactionError(
                f"{self._store!r} does not take part in the application's transactions; publishing with "
                "transaction= needs a store in the application's database (eventbus-sqlite's SqliteStore, "
                "eventbus-postgres' PostgresStore)"
            )
        return store

    async def _publish_in(self, store: Transactions, connection: object, records: list[Record]) -> list[int]:
        """Append ``records`` through ``store`` inside the transaction open on ``connection``; their seqs.

        Routes nothing: the records reach subscriptions through the store's
        tail once the application commits (see the module docstring).
        """
        if not records:
            return []
        # the connection of the bus.transaction block this publish is in was
        # checked when the block began, and is the same database's still
        held = open_transaction.get()
        checked = held.connection if isinstance(held, _BlockHeld) and held.store is store else None
        if _is_sqlalchemy(connection):
            from ._sqlalchemy import driver_connection

            connection = await driver_connection(store, connection, checked)
        elif connection is not checked:
            await store.check_connection(connection)
        if not store.in_transaction(connection):
            raise TransactionError(
                f"no transaction is open on {connection!r}: publish(..., transaction=conn) appends inside the "
                "transaction the application has open on conn; begin one first, or use bus.transaction(conn)"
            )
        through = _appending_through.set((store, connection))
        try:
            await self._chain_in_transaction(records)
        finally:
            _appending_through.reset(through)
        if held is None or held.connection is not connection:
            held = HeldTransaction(store, connection)
            open_transaction.set(held)
        held.appended(max(record.seq for record in records))
        if self._log_publishes:
            logger.debug("published in a transaction", seq=records[0].seq, type=records[0].type, count=len(records))
        return [record.seq for record in records]

    async def _commit_in_transaction(self, records: Sequence[Record]) -> None:
        """The innermost step of a publish in a transaction: append ``records``
        through the connection `_publish_in` is appending through (setting their seqs)."""
        through = _appending_through.get()
        assert through is not None, "only _publish_in runs this chain"
        store, connection = through
        await store.append_in(connection, records)

    def _refuse_inside_transaction(self) -> None:
        """`TransactionError` when this task holds a transaction it published in open:
        its connection holds the store's append lock, which a plain append would wait for."""
        held = open_transaction.get()
        if held is None:
            return
        connection = held.connection
        if not held.store.in_transaction(connection):
            if not isinstance(held, _BlockHeld):  # a block keeps its own until it ends (its driver may begin lazily)
                open_transaction.set(None)
            return
        raise TransactionError(
            f"a plain publish from inside an open transaction on {connection!r} would wait forever for that "
            "transaction's lock on the store; publish in it (transaction=conn, or tx.publish) or after its commit"
        )

    # -- building records ----------------------------------------------------------

    def _batch(
        self,
        events: Iterable[Event],
        headers: Mapping[str, str] | None,
        parent: Item | None,
        event_ids: Iterable[UUID] | None,
    ) -> list[Record]:
        """The records of a `publish_many` batch; errors name the event's index."""
        listed = list(events)
        ids: list[UUID | None] = [None] * len(listed) if event_ids is None else list(event_ids)
        if len(ids) < len(listed):
            raise ValueError(f"publish_many got more events than event_ids ({len(ids)})")
        if len(ids) > len(listed):
            raise ValueError(f"publish_many got {len(ids)} event_ids for {len(listed)} events")
        routes = self._routes
        records: list[Record] = []
        for index, (event, event_id) in enumerate(zip(listed, ids, strict=True)):
            try:
                route = routes[type(event)]
            except TypeError as exc:
                raise TypeError(f"events[{index}]: {exc}") from None
            if event_id is not None and not isinstance(event_id, UUID):
                raise TypeError(f"event_ids[{index}]: {_not_a_uuid(event_id)}")
            records.append(self._new_record(event, route, headers, parent, event_id))
        return records

    def _new_record(
        self,
        event: Event,
        route: Route,
        headers: Mapping[str, str] | None,
        parent: Item | None,
        given_id: UUID | None = None,
    ) -> Record:
        if route.round_trip:
            check_round_trip(event)
        headers = NO_HEADERS if headers is None else _checked_headers(headers)
        event_id: UUID | int
        if given_id is None:
            event_id = self._next_id
            self._next_id = event_id + 1
        elif isinstance(given_id, UUID):
            event_id = given_id
        else:
            raise TypeError(_not_a_uuid(given_id))
        if parent is None:
            return Record(0, event, route.name, route.version, event_id, time_ns(), None, None, headers)
        parent_id, correlation, parent_depth = causation_of(parent)
        depth = parent_depth + 1
        if depth > self.max_causation_depth:
            raise CausationLoopError(
                f"publishing {route.name!r} from the handler of seq {seq_of(parent)} ({type_of(parent)}) would make "
                f"a causation chain {depth} events deep (max_causation_depth={self.max_causation_depth}); "
                "handlers are probably feeding each other in a loop"
            )
        return Record(0, event, route.name, route.version, event_id, time_ns(), correlation, parent_id, headers, depth)

    # -- room ----------------------------------------------------------------------

    async def _wait_if_full(self, blocking: Sequence[Inbox], parent: Item | None) -> None:
        """Wait for room if one of ``blocking`` is full: the check every way in
        makes before appending."""
        if any(inbox.full() for inbox in blocking):
            await self._wait_for_room(blocking, parent)

    async def _wait_for_room(self, inboxes: Sequence[Inbox], parent: Item | None) -> None:
        # a handler publishing into its own full inbox cannot wait for room only it can make
        others = [inbox for inbox in inboxes if parent is None or not inbox.delivers_here()]
        try:
            with anyio.fail_after(self.publish_timeout):
                for inbox in others:
                    await inbox.wait_for_room()
        except TimeoutError:
            full = [inbox.name for inbox in others if inbox.full()]
            raise BackpressureError(
                f"subscription(s) {full} stayed full for publish_timeout={self.publish_timeout}s; "
                "the event was not stored"
            ) from None
        if self._refusal is not None:
            raise BusClosed("the bus closed while publish waited for room; the event was not stored")

    # -- the group commit ----------------------------------------------------------

    async def _commit_reserving(self, records: Sequence[Record], reserved: Mapping[Inbox, int]) -> None:
        """Run the publish chain holding room in each ``"block"`` inbox for the
        records going there, until they are routed or refused."""
        for inbox, count in reserved.items():
            inbox.reserve(count)
        try:
            await self._chain(records)
        finally:
            for inbox, count in reserved.items():
                inbox.release(count)

    async def _commit(self, records: Sequence[Record]) -> None:
        """The innermost publish step: store ``records`` (setting their seqs) and route them."""
        if self._transactions is not None:
            self._refuse_inside_transaction()
        if self._busy:
            if self._encode_waiting:
                _encode_ahead(records)
            pending = _Pending(records)
            self._pending.append(pending)
            with anyio.CancelScope(shield=True):
                await pending.done.wait()
            if pending.error is not None:
                raise pending.error
            return
        store = self._store
        assert store is not None
        self._busy = True
        self._set_at_once(False)
        try:
            # a store's append is atomic under cancellation by contract: it
            # commits and returns, or raises having stored nothing
            self._accepted(records, await store.append(records))
        finally:
            if self._pending:
                with anyio.CancelScope(shield=True):
                    await self._flush(store)
            self._busy = False
            self._set_at_once(True)
            if self._idle is not None:
                self._idle.set()
                self._idle = None

    async def _flush(self, store: Store) -> None:
        """Append what waited for the append in flight, in as few appends as
        possible: one publisher's bad batch must not fail the others.

        After a plain error nothing of the shared append was stored, so each
        publisher's batch is appended again on its own. After
        `PublishOutcomeUnknown` the shared append may have been stored: each
        publisher gets the error, narrowed to its own event ids.
        """
        while self._pending:
            batch, self._pending = self._pending, []
            records = [record for pending in batch for record in pending.records]
            try:
                self._accepted(records, await store.append(records))
            except PublishOutcomeUnknown as exc:
                for pending in batch:
                    pending.error = exc.narrowed([record.event_id for record in pending.records])
            except Exception as exc:
                if len(batch) == 1:
                    batch[0].error = exc
                else:
                    for pending in batch:
                        try:
                            self._accepted(pending.records, await store.append(pending.records))
                        except Exception as single_exc:
                            pending.error = single_exc
            for pending in batch:
                pending.done.set()

    def _set_at_once(self, allowed: bool) -> None:
        now = self._now = self._immediate if allowed else None
        self._entry_now = None if now is None else now.append_entry

    # -- accepted ------------------------------------------------------------------

    def _accepted(self, records: Sequence[Record], already: Collection[int]) -> None:
        """Records are stored: move the head, count and log the append, and
        offer each record to the inboxes its class routes to; except those at
        the positions ``already``, which the store held before (and which
        were routed when first stored)."""
        if already:
            records = [record for index, record in enumerate(records) if index not in already]
            if not records:
                return
        last = records[-1].seq
        self._head = last
        self._published += len(records)
        if self._log_publishes:
            _log_published(records[0].seq, last, records[0].type)
        routes = self._routes
        for record in records:
            offer(routes[type(record.decoded)].targets, record)


class _BlockHeld(HeldTransaction):
    """The connection of a `Publisher.transaction` block, which the store
    checked when the block began (the driver's, under a SQLAlchemy object)."""

    __slots__ = ()


class _TransactionBlock:
    """What `Publisher.transaction` returns: begins the transaction on entry,
    commits it on a normal exit and rolls it back on an exception (which
    propagates). A class rather than ``@asynccontextmanager``, whose
    generator's machinery cost each block about 1 µs (on SQLite, with
    commits not synced, a transaction that publishes one event takes 44)."""

    __slots__ = ("_connection", "_held", "_opened", "_publisher", "_token")

    _held: HeldTransaction
    _opened: OpenTransaction
    _token: Token[HeldTransaction | None]

    def __init__(self, publisher: Publisher, connection: object) -> None:
        self._publisher = publisher
        self._connection = connection

    async def __aenter__(self) -> Transaction:
        held, self._opened, transaction = await self._publisher._begin_block(self._connection)
        self._held = held
        self._token = open_transaction.set(held)
        return transaction

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        try:
            if exc_type is None:
                await self._opened.commit()  # both run to their end, cancelled or not (see OpenTransaction)
            else:
                await self._opened.rollback()
        finally:
            open_transaction.reset(self._token)
        if exc_type is None:
            self._publisher._block_committed(self._held)


class _Pending:
    """Records waiting for the append in flight to finish."""

    __slots__ = ("done", "error", "records")

    def __init__(self, records: Sequence[Record]) -> None:
        self.records = records
        self.done = anyio.Event()
        self.error: BaseException | None = None


def _is_sqlalchemy(connection: object) -> bool:
    """Whether ``connection`` is a SQLAlchemy object (told by its class's module:
    SQLAlchemy, an optional extra, is imported only to handle one, in `eventbus._sqlalchemy`)."""
    cls = type(connection)
    known = _SQLALCHEMY_CLASSES.get(cls)
    if known is None:
        known = _SQLALCHEMY_CLASSES[cls] = any(base.__module__.startswith("sqlalchemy.") for base in cls.__mro__)
    return known


_SQLALCHEMY_CLASSES: dict[type, bool] = {}
"""`_is_sqlalchemy` of each class of connection seen, worked out once per class
(the walk of its bases cost a transactional publish 0.6 µs)."""


def _not_a_uuid(value: object) -> str:
    """What a `TypeError` says of an event id that is not a `UUID`."""
    return f"an event_id must be a UUID, got {type(value).__name__} {value!r}"


def _encode_ahead(records: Sequence[Record]) -> None:
    """Make the JSON of records that wait for the append in flight, while that
    append waits on the database.

    A persistent store writes each record's `Record.data`, which the record
    keeps once made, so the append that takes these records finds it made
    instead of making it while the database waits for it. ``publish_many``
    from four publishers on PostgreSQL: 122 000 to 126 000 events/s without,
    132 000 to 135 000 with; on SQLite, whose writer thread made it, 157 000
    to 160 000 without and 159 000 to 165 000 with. An event that does not
    encode is left to that append, which reports it as it always has.
    """
    for record in records:
        try:
            _ = record.data
        except (TypeError, ValueError):
            return


def _log_published(first_seq: int, last_seq: int, type_name: str) -> None:
    """Log an append of consecutive seqs (``type_name``: the first one's type)."""
    logger.debug("published", seq=first_seq, type=type_name, count=last_seq - first_seq + 1, last_seq=last_seq)


def _checked_headers(headers: Mapping[str, str]) -> Mapping[str, str]:
    """``headers`` as a read-only copy; `TypeError` unless it maps str to str."""
    if not isinstance(headers, Mapping):
        raise TypeError(f"headers must be a mapping of str to str, got {type(headers).__name__}")
    copied = dict(headers)
    for name, value in copied.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError(f"headers must map str to str, got {name!r}: {value!r}")
    return MappingProxyType(copied)
