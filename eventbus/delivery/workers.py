"""`DeliveryRun`: one subscription's deliveries during one run of the bus, and
its worker loops.

A run puts the pieces of `eventbus.delivery` together: the `Inbox` the bus
routes into, the `CatchUp` that reads history, the `Checkpoints` that track
and save the position, and the `Pipeline` each record goes through. Its
workers take records in seq order from the catch-up page or the inbox and
deliver them; with ``concurrency=n`` there are ``n`` workers, and ``key=``
keeps the records of one key in order. A new run is made each time the bus
starts, so a bus can run again after it stopped.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Collection, Hashable, Sequence
from typing import Any

import anyio
import anyio.abc

from .._entry import record_of
from ..failures import fatal_error, is_failure
from ..handler import Handle
from ..middleware.base import Middleware
from ..record import Record
from ..stats import Counters, SubscriptionStats
from ..store.base import Store
from .catchup import CatchUp, CatchUpState, Step
from .checkpoints import Checkpoints
from .inbox import Inbox
from .lease import Lease, LeaseState, LeaseTerms
from .options import Predicate, SubscriptionOptions
from .pipeline import Pipeline, SubscriptionContext

__all__ = ["DeliveryRun"]


class DeliveryRun:
    """One subscription's inbox, catch-up, position and workers for one run.

    Args:
        handler: the user's handler.
        call: the innermost step calling it.
        options: the subscription's options.
        types: the type names the subscription reads from the store (None: all).
        where: the ``where=`` predicate, compiled.
        middleware: the bus's delivery middleware.
        store: the bus's store for this run.
        head: the newest seq the bus has committed.
        on_fatal: called with a `KeyboardInterrupt` or `SystemExit` a handler
            raised; the bus stops and re-raises it from ``async with``.
        lease_terms: how the bus leases durable subscriptions on a store
            shared between processes (see `eventbus.delivery.lease`).
    """

    def __init__(
        self,
        handler: Callable[..., Any],
        call: Handle,
        options: SubscriptionOptions,
        types: Collection[str] | None,
        where: Predicate | None,
        middleware: Sequence[Middleware],
        store: Store,
        head: Callable[[], int],
        on_fatal: Callable[[BaseException], None],
        lease_terms: LeaseTerms,
    ) -> None:
        name = options.name
        self.counters = Counters()
        self.inbox = Inbox(name, options.max_pending, options.backpressure, self.counters, where)
        start = options.from_seq if options.from_seq is not None else head() + 1 if options.durable else None
        self.catch_up = CatchUp(self.inbox, store, types, head, start, store.features.shared_between_processes)
        self.checkpoints = Checkpoints(name, store, options.durable)
        self.inbox.in_flight = self.checkpoints.in_flight
        context = SubscriptionContext(name, self.counters)
        self.pipeline = Pipeline(handler, call, options, middleware, context, store)
        self.inbox.takes_entries = self.pipeline.direct is not None and options.concurrency == 1
        self.lease = (
            Lease(name, lease_terms, store, self.inbox.idle_now)
            if options.durable and store.features.shared_between_processes
            else None
        )
        self.stopped = anyio.Event()
        self._head = head
        self._on_fatal = on_fatal
        self._workers = options.concurrency
        self._key = options.key
        self._sleeping = 0
        self._refilling = False
        self._scope: anyio.CancelScope | None = None
        self._busy_keys: dict[Hashable, deque[tuple[Record, Exception | None]]] = {}

    def stats(self) -> SubscriptionStats:
        """A snapshot of this run's counters."""
        c = self.counters
        return SubscriptionStats(
            routed=c.routed,
            delivered=c.finished - c.dead_lettered,
            failed=c.retried + c.dead_lettered,
            retried=c.retried,
            dead_lettered=c.dead_lettered,
            dropped=c.dropped,
            pending=c.routed - c.finished - c.dropped,
            position=self.checkpoints.position,
            behind=self.catch_up.state is not CatchUpState.LIVE,
            overflowed=c.overflowed,
            holds_lease=None if self.lease is None else self.lease.held,
        )

    def is_idle(self) -> bool:
        """Nothing queued, nothing being delivered, nothing left to read (what `drain` waits for)."""
        if self.inbox.closed or self.stopped.is_set() or self._standing_by():
            return True
        catch_up = self.catch_up
        if catch_up.state is CatchUpState.TAILING and catch_up.next_seq <= self._head():
            return False
        return (
            self._sleeping == self._workers
            and not self.inbox.queue
            and not catch_up.page
            and not self.checkpoints.outstanding
        )

    def needed_from(self) -> int | None:
        """The lowest seq this run may still read from the store (None: none, or it stopped)."""
        if self.inbox.closed or self.stopped.is_set() or (self.lease is not None and not self.lease.held):
            return None
        return self.catch_up.needed_from()

    def _standing_by(self) -> bool:
        return self.lease is not None and self.lease.state is LeaseState.STANDING_BY

    async def wait_idle(self) -> None:
        """Return once `is_idle` holds."""
        await self.inbox.wait_idle(self.is_idle)

    def close(self) -> None:
        """Stop taking records; the position is saved on the way out.

        Workers asleep for want of records wake and return; anything else the
        run is doing (a handler, a store read, a lease) is cancelled. Workers
        that return leave nothing behind, where a task ended by cancellation
        leaves its traceback in a reference cycle inside anyio, which keeps
        the run and its store until the collector finds it (see "A dropped
        bus is freed at once" in docs/concepts/lifecycle.md).
        """
        self.inbox.close()
        if self._scope is not None and not self._only_waiting_for_records():
            self._scope.cancel()

    def _only_waiting_for_records(self) -> bool:
        """Every worker sleeps in the inbox's `park` (live, with no lease to
        keep): closing the inbox wakes them, and they return."""
        return (
            self.lease is None
            and self.catch_up.state is CatchUpState.LIVE
            and not self._refilling
            and self._sleeping == self._workers
        )

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """The run's life: resume a durable position, then work until cancelled or closed."""
        try:
            with anyio.CancelScope() as scope:
                self._scope = scope
                if self.inbox.closed:
                    scope.cancel()
                task_status.started()
                if self.lease is not None:
                    await self.lease.deliver_while_held(self._resume)
                elif self.checkpoints.durable:
                    await self._resume()
                else:
                    await self._deliver()
        except BaseException as exc:
            fatal = fatal_error(exc)
            if fatal is None:
                raise
            self._on_fatal(fatal)
        finally:
            if self.lease is None or self.lease.held:
                await self.checkpoints.save_on_close()
            if self.lease is not None:
                await self.lease.release()
            self.inbox.flush_drop_report()
            self.stopped.set()
            self.inbox.idle_now()

    async def _resume(self) -> None:
        """A durable subscription: deliver from after its saved position.

        Run again each time a lost lease is taken back: what the last holding
        left unfinished was handed over with the lease, and is forgotten.
        """
        self.catch_up.page.clear()
        self.inbox.rejections.clear()
        self.inbox.delivering = None
        counters = self.counters
        counters.routed = counters.finished + counters.dropped
        self.catch_up.start_at(await self.checkpoints.load(self.catch_up.next_seq))
        await self._deliver()

    def _deliver(self) -> Awaitable[None]:
        """The workers' loop: a plain function handing back the single
        worker's own coroutine, so that a parked worker waits one frame
        below `run` (every wake-up resumes each frame of the chain)."""
        if self._workers == 1:
            return self._work()
        return self._work_concurrently_in_group()

    async def _work_concurrently_in_group(self) -> None:
        async with anyio.create_task_group() as workers:
            for _ in range(self._workers):
                workers.start_soon(self._work_concurrently)

    # -- workers -------------------------------------------------------------------

    async def _work(self) -> None:
        """The single worker: deliver in seq order, one at a time."""
        inbox = self.inbox
        catch_up = self.catch_up
        checkpoints = self.checkpoints
        counters = self.counters
        pipeline = self.pipeline
        deliver, direct, enter = pipeline.deliver, pipeline.direct, pipeline.enter
        rejections = inbox.rejections
        while True:
            source = catch_up.source
            # Not `while source:`. CPython 3.11 specializes a function's
            # bytecode once it was entered, or jumped back unconditionally, a
            # few times; `while source:` jumps back conditionally, and a worker
            # whose handler never suspends is neither entered nor resumed
            # again: its loop ran unspecialized, every attribute read the slow
            # way (a tenth of a one-handler publish-to-handled).
            while True:
                if not source:
                    break
                # a Record, or an entry (see eventbus._entry) where the inbox takes them
                record: Any = source.popleft()
                if inbox.crowded:
                    inbox.took()
                try:
                    if type(record) is tuple and direct is not None and not rejections:
                        # the commonest case: an entry's event to the handler, no Record at all
                        inbox.delivering = record
                        seq = record[0]
                        enter(record)
                        await direct(record[1])
                    else:
                        if type(record) is tuple:
                            record = record_of(record)
                        inbox.delivering = record
                        seq = record.seq
                        if direct is None or rejections:
                            await deliver(record, rejections.pop(seq, None) if rejections else None)
                        else:
                            # without the call through deliver()
                            enter(record)
                            event = record.decoded
                            await direct(record.event if event is None else event)
                except BaseException as exc:
                    if not is_failure(exc):
                        raise
                    await self.pipeline.fail(record_of(record), exc)
                counters.finished += 1
                checkpoints.position = seq
                if counters.finished >= checkpoints.due:
                    await checkpoints.save_due()
            await self._refill()
            if inbox.closed:
                return

    async def _work_concurrently(self) -> None:
        """One of ``concurrency`` workers; records with equal ``key`` stay in order."""
        inbox = self.inbox
        catch_up = self.catch_up
        key = self._key
        busy = self._busy_keys
        in_flight = self.checkpoints.in_flight
        rejections = inbox.rejections
        deliver = self._deliver_tracked
        while True:
            # while it holds records the source stays this deque: a spill
            # makes it the page (see CatchUp.fall_behind), and only an empty
            # page turns the subscription live
            source = catch_up.source
            while True:  # not `while source:` (see _work)
                if not source:
                    break
                # never an entry (see Inbox.takes_entries); annotated, as cast() would be a call
                record: Record = source.popleft()  # type: ignore[assignment]
                if inbox.crowded:
                    inbox.took()
                in_flight.append(record.seq)
                rejection = rejections.pop(record.seq, None) if rejections else None
                if key is None or rejection is not None:
                    await deliver(record, rejection)
                    continue
                try:
                    record_key = key(record.event)
                    waiting = busy.get(record_key)
                except Exception as exc:
                    await deliver(record, exc)
                    continue
                if waiting is not None:
                    waiting.append((record, None))
                    continue
                waiting = busy[record_key] = deque()
                try:
                    await deliver(record, None)
                    while waiting:
                        await deliver(*waiting.popleft())
                finally:
                    del busy[record_key]
            await self._refill()
            if inbox.closed:
                return

    async def _deliver_tracked(self, record: Record, rejection: Exception | None) -> None:
        try:
            await self.pipeline.deliver(record, rejection)
        except BaseException as exc:
            if not is_failure(exc):
                raise
            await self.pipeline.fail(record, exc)
        self.counters.finished += 1
        self.checkpoints.finished(record.seq)
        if self.counters.finished >= self.checkpoints.due:
            await self.checkpoints.save_due()

    def _refill(self) -> Awaitable[None]:
        """Find more work: one step of reading the store when behind, or sleep
        until routed to. While one worker reads the store, the others sleep.
        A plain function, so that a parked worker waits one coroutine below
        its loop (`_sleep`), not two."""
        if self.catch_up.state is not CatchUpState.LIVE and not self._refilling:
            return self._read_store()
        return self._sleep(self.inbox.park)

    async def _read_store(self) -> None:
        """One catch-up step, and the wait it asks for."""
        self._refilling = True
        try:
            step = await self.catch_up.step()
            if step is Step.WAIT_FOR_HEAD:
                await self._sleep(self.inbox.park)
            elif step is Step.WAIT_FOR_APPEND:
                await self._sleep(self.catch_up.wait_for_append)
        finally:
            self._refilling = False
        if self.inbox.parked:
            self.inbox.wake()

    async def _sleep(self, wait: Callable[[], Awaitable[None]]) -> None:
        """Wait with the other idle workers; the last one to sleep tells `drain` to look."""
        self._sleeping += 1
        if self._sleeping == self._workers and self.inbox.idle is not None:
            self.inbox.idle_now()
        try:
            if self.checkpoints.durable:
                await self.checkpoints.wait_saving_when_idle(wait)
            else:
                await wait()
        finally:
            self._sleeping -= 1
