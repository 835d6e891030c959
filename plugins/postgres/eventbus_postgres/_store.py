"""`PostgresStore`: the durable store that several processes share."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import Awaitable, Callable, Collection, Coroutine, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import timedelta
from typing import Any, Concatenate, ParamSpec, TypeVar
from uuid import UUID

import anyio
import asyncpg

from eventbus.asyncio_runner import Runner, start_runner
from eventbus.deadletters import DeadLetter
from eventbus.exceptions import PublishOutcomeUnknown, StoreError
from eventbus.plugins import logger
from eventbus.record import Record
from eventbus.store import (
    DEFAULT_PAGE_SIZE,
    CompactionStep,
    CompactResult,
    HistoryNeed,
    Hold,
    LeaseFence,
    Retention,
    StoreFeatures,
    already_stored,
    append_seqs,
    check_lease_ttl,
    check_letter_ids,
    check_read_arguments,
    compact_by_hand,
    history_truncated,
    lease_lost,
    needed_hold,
)
from eventbus.store.codec import MAX_SEQ, letter_values, letters_from_rows, record_values, records_from_typed_rows

from ._listener import AppendListener
from ._options import LISTENER_SUFFIX, PostgresOptions, PostgresUrl
from ._pool import DRIVER_ERRORS, PoolResets, definite, give_back, pooled, unsent
from ._projections import PostgresProjection, begin_projection, lock_checkpoint
from ._read_ahead import MIN_LIMIT, PageKey, ReadAhead
from ._schema import migrate, quoted
from ._statements import EVENT_ID_COLUMN, LAYOUT, Statements, columns
from ._transactions import (
    IDENTITY,
    PostgresTransaction,
    StoreIdentity,
    asyncpg_connection,
    check_identity,
    check_library,
    known_identity,
    remember_identity,
)

__all__ = ["PostgresStore"]

P = ParamSpec("P")
T = TypeVar("T")


CLOSE_TIMEOUT = 10.0
"""Seconds closing the store waits for its pool to close gracefully."""

STEP_RECORDS = 10_000
"""A background compaction step runs after this many records appended by this
store, even before ``compact_interval`` has passed, so each step is small."""
STEP_ROWS = 50_000
"""The most seqs one background step removes; a backlog goes over several steps."""
HAND_ROWS = 100_000
"""Seqs per transaction when compacting by hand."""

_SETTLE_FIRST_DELAY = 0.05
_SETTLE_MAX_DELAY = 1.0
"""Seconds between tries to find out what became of an append whose connection was lost."""


_ConnectAside = Callable[[float], Awaitable["asyncpg.Connection[Any]"]]
"""Opens a connection outside the pool within the given seconds."""


def _event_ids(rows: list[tuple[Any, ...]]) -> list[str]:
    """The event ids of ``record_values`` rows: text, 32 hex digits (see `LAYOUT`)."""
    return [row[EVENT_ID_COLUMN] for row in rows]


class _NotStored(Exception):
    """Settled: the append whose connection was lost stored nothing.

    Attributes:
        lost: the driver's error that lost the connection.
    """

    def __init__(self, lost: Exception) -> None:
        super().__init__(repr(lost))
        self.lost = lost


class _Lost(Exception):
    """A statement failed on the connection of server session ``pid`` other than
    by the server refusing it (see `definite`): what became of it is to be
    found out (`_Connections._settle`).

    Attributes:
        pid: the lost connection's server session.
        error: the driver's error.
    """

    def __init__(self, pid: int, error: Exception) -> None:
        super().__init__(repr(error))
        self.pid = pid
        self.error = error


def _losing(work: Callable[[Any], Awaitable[T]]) -> Callable[[Any], Awaitable[T]]:
    """``work`` with a failure whose outcome is unknown raised as `_Lost`."""

    async def attempt(conn: Any) -> T:
        pid: int = conn.get_server_pid()
        try:
            return await work(conn)
        except Exception as exc:
            if definite(exc) or unsent(exc):
                raise
            raise _Lost(pid, exc) from exc

    return attempt


class _Connections:
    """What an open store holds, living on the runner's loop: the pool and the append listener.

    The store calls these methods through its runner.
    """

    def __init__(
        self,
        pool: asyncpg.Pool[Any],
        resets: PoolResets,
        listener: AppendListener,
        connect: _ConnectAside,
        where: str,
    ) -> None:
        self.pool = pool
        self.resets = resets
        """The pool's ``reset=``, told which connections are lent to projections."""
        self.listener = listener
        self.connect = connect
        """Opens a connection outside the pool, for settling a lost append."""
        self.where = where
        """The store's URL, password hidden, for log lines."""
        self.read_ahead = ReadAhead()

    async def append(
        self, sql: Statements, rows: list[tuple[Any, ...]], outcome_timeout: float
    ) -> tuple[list[int], list[int]]:
        """Append ``rows`` (``record_values``); the seq of each and the positions
        of those whose event id was stored already (see `Store.append`).

        First in one statement, as if every id were new; when the unique index
        refuses that, again in a transaction that takes the head's lock and
        looks the ids up first. When the connection is lost on the way, the
        outcome is settled (`_settle`) before this answers.
        """
        statement, args = sql.appending(rows)

        async def attempt(conn: Any) -> int | None:
            """The first seq; None when an id is stored already, or repeated in the batch."""
            try:
                first: int = await conn.fetchval(statement, *args)
            except asyncpg.UniqueViolationError:
                return None
            return first

        try:
            first = await pooled(self.pool, _losing(attempt))
        except _Lost as lost:
            ids = _event_ids(rows)
            return await self._settle(sql, lost.pid, ids, ids, outcome_timeout, lost.error), []
        if first is None:
            return await self._append_looked_up(sql, rows, outcome_timeout)
        return list(range(first, first + len(rows))), []

    async def _append_looked_up(
        self, sql: Statements, rows: list[tuple[Any, ...]], outcome_timeout: float
    ) -> tuple[list[int], list[int]]:
        """Append the rows whose event ids are new, in one transaction holding the head's lock."""
        ids = _event_ids(rows)
        new_ids = ids  # until the lookup says which are new
        already: list[int] | None = None

        async def attempt(conn: Any) -> tuple[list[int], list[int]]:
            nonlocal new_ids, already
            async with conn.transaction():
                last: int = await conn.fetchval(sql.lock_head)
                stored = dict(await conn.fetch(sql.find_event_ids, list(set(ids))))
                seqs = append_seqs(ids, stored, last)
                already = already_stored(seqs, last)
                new = [row for index, row in enumerate(rows) if index not in already]
                new_ids = _event_ids(new)
                if new:
                    statement, args = sql.appending(new)
                    await conn.fetchval(statement, *args)
            return seqs, already

        try:
            return await pooled(self.pool, _losing(attempt))
        except _Lost as lost:
            seqs = await self._settle(sql, lost.pid, ids, new_ids, outcome_timeout, lost.error)
        # lost before the lookup, nothing was appended: what is stored was stored before
        return seqs, list(range(len(ids))) if already is None else already

    async def _settle(
        self,
        sql: Statements,
        pid: int,
        ids: list[str],
        appended: list[str],
        outcome_timeout: float,
        lost: Exception,
    ) -> list[int]:
        """What became of an append whose connection (server session ``pid``)
        was lost: the stored seq of each of ``ids`` if the ids it was
        ``appended`` under are all stored; `_NotStored` if one is not.

        It first waits for the server to be done with the lost session (gone,
        or idle: a statement that reached the server has committed or rolled
        back by then), so that what the lookup finds is final. When that
        cannot be seen within ``outcome_timeout`` (the server unreachable,
        the session still busy), raises `PublishOutcomeUnknown`.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + outcome_timeout
        delay = _SETTLE_FIRST_DELAY
        problem: BaseException = lost
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise PublishOutcomeUnknown(
                    f"the connection was lost while {len(ids)} event(s) were being committed "
                    f"({type(lost).__name__}: {lost}), and within outcome_timeout={outcome_timeout}s "
                    f"it could not be told whether they were stored ({type(problem).__name__}: {problem}); "
                    "publishing them again with their event ids is safe",
                    event_ids=[UUID(hex=event_id) for event_id in ids],
                ) from lost
            try:
                stored = await self._look_up_after(sql, pid, ids, remaining)
            except DRIVER_ERRORS as exc:
                problem = exc
            else:
                if stored is not None:
                    committed = all(event_id in stored for event_id in appended)
                    logger.warning(
                        "the connection was lost while an append committed; found out what became of it",
                        store=self.where,
                        events=len(ids),
                        stored=committed,
                        error=repr(lost),
                    )
                    if not committed:
                        raise _NotStored(lost)
                    return [stored[event_id] for event_id in ids]
                problem = TimeoutError(f"the lost session (pid {pid}) is still busy on the server")
            await asyncio.sleep(min(delay, max(deadline - loop.time(), 0)))
            delay = min(delay * 2, _SETTLE_MAX_DELAY)

    async def _look_up_after(self, sql: Statements, pid: int, ids: list[str], timeout: float) -> dict[str, int] | None:
        """The stored seqs of those of ``ids`` that are stored, once the server
        is done with session ``pid``; None while it is still busy.

        On a connection of its own, closed afterwards, not a pooled one: a
        pool whose connections were just lost can hold this wait up without
        bound, and every step here is bounded by ``timeout``.
        """
        conn = await self.connect(timeout)
        try:
            if await conn.fetchval(sql.session_busy, pid, timeout=timeout):
                return None
            return dict(await conn.fetch(sql.find_event_ids, list(set(ids)), timeout=timeout))
        finally:
            conn.terminate()

    async def begin_projection(self) -> tuple[Any, Any]:
        """A pooled connection with a transaction begun on it, for a projection's delivery."""
        conn, transaction = await begin_projection(self.pool, self.give_back)
        self.resets.lend(conn)
        return conn, transaction

    async def give_back(self, conn: Any) -> None:
        """Release a connection `begin_projection` lent, without raising (see `give_back`)."""
        await give_back(self.pool, conn)

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        """Rows of ``query`` run on a pooled connection."""
        rows: list[asyncpg.Record] = await pooled(self.pool, lambda conn: conn.fetch(query, *args))
        return rows

    async def fetchval(self, query: str, *args: Any) -> Any:
        """The first value of ``query`` run on a pooled connection."""
        return await pooled(self.pool, lambda conn: conn.fetchval(query, *args))

    async def execute(self, query: str, *args: Any) -> None:
        """Run ``query`` on a pooled connection."""
        await pooled(self.pool, lambda conn: conn.execute(query, *args))

    async def read_page(
        self, sql: Statements, from_seq: int, upper: int, limit: int, types: list[str] | None
    ) -> tuple[list[asyncpg.Record], int | None]:
        """Rows from ``from_seq``, and ``first_seq`` read afterwards unless the rows begin at ``from_seq``.

        Compaction deletes a prefix and moves ``first_seq`` in one
        transaction, so rows that begin at ``from_seq`` are whole; otherwise a
        ``first_seq`` above ``from_seq`` means the records asked for are gone.
        After a full page the next one is read ahead (see `ReadAhead`).
        """
        key = (from_seq, upper, limit, None if types is None else tuple(types))
        rows = None
        ahead = self.read_ahead.take(key)
        if ahead is not None:
            with suppress(*DRIVER_ERRORS):  # read again below, which reports its own error
                rows = await ahead
            if rows is not None and len(rows) < limit:
                rows = None  # a short page may have grown since
        if rows is None:
            rows = await self._rows(sql, key)
        if len(rows) == limit >= MIN_LIMIT and rows[-1][0] < upper:
            after = (rows[-1][0] + 1, upper, limit, key[3])
            await self.read_ahead.start(after, lambda: self._rows(sql, after))
        if rows and rows[0][0] == from_seq:
            return rows, None
        return rows, await self.fetchval(sql.first_seq)

    async def _rows(self, sql: Statements, key: PageKey) -> list[asyncpg.Record]:
        from_seq, upper, limit, types = key
        if types is None:
            return await self.fetch(sql.read, from_seq, upper, limit)
        return await self.fetch(sql.read_types, from_seq, upper, limit, list(types))

    async def compact(self, sql: Statements, step: CompactionStep) -> tuple[CompactResult, bool]:
        """One compaction step in one transaction; also whether ``max_rows`` left more to remove."""
        return await pooled(self.pool, lambda conn: self._compact_on(conn, sql, step))

    @staticmethod
    async def _compact_on(conn: Any, sql: Statements, step: CompactionStep) -> tuple[CompactResult, bool]:
        async with conn.transaction():
            first: int = await conn.fetchval(sql.lock_first_seq)
            last: int = await conn.fetchval(sql.head)
            first_young: int | None = None
            threshold = step.young_threshold_ns
            if threshold is not None:
                first_young = await conn.fetchval(sql.first_young, first, step.upper(first, last), threshold)
            holds = []
            checkpoint = await conn.fetchrow(sql.lowest_checkpoint)
            if checkpoint is not None:
                holds.append(Hold.checkpoint(checkpoint[0], checkpoint[1]))
            letter = await conn.fetchrow(sql.oldest_dead_letter)
            if letter is not None:
                holds.append(Hold.dead_letter(letter[0], letter[1]))
            bound, held_by, more = step.decide(first, last, first_young, holds)
            removed: int = await conn.fetchval(sql.compact, bound) if bound > first else 0
        return CompactResult(removed=removed, first_seq=bound, held_by=held_by), more

    async def wait(self, after_seq: int) -> None:
        """Wait for an append past ``after_seq`` through the listener."""
        await self.listener.wait(after_seq)

    async def close(self) -> None:
        """Stop listening and close the pool; connections it cannot close
        within `CLOSE_TIMEOUT` (one asyncpg still counts as lent after a
        connection was lost) are terminated, so closing never hangs."""
        await self.listener.close()
        await self.read_ahead.close()
        try:
            await asyncio.wait_for(self.pool.close(), CLOSE_TIMEOUT)
        except TimeoutError:
            logger.warning("closing the pool took too long; its connections were terminated", store=self.where)
            self.pool.terminate()


class PostgresStore:
    """Keeps records, checkpoints and dead letters in PostgreSQL, through asyncpg.

    ```python
    bus = EventBus(store="postgresql://app@db:5432/events?schema=billing")
    store = PostgresStore("postgresql://app@db:5432/events", schema="billing", max_pool_size=4)
    ```

    Seqs are gapless and assigned in commit order, so a reader never sees seq
    N+1 before N, and another process sharing the database tails appends
    live through LISTEN/NOTIFY. Options come from keywords or from the URL's
    query string (keywords win); see `PostgresOptions`. Runs on asyncio and on
    trio (there through a private asyncio loop in a thread the store owns).

    ``create=False`` opens only an existing store: a schema without the
    store's tables is then an error naming it, and nothing is created (what
    read-only tools want).

    A bad option, in the URL's query string or as a keyword, is a
    `ValueError` naming it (and the URL, its password hidden), as for SQLite.

    With ``retention=`` (see `Retention`) the store compacts while it is
    open: after every `STEP_RECORDS` records it appended, or
    ``compact_interval`` seconds, a short transaction removes the oldest
    records the policy lets go (never one at or above a durable checkpoint,
    one a dead letter refers to, or one the running bus still needs);
    PostgreSQL's autovacuum then reuses the space. `compact` does the same
    by hand. Compactions in several processes take turns on one row lock.

    The application may publish inside its own transaction on an asyncpg
    connection to the same database (``bus.publish(..., transaction=conn)``,
    ``bus.transaction(conn)``; see `eventbus.store.Transactions`): the append
    takes the seq counter's row lock in that transaction and holds it until
    the transaction ends, so every other append to the schema waits for it,
    up to ``lock_timeout`` (see `PostgresOptions`).

    Attributes:
        url: the URL, password hidden (what error messages name).
        options: the resolved `PostgresOptions`.
        create: whether `open` creates a missing schema and its tables.
    """

    features = StoreFeatures(
        persistent=True, shared_between_processes=True, gapless=True, retention=True, transactions=True
    )

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        min_pool_size: int | None = None,
        max_pool_size: int | None = None,
        connect_timeout: float | None = None,
        lock_timeout: float | None = None,
        create: bool = True,
        retention: Retention | int | timedelta | None = None,
    ) -> None:
        parsed = PostgresUrl.parse(url)
        try:
            options = PostgresOptions.from_query(parsed.query)
        except ValueError as exc:
            raise ValueError(f"bad option in the PostgreSQL URL {parsed.display!r}: {exc}") from None
        overrides: dict[str, Any] = {
            "schema": schema,
            "min_pool_size": min_pool_size,
            "max_pool_size": max_pool_size,
            "connect_timeout": connect_timeout,
            "lock_timeout": lock_timeout,
            "retention": Retention.of(retention),
        }
        self.options = dataclasses.replace(
            options, **{name: value for name, value in overrides.items() if value is not None}
        )
        self.url = parsed.display
        self.create = create
        self._dsn = parsed.dsn
        self._application_name = parsed.application_name
        self._sql = Statements(self.options.schema)
        self._lent: set[Any] = set()
        """Pooled connections lent to projections' deliveries, until their transactions end."""
        self._lock_checkpoint = lock_checkpoint(quoted(self.options.schema))
        self._runner: Runner | None = None
        self._connections: _Connections | None = None
        self._first_seq = 1
        self._needed: HistoryNeed | None = None
        self._since_step = 0
        self._last_step = -math.inf
        self._compacting = False
        self._identity: StoreIdentity | None = None

    @classmethod
    def from_url(cls, url: str, **options: Any) -> PostgresStore:
        """The store for ``url`` (the ``eventbus.stores`` entry point); ``options`` as keywords."""
        return cls(url, **options)

    def __repr__(self) -> str:
        return f"PostgresStore({self.url!r}, schema={self.options.schema!r})"

    async def open(self) -> None:
        """Connect the pool and create or migrate the schema.

        With ``create=False`` a missing schema raises `StoreError` naming it
        and nothing is created.
        """
        if self._runner is not None:
            raise StoreError(f"{self!r} is already open")
        runner = start_runner("the PostgreSQL store", StoreError)
        try:
            with self._driver_errors("connect to"):
                self._connections = await runner.call(self._connect)
                self._first_seq = await runner.call(self._connections.fetchval, self._sql.first_seq)
                (identity,) = await runner.call(self._connections.fetch, IDENTITY, self._counter_table)
                self._identity = (identity[0], identity[1], identity[2])
        except BaseException:
            with anyio.CancelScope(shield=True):
                if self._connections is not None:
                    await runner.call(self._connections.close)
                    self._connections = None
                await runner.close()
            raise
        self._runner = runner
        self._since_step = 0
        self._last_step = -math.inf

    @property
    def _counter_table(self) -> str:
        """The schema's ``seq_counter`` table, quoted, for ``to_regclass``."""
        return f"{quoted(self.options.schema)}.seq_counter"

    async def check_connection(self, connection: object) -> None:
        """`TransactionError` unless ``connection`` is an asyncpg connection to
        this store's database, on its server, where its schema is, and the
        caller runs on asyncio (asyncpg's loop). Reads only, and only the first
        time this server session is checked (see `known_identity`). A
        connection the store lent to a projection's delivery is its own: it
        passes at once, on trio too (its statements go through the runner)."""
        conn = asyncpg_connection(self, connection)
        if conn in self._lent:
            return  # the store's own, lent to a projection: usable from trio too, through the runner
        check_library(self)
        expected = self._identity
        if self._runner is None or expected is None:
            raise StoreError(f"cannot publish in a transaction on {self!r}: the store is not open")
        table = self._counter_table
        found = known_identity(conn, table)
        if found is None:
            with self._driver_errors("publish in a transaction on"):
                row = await conn.fetchrow(IDENTITY, table)
            found = (row[0], row[1], row[2])
        check_identity(self, self.options.schema, found, expected)
        remember_identity(conn, table, found)

    def in_transaction(self, connection: object) -> bool:
        """Whether ``connection`` (an asyncpg connection) has a transaction open."""
        try:
            return bool(asyncpg_connection(self, connection).is_in_transaction())
        except asyncpg.InterfaceError:  # released to its pool, or closed
            return False

    async def begin(self, connection: object) -> PostgresTransaction:
        """Start asyncpg's transaction on ``connection`` (so that the
        application's own ``conn.transaction()`` blocks inside it nest as savepoints)."""
        transaction = asyncpg_connection(self, connection).transaction()
        with self._driver_errors("begin a transaction on"):
            await transaction.start()
        return PostgresTransaction(transaction, self._driver_errors)

    async def append_in(self, connection: object, records: Sequence[Record]) -> Collection[int]:
        """Append ``records`` inside the transaction open on ``connection``: lock
        the seq counter (held until that transaction ends), look the event ids
        up, insert the new ones; sets every record's seq. A repeated id never
        fails the application's transaction: it is looked up, not inserted.

        One statement does it all when its snapshot can tell that no id is
        stored (the usual case); when it cannot (an id it finds, another
        transaction's append committed while it waited for the lock, an id
        twice in the batch), the lock is taken, the ids looked up, the new
        records inserted, each in a statement of its own."""
        conn = asyncpg_connection(self, connection)
        try:
            rows = [record_values(record, LAYOUT) for record in records]
        except ValueError as exc:
            raise StoreError(f"cannot append to PostgreSQL at {self.url}: {exc}") from exc
        ids = _event_ids(rows)
        sql = self._sql
        runner = self._runner
        if runner is None:
            raise StoreError(f"cannot publish in a transaction on {self!r}: the store is not open")
        call = runner.call  # on asyncio the caller's own loop; under trio, a projection's connection's
        with self._driver_errors("publish in a transaction on"):
            first: int | None = None
            if len(set(ids)) == len(ids):
                statement, args = sql.appending(rows, if_unseen=True)
                first = await call(conn.fetchval, statement, *args)
            if first is not None:
                seqs, already = list(range(first, first + len(rows))), []
            else:
                last: int = await call(conn.fetchval, sql.lock_head)
                stored = dict(await call(conn.fetch, sql.find_event_ids, list(set(ids))))
                seqs = append_seqs(ids, stored, last)
                already = already_stored(seqs, last)
                new = [row for index, row in enumerate(rows) if index not in already] if already else rows
                if new:
                    statement, args = sql.appending(new)
                    await call(conn.fetchval, statement, *args)
        for record, seq in zip(records, seqs, strict=True):
            record.seq = seq
        return already

    async def execute_in(self, connection: object, sql: str, args: Sequence[object]) -> None:
        """Run one of the application's statements (``$1`` placeholders) on
        ``connection`` (an asyncpg one), on the store's runner, so that a
        projection's ``tx.execute`` works under trio too."""
        conn = asyncpg_connection(self, connection)
        runner = self._runner
        if runner is None:
            raise StoreError(f"cannot run a statement in a transaction on {self!r}: the store is not open")
        with self._driver_errors("run a statement in a transaction on"):
            await runner.call(conn.execute, sql, *args)

    async def begin_projection(self) -> PostgresProjection:
        """A transaction on a pooled connection, for one delivery of a projection
        (see `eventbus_postgres._projections`)."""
        runner, connections = self._runner, self._connections
        if runner is None or connections is None:
            raise StoreError(f"cannot begin a projection's transaction on {self!r}: the store is not open")
        conn, transaction = await self._run("begin a projection's transaction on", _Connections.begin_projection)
        self._lent.add(conn)

        async def give_back(lent: Any) -> None:
            self._lent.discard(lent)
            await connections.give_back(lent)

        return PostgresProjection(
            conn,
            transaction,
            give_back,
            runner,
            self._sql,
            self._lock_checkpoint,
            self._driver_errors,
            f"PostgreSQL at {self.url} (schema {self.options.schema!r})",
        )

    @property
    def first_seq(self) -> int:
        """The first seq the schema still holds, as this process last saw it (1 until a compaction)."""
        return self._first_seq

    async def close(self) -> None:
        """Close the pool and the listening connection; a closed store may be opened again.

        Forgets the `HistoryNeed` registered with `hold_history`.
        """
        self._needed = None
        runner, connections = self._runner, self._connections
        self._runner = self._connections = None
        if runner is None:
            return
        with anyio.CancelScope(shield=True):
            try:
                if connections is not None:
                    with self._driver_errors("disconnect from"):
                        await runner.call(connections.close)
            finally:
                await runner.close()

    async def append(self, records: Sequence[Record]) -> Collection[int]:
        """Store ``records`` and number them, in one statement unless an event id
        is stored already; shielded from cancellation.

        Returns the positions of the records whose event id was stored
        already (see `Store.append`). When the connection is lost while the
        append commits, the store finds out whether it was stored (it waits
        for the server to be done with the lost session, then looks the ids
        up) before it answers: the seqs, or `StoreError` when nothing was
        stored. Only when it cannot tell within ``outcome_timeout`` does it
        raise `PublishOutcomeUnknown`.
        """
        if not records:
            return ()
        try:
            rows = [record_values(record, LAYOUT) for record in records]
        except ValueError as exc:
            raise StoreError(f"cannot append to PostgreSQL at {self.url}: {exc}") from exc
        with anyio.CancelScope(shield=True):
            try:
                seqs, already = await self._run(
                    "append to", _Connections.append, self._sql, rows, self.options.outcome_timeout
                )
            except _NotStored as exc:
                raise StoreError(
                    f"cannot append to PostgreSQL at {self.url} (schema {self.options.schema!r}): the connection "
                    f"was lost while {len(records)} event(s) were being committed, and they were not stored"
                ) from exc.lost
            except StoreError as exc:
                if not isinstance(exc.__cause__, asyncpg.LockNotAvailableError):
                    raise
                raise StoreError(
                    f"cannot append to PostgreSQL at {self.url} (schema {self.options.schema!r}): waited "
                    f"lock_timeout={self.options.lock_timeout}s for the seq counter's lock, which a transaction "
                    "that published (transaction=conn) holds until it ends; nothing was stored. A publish the "
                    "transaction itself waits for can never get it: publish in the transaction, or after it"
                ) from exc.__cause__
            for record, seq in zip(records, seqs, strict=True):
                record.seq = seq
            self._since_step += len(records) - len(already)
            if self._compaction_due():
                await self._step()
        return already

    def _compaction_due(self) -> bool:
        retention = self.options.retention
        if retention is None or not retention.limited or self._compacting:
            return False
        return self._since_step >= STEP_RECORDS or time.monotonic() - self._last_step >= retention.compact_interval

    async def _step(self) -> None:
        """One background compaction step; a failure is logged, never raised."""
        retention = self.options.retention
        assert retention is not None
        self._since_step = 0
        self._last_step = time.monotonic()
        self._compacting = True
        try:
            step = CompactionStep(retention, time.time_ns(), needed_hold(self._needed), STEP_ROWS)
            result, more = await self._run("compact", _Connections.compact, self._sql, step)
        except StoreError as exc:
            logger.warning("background compaction failed", store=self.url, error=str(exc))
            return
        finally:
            self._compacting = False
        self._first_seq = max(self._first_seq, result.first_seq)
        if more:
            self._last_step = -math.inf

    async def read(
        self,
        from_seq: int = 1,
        *,
        to_seq: int | None = None,
        types: Collection[str] | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
    ) -> Sequence[Record]:
        """Up to ``limit`` records from ``from_seq`` through ``to_seq``, in seq order."""
        check_read_arguments(from_seq, limit)
        upper = MAX_SEQ if to_seq is None else min(to_seq, MAX_SEQ)
        if upper < from_seq:
            return []
        names = None if types is None else list(types)
        rows, first = await self._run("read from", _Connections.read_page, self._sql, from_seq, upper, limit, names)
        if first is not None:
            self._first_seq = max(self._first_seq, first)
            if from_seq < first:
                raise history_truncated(f"PostgreSQL at {self.url} (schema {self.options.schema!r})", from_seq, first)
        return records_from_typed_rows(rows)

    async def head(self) -> int:
        """The greatest seq ever assigned; deleted rows do not lower it."""
        head: int = await self._run("read the head from", _Connections.fetchval, self._sql.head)
        return head

    async def compact(self, *, keep: int | None = None, keep_age: timedelta | None = None) -> CompactResult:
        """Remove old history now, in transactions of `HAND_ROWS` seqs.

        ``keep`` / ``keep_age`` replace the store's ``retention`` for this
        call; with neither, the store's own applies (nothing is removed
        without one). Never removes a record at or above a durable
        checkpoint, one a dead letter refers to, or one the registered
        `HistoryNeed` still needs. The space goes back to PostgreSQL's
        autovacuum (``VACUUM`` the table to see it at once).
        """
        own = keep is None and keep_age is None
        policy = self.options.retention if own else Retention(keep=keep, keep_age=keep_age)

        async def step(plan: CompactionStep) -> tuple[CompactResult, bool]:
            result, more = await self._run("compact", _Connections.compact, self._sql, plan)
            self._first_seq = max(self._first_seq, result.first_seq)
            return result, more

        return await compact_by_hand(policy, self._first_seq, self._needed, HAND_ROWS, step)

    def hold_history(self, needed: HistoryNeed | None) -> None:
        """Register what the running bus still needs (see `Store.hold_history`); closing forgets it."""
        self._needed = needed

    async def wait_for_append(self, after_seq: int) -> None:
        """Return once a seq greater than ``after_seq`` is committed (by any process).

        May return early when the listening connection is lost.
        """
        await self._run("wait for appends on", _Connections.wait, after_seq)

    async def load_checkpoint(self, name: str) -> int | None:
        """The position saved under ``name``, or ``None``."""
        position: int | None = await self._run(
            "load a checkpoint from", _Connections.fetchval, self._sql.load_checkpoint, name
        )
        return position

    async def save_checkpoints(self, positions: Mapping[str, int], *, fence: LeaseFence | None = None) -> None:
        """Save several named positions in one statement; with a ``fence``,
        only while its lease still carries its token (`LeaseLost` otherwise)."""
        if not positions:
            return
        names, values = list(positions), list(positions.values())
        if fence is None:
            await self._run("save checkpoints to", _Connections.execute, self._sql.save_checkpoints, names, values)
            return
        saved = await self._run(
            "save checkpoints to",
            _Connections.fetchval,
            self._sql.save_fenced_checkpoints,
            names,
            values,
            fence.name,
            fence.token,
        )
        if saved is not True:
            raise lease_lost(fence, f"PostgreSQL at {self.url} (schema {self.options.schema!r})")

    async def checkpoints(self) -> Mapping[str, int]:
        """Every saved position by name."""
        rows = await self._run("read checkpoints from", _Connections.fetch, self._sql.checkpoints)
        return {row[0]: row[1] for row in rows}

    async def acquire_lease(self, name: str, holder: str, ttl: float) -> int | None:
        """Take or renew the lease on ``name`` (see `Store.acquire_lease`); expiry on the server's clock."""
        check_lease_ttl(ttl)
        token: int | None = await self._run(
            "acquire a lease in", _Connections.fetchval, self._sql.acquire_lease, name, holder, float(ttl)
        )
        return token

    async def release_lease(self, name: str, holder: str) -> None:
        """Give up ``holder``'s lease on ``name``, if it holds it."""
        await self._run("release a lease in", _Connections.execute, self._sql.release_lease, name, holder)

    async def add_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        """Store dead letters, each with its whole record, in one statement."""
        if letters:
            try:
                values = columns(letter_values(letter, LAYOUT) for letter in letters)
            except ValueError as exc:
                raise StoreError(f"cannot add dead letters to PostgreSQL at {self.url}: {exc}") from exc
            await self._run("add dead letters to", _Connections.execute, self._sql.add_dead_letters, *values)

    async def dead_letters(self, subscription: str | None = None) -> Sequence[DeadLetter]:
        """Stored dead letters, oldest first, optionally of one subscription."""
        if subscription is None:
            rows = await self._run("read dead letters from", _Connections.fetch, self._sql.dead_letters)
        else:
            rows = await self._run(
                "read dead letters from", _Connections.fetch, self._sql.dead_letters_of, subscription
            )
        return letters_from_rows(rows)

    async def delete_dead_letters(self, ids: Collection[UUID]) -> int:
        """Delete the dead letters with these ids; returns how many existed."""
        wanted = check_letter_ids(ids)
        if not wanted:
            return 0
        deleted: int = await self._run(
            "delete dead letters from", _Connections.fetchval, self._sql.delete_dead_letters, list(wanted)
        )
        return deleted

    async def _run(
        self,
        action: str,
        fn: Callable[Concatenate[_Connections, P], Coroutine[Any, Any, T]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """``fn(connections, ...)`` on the runner's loop, driver errors turned into `StoreError`."""
        runner, connections = self._runner, self._connections
        if runner is None or connections is None:
            raise StoreError(f"cannot {action} {self!r}: the store is not open")
        with self._driver_errors(action):
            return await runner.call(fn, connections, *args, **kwargs)

    @contextmanager
    def _driver_errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except DRIVER_ERRORS as exc:
            raise StoreError(
                f"cannot {action} PostgreSQL at {self.url} (schema {self.options.schema!r}): {exc}"
            ) from exc

    async def _connect(self) -> _Connections:
        """Runs on the runner's loop: the pool, the schema, the listener."""
        options = self.options
        resets = PoolResets()
        pool = await asyncpg.create_pool(
            self._dsn,
            reset=resets.reset,
            min_size=options.min_pool_size,
            max_size=options.max_pool_size,
            timeout=options.connect_timeout,
            server_settings={
                "application_name": self._application_name,
                "lock_timeout": f"{round(options.lock_timeout * 1000)}ms",
            },
        )
        try:
            async with pool.acquire() as conn:
                await migrate(conn, options.schema, self.url, create=self.create)
        except BaseException:
            pool.terminate()
            raise
        listener = AppendListener(self._connect_listener, self._sql.channel, self._sql.head)
        return _Connections(pool, resets, listener, self._connect_aside, self.url)

    async def _connect_listener(self) -> asyncpg.Connection[Any]:
        return await self._connect_aside(self.options.connect_timeout, LISTENER_SUFFIX)

    async def _connect_aside(self, timeout: float, suffix: str = "") -> asyncpg.Connection[Any]:
        """A connection outside the pool, within ``timeout`` (and ``connect_timeout``)."""
        return await asyncpg.connect(
            self._dsn,
            timeout=min(timeout, self.options.connect_timeout),
            server_settings={"application_name": self._application_name + suffix},
        )
