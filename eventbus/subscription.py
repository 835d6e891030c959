"""`Subscription`: one handler's queue, its workers, catch-up and checkpoints.

Each subscription owns a bounded queue of records and one or more worker
tasks that take from it. A subscription is either *live* (the bus appends
each routed record to its queue) or *behind* (it reads records back from the
store, page by page, while the bus keeps buffering what is published
meanwhile). It starts behind when it has ``from_seq`` or ``durable=True``,
and falls behind when its queue overflows under the ``"spill"`` policy.

Switching from behind to live without a gap or a duplicate (the shape of
EventStoreDB's catch-up subscriptions):

1. While behind, records the bus routes here are still buffered in the queue
   as long as there is room; when there is none the record is not kept but
   the subscription notes that it *missed* one.
2. The worker reads the store from ``next_seq`` (the first seq it has not
   covered yet) and delivers the page, then drops buffered records below the
   new ``next_seq``: they were just delivered from the store.
3. When a read comes back empty and nothing was missed since that read
   began, every record above ``next_seq`` was published after the read
   started and so sits in the buffer, in order: the subscription turns live
   and goes on with the buffer. If something was missed, it reads again.

A record appended before an empty read started would have been in that read,
and one appended after it is buffered or flagged as missed, so none falls
between the two. The bus routes records in seq order (one append in flight
at a time), which keeps the buffer ordered.

On a store that other processes append to (``shared_between_processes``), a
subscription that started from history never turns live: the live queue
only ever sees this bus's own events. It keeps *tailing* the store instead,
buffering nothing and sleeping in the store's ``wait_for_append`` between
reads, so it sees every process's events in seq order.
"""

from __future__ import annotations

import math
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

from ._context import current_record
from ._log import logger
from .event import Event, registry
from .handler import Handle, is_plain_async, make_handle
from .middleware.base import Middleware, chain
from .middleware.deadletter import dead_letter, fail
from .middleware.retry import retry
from .middleware.timeout import timeout
from .policies import BACKPRESSURE_POLICIES, Backpressure, Retry
from .record import Record
from .stats import SubscriptionStats
from .store.base import DEFAULT_PAGE_SIZE

if TYPE_CHECKING:
    from .bus import EventBus

__all__ = ["CHECKPOINT_EVERY", "CHECKPOINT_IDLE", "DEFAULT_MAX_PENDING", "Subscription", "SubscriptionOptions"]

DEFAULT_MAX_PENDING = 10_000
CHECKPOINT_EVERY = 1_000
"""A durable subscription saves its position after this many deliveries, when
it has run out of work for `CHECKPOINT_IDLE` seconds, and when it closes. After
a crash, at most this many deliveries are made again."""
CHECKPOINT_IDLE = 1.0
"""Seconds a durable subscription waits, out of work, before saving its
position: a trickle of events does not cost a store write each."""

_DROP_REPORT_INTERVAL = 1.0
_NEVER = sys.maxsize

Predicate = Callable[[Any], bool]


@dataclass(frozen=True)
class SubscriptionOptions:
    """Everything `EventBus.subscribe` accepts besides the type and handler,
    validated on construction. See `EventBus.subscribe` for each option."""

    name: str
    where: Predicate | Mapping[str, Any] | None = None
    retry: Retry | None = None
    timeout: float | None = None
    max_pending: int = DEFAULT_MAX_PENDING
    backpressure: Backpressure = "block"
    concurrency: int = 1
    key: Callable[[Any], Hashable] | None = None
    from_seq: int | None = None
    durable: bool = False
    in_thread: bool = False
    middleware: Sequence[Middleware] = field(default=())

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"subscription name must be a non-empty string, got {self.name!r}")
        if self.where is not None and not callable(self.where) and not isinstance(self.where, Mapping):
            raise TypeError(f"where= must be a predicate or a mapping of field -> value, got {self.where!r}")
        if self.retry is not None and not isinstance(self.retry, Retry):
            raise TypeError(f"retry= must be a Retry, got {self.retry!r}")
        if self.timeout is not None and not (_is_number(self.timeout) and 0 < self.timeout < math.inf):
            raise ValueError(f"timeout= must be a positive number of seconds, got {self.timeout!r}")
        if not _is_int(self.max_pending) or self.max_pending < 1:
            raise ValueError(f"max_pending= must be an int >= 1, got {self.max_pending!r}")
        if self.backpressure not in BACKPRESSURE_POLICIES:
            raise ValueError(f"backpressure= must be one of {sorted(BACKPRESSURE_POLICIES)}, got {self.backpressure!r}")
        if not _is_int(self.concurrency) or self.concurrency < 1:
            raise ValueError(f"concurrency= must be an int >= 1, got {self.concurrency!r}")
        if self.key is not None and not callable(self.key):
            raise TypeError(f"key= must be a function of the event, got {self.key!r}")
        if self.from_seq is not None and (not _is_int(self.from_seq) or self.from_seq < 1):
            raise ValueError(f"from_seq= must be an int >= 1, got {self.from_seq!r}")
        object.__setattr__(self, "middleware", tuple(self.middleware))


@dataclass
class Counters:
    """The live counters behind `SubscriptionStats`; middleware may add to them."""

    routed: int = 0
    finished: int = 0
    retried: int = 0
    dead_lettered: int = 0
    dropped: int = 0


class Subscription:
    """A handler registered on a bus, with its queue and workers.

    Returned by ``bus.subscribe(EventType, handler)`` and found in
    ``bus.subscriptions[name]``. ``close()`` (or ``await aclose()``)
    unsubscribes it.
    """

    def __init__(
        self,
        bus: EventBus,
        types: tuple[type[Event], ...],
        handler: Callable[..., Any],
        options: SubscriptionOptions,
    ) -> None:
        self.bus = bus
        self.types = types
        self.handler = handler
        self.options = options
        self.name = options.name
        self.counters = Counters()
        self._max_pending = options.max_pending
        self._queue: deque[Record] = deque()
        self._page: deque[Record] = deque()
        self._source = self._queue
        self._capacity = options.max_pending
        self._behind = options.from_seq is not None or options.durable
        if self._behind:
            # start from the store: what is routed here before the first read waits in the queue
            self._source = self._page
        # On a store other processes append to, a subscription that started
        # from history keeps reading the store (so it sees their events too)
        # instead of turning live: it buffers nothing.
        self._tailing = self._behind and bus.store.features.shared_between_processes
        if self._tailing:
            self._capacity = 0
        self._next_seq = options.from_seq or 1
        self._missed = False
        self._position = 0
        self._saved_position = 0
        self._idle_at = -1  # the position when the subscription last ran out of work
        self._idle_deadline = math.inf
        self._checkpoint_due = CHECKPOINT_EVERY if options.durable else _NEVER
        self._where = _predicate(options.where, types)
        self._rejected: dict[int, Exception] = {}
        self._workers = options.concurrency
        self._sleeping = 0
        self._parked = False
        self._refilling = False
        self._wakeup: anyio.Event | None = None
        self._room: anyio.Event | None = None
        self._idle: anyio.Event | None = None
        self._scope: anyio.CancelScope | None = None
        self._stopped: anyio.Event | None = None
        self._closed = False
        self._drops = _DropReport(self.name)
        self._busy_keys: dict[Hashable, deque[Record]] = {}
        self._outstanding: deque[int] = deque()
        self._finished_early: set[int] = set()

        plain = not (options.timeout or options.retry or bus.middleware or options.middleware)
        self._direct = handler if plain and self._where is None and is_plain_async(handler) else None
        inner = make_handle(handler, in_thread=options.in_thread)
        if options.timeout is not None:
            inner = timeout(options.timeout)(inner, self)
        if options.retry is not None:
            inner = retry(options.retry)(inner, self)
        inner = chain(inner, (*bus.middleware, *options.middleware), self)
        if self._where is not None or options.key is not None:
            inner = _raise_rejected(inner, self)
        self._inner: Handle = inner
        self._handle: Handle = dead_letter(inner, self)

    def __repr__(self) -> str:
        names = ", ".join(cls.__event_type__ for cls in self.types)
        return f"<Subscription {self.name!r} on {names}>"

    # -- public ------------------------------------------------------------------

    @property
    def position(self) -> int:
        """The greatest seq up to which every routed event is finished."""
        return self._position

    @property
    def closed(self) -> bool:
        """True once `close` (or `aclose`) has been called."""
        return self._closed

    def stats(self) -> SubscriptionStats:
        """A snapshot of this subscription's counters."""
        c = self.counters
        return SubscriptionStats(
            routed=c.routed,
            delivered=c.finished - c.dead_lettered,
            failed=c.retried + c.dead_lettered,
            retried=c.retried,
            dead_lettered=c.dead_lettered,
            dropped=c.dropped,
            pending=c.routed - c.finished - c.dropped,
            position=self._position,
            behind=self._behind,
        )

    def close(self) -> None:
        """Unsubscribe: route nothing more here and stop the workers.

        Events still queued are not delivered; a durable subscription saves
        its position on the way out and resumes from there next time.
        """
        if self._closed:
            return
        self._closed = True
        self.bus._unsubscribe(self)
        if self._scope is not None:
            self._scope.cancel()
        if self._room is not None:
            self._room.set()
        self._drops.flush()

    async def aclose(self) -> None:
        """`close`, then wait until the workers have stopped and the position is saved."""
        self.close()
        if self._stopped is not None:
            await self._stopped.wait()

    # -- called by the bus ---------------------------------------------------------

    def _offer(self, record: Record) -> None:
        """Take a record the bus routed here (the bus routes in seq order)."""
        if self._where is not None and not self._accepts(record):
            return
        queue = self._queue
        if len(queue) < self._capacity:
            queue.append(record)
            self.counters.routed += 1
            if self._parked:
                self._wake()
            return
        self._overflow(record)

    def _overflow(self, record: Record) -> None:
        if self._behind:
            self._missed = True
            if self._parked:
                self._wake()
            return
        policy = self.options.backpressure
        counters = self.counters
        if policy == "block":
            # publish waited for room before appending; a concurrent publisher
            # may have taken it since, so the queue briefly holds a few more.
            self._queue.append(record)
            counters.routed += 1
        elif policy == "drop_newest":
            counters.routed += 1
            counters.dropped += 1
            self._drops.dropped(record, policy)
        elif policy == "drop_oldest":
            oldest = self._queue.popleft()
            self._queue.append(record)
            counters.routed += 1
            counters.dropped += 1
            self._drops.dropped(oldest, policy)
        else:
            self._fall_behind(record.seq)
        if self._parked:
            self._wake()

    def _fall_behind(self, from_seq: int) -> None:
        """Spill: stop buffering, deliver what is queued, then read from the store."""
        self._behind = True
        self._missed = True
        self._next_seq = from_seq
        self._page, self._queue = self._queue, deque()
        self._source = self._page
        self._capacity = max(0, self._max_pending - len(self._page))
        logger.warning(
            "subscription fell behind, reading back from the store", subscription=self.name, from_seq=from_seq
        )

    def _wake(self) -> None:
        """Wake the parked workers (once: offers in a burst do not set it again)."""
        self._parked = False
        if self._wakeup is not None:
            self._wakeup.set()

    def _full(self) -> bool:
        return len(self._queue) >= self._capacity and not self._behind and not self._closed

    async def _wait_for_room(self) -> None:
        while self._full():
            if self._room is None:
                self._room = anyio.Event()
            await self._room.wait()

    def _is_idle(self) -> bool:
        if self._closed:
            return True
        if self._tailing and self._next_seq <= self.bus.head:
            return False
        return self._sleeping == self._workers and not self._queue and not self._page and not self._outstanding

    async def _wait_idle(self) -> None:
        while not self._is_idle():
            if self._idle is None:
                self._idle = anyio.Event()
            await self._idle.wait()

    async def _run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """The subscription's life: prepare, then run its workers until closed."""
        self._stopped = anyio.Event()
        self._wakeup = anyio.Event()
        try:
            with anyio.CancelScope() as scope:
                self._scope = scope
                if self._closed:
                    scope.cancel()
                task_status.started()
                await self._prepare()
                if self._workers == 1:
                    await self._work()
                else:
                    async with anyio.create_task_group() as workers:
                        for _ in range(self._workers):
                            workers.start_soon(self._work_concurrently)
        finally:
            with anyio.CancelScope(shield=True):
                await self._save_position()
            self._drops.flush()
            self._stopped.set()

    # -- workers -------------------------------------------------------------------

    async def _work(self) -> None:
        """The single worker: deliver in seq order, one at a time."""
        handle = self._handle
        direct = self._direct
        counters = self.counters
        set_current = current_record.set
        while True:
            source = self._source
            while source:
                record = source.popleft()
                if self._room is not None:
                    self._room.set()
                    self._room = None
                set_current(record)
                if direct is None:
                    await handle(record)
                else:
                    # the dead-letter step, inlined when nothing else wraps an async (event) handler
                    try:
                        await direct(record.event)
                    except Exception as exc:
                        await fail(self, record, exc)
                counters.finished += 1
                self._position = record.seq
                if counters.finished >= self._checkpoint_due:
                    await self._save_position()
            await self._refill()

    async def _work_concurrently(self) -> None:
        """One of ``concurrency`` workers; records with equal ``key`` stay in order."""
        key = self.options.key
        busy = self._busy_keys
        while True:
            source = self._source
            if not source:
                await self._refill()
                continue
            record = source.popleft()
            if self._room is not None:
                self._room.set()
                self._room = None
            self._outstanding.append(record.seq)
            if key is None:
                await self._deliver_tracked(record)
                continue
            try:
                record_key = key(record.event)
                waiting = busy.get(record_key)
            except Exception as exc:
                self._rejected[record.seq] = exc
                await self._deliver_tracked(record)
                continue
            if waiting is not None:
                waiting.append(record)
                continue
            waiting = busy[record_key] = deque()
            try:
                await self._deliver_tracked(record)
                while waiting:
                    await self._deliver_tracked(waiting.popleft())
            finally:
                del busy[record_key]

    async def _deliver_tracked(self, record: Record) -> None:
        current_record.set(record)
        await self._handle(record)
        self.counters.finished += 1
        self._finish(record.seq)
        if self.counters.finished >= self._checkpoint_due:
            await self._save_position()

    def _finish(self, seq: int) -> None:
        """Advance the position past every seq finished in order (concurrent workers)."""
        outstanding = self._outstanding
        if outstanding[0] != seq:
            self._finished_early.add(seq)
            return
        outstanding.popleft()
        position = seq
        early = self._finished_early
        while outstanding and outstanding[0] in early:
            position = outstanding.popleft()
            early.discard(position)
        self._position = position

    async def _refill(self) -> None:
        """Find more work: one step of reading the store when behind, or sleep until routed to.

        While one worker reads the store, the others sleep until it wakes them."""
        if self._behind and not self._refilling:
            self._refilling = True
            try:
                await self._catch_up()
            finally:
                self._refilling = False
            if self._parked:
                self._wake()
            return
        await self._sleep()

    async def _sleep(self, until: Callable[[], Awaitable[None]] | None = None) -> None:
        """Park this worker until routed to (or until ``until()`` returns);
        the last worker to park tells `drain` that the subscription is idle."""
        assert self._wakeup is not None
        if self._sleeping + 1 == self._workers and self._idle is not None and not self._outstanding:
            self._idle.set()
            self._idle = None
        wakeup = self._wakeup
        self._sleeping += 1
        try:
            if until is None:
                self._parked = True
                await self._wait_saving_when_idle(wakeup.wait)
            else:
                await self._wait_saving_when_idle(until)
        finally:
            self._sleeping -= 1
        if wakeup.is_set() and self._wakeup is wakeup:
            self._wakeup = anyio.Event()

    def _attach(self, head: int) -> None:
        """Called by the bus when the subscription joins a running bus (``head``
        is the newest seq then): a durable subscription without a checkpoint
        or ``from_seq`` starts with the events published after this moment."""
        if self._behind and self.options.from_seq is None:
            self._next_seq = head + 1

    async def _prepare(self) -> None:
        """A durable subscription resumes after its saved position, if it has
        one; otherwise it saves where it starts, so that a restart before its
        first delivery finishes resumes there and not at the newer head."""
        if self.options.durable:
            saved = await self.bus.store.load_checkpoint(self.name)
            if saved is not None:
                self._next_seq = saved + 1
                self._position = self._saved_position = saved
            else:
                self._position = self._next_seq - 1
                self._saved_position = -1  # nothing saved yet, not even 0
                await self._save_position()

    async def _catch_up(self) -> None:
        """One step of reading back from the store (see the module docstring)."""
        store = self.bus.store
        if not self._tailing and self.bus.head < self._next_seq - 1:
            # from_seq lies past the head: wait for the bus to publish up to it.
            self._prune()
            await self._sleep()
            return
        self._missed = False
        names = registry.names_for(self.types)
        # Everything up to this head is committed, so a read that comes back
        # short has covered it, even where the type filter skipped the last seqs.
        covered = self.bus.head
        # a page never holds more than max_pending records: memory stays bounded while behind
        limit = min(DEFAULT_PAGE_SIZE, self._max_pending)
        page = await store.read(self._next_seq, types=names, limit=limit)
        if len(page) < limit:
            self._next_seq = max(self._next_seq, covered + 1)
        if page:
            self._next_seq = max(self._next_seq, page[-1].seq + 1)
            self._prune()
            accepted = [record for record in page if self._where is None or self._accepts(record)]
            self.counters.routed += len(accepted)
            self._page.extend(accepted)
            self._source = self._page
            if not self._tailing:
                self._capacity = max(0, self._max_pending - len(self._page))
            return
        if self._missed:
            return
        if self._tailing:
            await self._sleep(lambda: store.wait_for_append(self._next_seq - 1))
            return
        self._behind = False
        self._capacity = self._max_pending
        self._prune()
        self._source = self._queue

    def _prune(self) -> None:
        """Drop buffered records that a store read has already covered."""
        queue = self._queue
        next_seq = self._next_seq
        while queue and queue[0].seq < next_seq:
            queue.popleft()
            self.counters.routed -= 1

    def _accepts(self, record: Record) -> bool:
        """Apply ``where=``; a predicate that raises sends the record to dead letters."""
        assert self._where is not None
        try:
            return bool(self._where(record.event))
        except Exception as exc:
            self._rejected[record.seq] = exc
            return True

    async def _wait_saving_when_idle(self, wait: Callable[[], Awaitable[None]]) -> None:
        """``await wait()``; a durable subscription whose position moved saves
        it once its position has stood still for `CHECKPOINT_IDLE` seconds
        (across waits that return early, such as tailing a store's appends)."""
        if self.options.durable and self._position != self._saved_position:
            if self._idle_at != self._position:
                self._idle_at = self._position
                self._idle_deadline = anyio.current_time() + CHECKPOINT_IDLE
            with anyio.CancelScope(deadline=self._idle_deadline):
                await wait()
                return
            await self._save_position()
        await wait()

    async def _save_position(self) -> None:
        """Checkpoint a durable subscription's position, if it moved."""
        if not self.options.durable:
            return
        self._checkpoint_due = self.counters.finished + CHECKPOINT_EVERY
        position = self._position
        if position == self._saved_position:
            return
        try:
            await self.bus.store.save_checkpoints({self.name: position})
        except Exception as exc:
            logger.error("could not save checkpoint", subscription=self.name, position=position, error=repr(exc))
        else:
            self._saved_position = position

    async def _redeliver(self, record: Record) -> Exception | None:
        """Run ``record`` through the chain below dead-lettering; the failure, if any."""
        current_record.set(record)
        try:
            await self._inner(record)
        except Exception as exc:
            return exc
        return None


def _raise_rejected(call_next: Handle, subscription: Subscription) -> Handle:
    """Fail the deliveries whose ``where=`` or ``key=`` raised, without retrying them."""
    rejected = subscription._rejected

    async def handle(record: Record) -> None:
        if rejected:
            exc = rejected.pop(record.seq, None)
            if exc is not None:
                raise exc
        await call_next(record)

    return handle


def _predicate(where: Predicate | Mapping[str, Any] | None, types: tuple[type[Event], ...]) -> Predicate | None:
    if where is None or callable(where):
        return where
    expected = dict(where)
    for cls in types:
        unknown = [name for name in expected if name not in cls.model_fields]
        if unknown and cls is not Event:
            raise ValueError(f"where= names fields {unknown} that {cls.__qualname__} does not have")

    def matches(event: Any) -> bool:
        return all(getattr(event, name) == value for name, value in expected.items())

    return matches


class _DropReport:
    """Logs drops without flooding: the first one at once, then a count at most
    once a second, and whatever is left when the subscription closes."""

    def __init__(self, subscription: str) -> None:
        self._subscription = subscription
        self._unreported = 0
        self._last_report = -math.inf
        self._last: tuple[int, str, str] | None = None

    def dropped(self, record: Record, policy: str) -> None:
        self._unreported += 1
        self._last = (record.seq, record.type, policy)
        now = time.monotonic()
        if now - self._last_report >= _DROP_REPORT_INTERVAL:
            self._last_report = now
            self.flush()

    def flush(self) -> None:
        if not self._unreported or self._last is None:
            return
        seq, type_name, policy = self._last
        logger.warning(
            "subscription full, events dropped",
            subscription=self._subscription,
            dropped=self._unreported,
            policy=policy,
            seq=seq,
            type=type_name,
        )
        self._unreported = 0


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
