"""`DeliveryRun`: one subscription's deliveries during one run of the bus, and
its worker loops.

A run puts the pieces of `eventbus.delivery` together: the `Inbox` the bus
routes into, the `CatchUp` that reads history into it, the `Checkpoints`
that load and save the position, and the `Pipeline` each record goes
through. The run owns the position and what its workers hold (`stats`
measures pending from them). Its workers take records in seq order from
the inbox's `~Inbox.source` and deliver them; with ``concurrency=n`` there
are ``n`` workers, and ``key=`` keeps the records of one key in order. A new
run is made each time the bus starts, so a bus can run again after it
stopped.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Collection, Hashable, Sequence
from typing import Any, cast

import anyio
import anyio.abc

from .._entry import EVENT, SEQ, record_of, seq_of
from ..deadletters import LetterBox
from ..failures import fatal_error, is_failure
from ..handler import Handle, ProjectionCall
from ..middleware.base import Middleware
from ..record import Record
from ..stats import SubscriptionStats
from ..store.base import Store
from ..transaction import Publishes
from .catchup import CatchUp, CatchUpState, Step
from .checkpoints import CHECKPOINT_EVERY, Checkpoints
from .inbox import Inbox
from .lease import Lease, LeaseState, LeaseTerms
from .options import Predicate, SubscriptionOptions
from .pipeline import Pipeline, SubscriptionContext, direct_handler
from .projection import Projection, projection_store

__all__ = ["DeliveryRun"]


class DeliveryRun:
    """One subscription's inbox, catch-up, position and workers for one run.

    Args:
        handler: the user's handler.
        call: the innermost step calling it; a projection's handler comes as
            a `ProjectionCall`, and each delivery is then a transaction
            (`eventbus.delivery.projection`).
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
        publisher: the bus, for what a projection's handler publishes in its transaction.
    """

    def __init__(
        self,
        handler: Callable[..., Any],
        call: Handle | ProjectionCall,
        options: SubscriptionOptions,
        types: Collection[str] | None,
        where: Predicate | None,
        middleware: Sequence[Middleware],
        store: Store,
        head: Callable[[], int],
        on_fatal: Callable[[BaseException], None],
        lease_terms: LeaseTerms,
        publisher: Publishes,
    ) -> None:
        name = options.name
        self.lease = (
            Lease(name, lease_terms, store, self._stand_by)
            if options.durable and store.features.shared_between_processes
            else None
        )
        # a leased subscription's every handler call checks the lease's deadline; the others pay nothing
        guard = None if self.lease is None else self.lease.guard
        direct = direct_handler(handler, options, middleware, guard)
        self.inbox = Inbox(
            name,
            options.max_pending,
            options.backpressure,
            where,
            takes_entries=direct is not None and options.concurrency == 1,
        )
        start = options.from_seq if options.from_seq is not None else head() + 1 if options.durable else None
        self.catch_up = CatchUp(self.inbox, store, types, head, start, store.features.shared_between_processes)
        self.checkpoints = Checkpoints(name, store, options.durable, self.lease)
        context = SubscriptionContext(name, self.inbox)
        letters: LetterBox = store
        if isinstance(call, ProjectionCall):
            projection = Projection(call, name, projection_store(store, name), publisher, self.checkpoints, self.lease)
            call, letters = projection.deliver, projection
        self.pipeline = Pipeline(handler, call, options, middleware, context, letters, guard)
        self.stopped = anyio.Event()
        self._head = head
        self._on_fatal = on_fatal
        self._workers = options.concurrency
        self._key = options.key
        self._sleeping = 0
        self._refilling = False
        self._scope: anyio.CancelScope | None = None
        self._position = 0
        """The greatest seq up to which every record given to the workers is finished."""
        self._delivering: Any = None
        """The record (or entry) the single worker is delivering, or delivered last."""
        self._in_flight: deque[int] = deque()
        """Seqs concurrent workers took and did not all finish yet, in seq order."""
        self._finished_early: set[int] = set()
        """Seqs in `_in_flight` that finished before an earlier one."""
        self._until_save = CHECKPOINT_EVERY
        """Concurrent deliveries left before the next checkpoint save."""
        self._busy_keys: dict[Hashable, deque[tuple[Record, Exception | None]]] = {}

    @property
    def position(self) -> int:
        """The greatest seq up to which every record given to this run is finished (0 before the first)."""
        return self._position

    def _current_position(self) -> int:
        """`position`, as a plain method the checkpoints ask while the workers sleep."""
        return self._position

    def stats(self) -> SubscriptionStats:
        """A snapshot of this run's counts (see `Inbox.stats`)."""
        return self.inbox.stats(
            in_hand=self._in_hand(),
            position=self._position,
            holds_lease=None if self.lease is None else self.lease.held,
        )

    def _in_hand(self) -> int:
        """Records the workers took and have not finished."""
        if self._workers == 1:
            delivering = self._delivering
            return 0 if delivering is None or seq_of(delivering) <= self._position else 1
        return len(self._in_flight) - len(self._finished_early)

    def is_idle(self) -> bool:
        """Nothing queued, nothing being delivered, nothing left to read (what `drain` waits for)."""
        if self.inbox.closed or self.stopped.is_set() or self._standing_by():
            return True
        catch_up = self.catch_up
        if catch_up.state is CatchUpState.TAILING and catch_up.next_seq <= self._head():
            return False
        return self._sleeping == self._workers and not self.inbox.held() and not self._in_flight

    def needed_from(self) -> int | None:
        """The lowest seq this run may still read from the store (None: none, or it stopped)."""
        if self.inbox.closed or self.stopped.is_set() or (self.lease is not None and not self.lease.held):
            return None
        return self.catch_up.needed_from()

    def _standing_by(self) -> bool:
        return self.lease is not None and self.lease.state is LeaseState.STANDING_BY

    def _stand_by(self) -> None:
        """The lease went to another process: this run is idle now (what `drain` waits for)."""
        self.inbox.idle_now()

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
        self.inbox.work_here()
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
                await self.checkpoints.save_on_close(self._position)
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
        self.inbox.forget_pending(self._in_hand())
        self._delivering = None
        self._in_flight.clear()
        self._finished_early.clear()
        resume_at = await self.checkpoints.load(self.catch_up.next_seq)
        self._position = resume_at - 1
        self.catch_up.start_at(resume_at)
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
        checkpoints = self.checkpoints
        pipeline = self.pipeline
        deliver, direct, enter = pipeline.deliver, pipeline.direct, pipeline.enter
        # entries reach this worker only when the pipeline calls its handler directly
        call_event = cast(Callable[[Any], Awaitable[None]], direct)
        # An entry's fields, by their names in eventbus._entry, read as locals in
        # the loop: as globals there, a one-handler publish-to-handled costs 32
        # instructions more on CPython 3.11 (12 504) and 67 on 3.13 (14 159).
        seq_at, event_at = SEQ, EVENT
        rejections = inbox.rejections
        until_save = CHECKPOINT_EVERY
        while True:
            source = inbox.source
            # Not `while source:`, which costs a one-handler publish-to-handled
            # 2 234 instructions on CPython 3.11 (14 675 against 12 441, 18 %)
            # and nothing on 3.13 (14 100 against 14 102). 3.11 specializes a
            # function's bytecode once it was entered, or jumped back
            # unconditionally, eight times; `while source:` jumps back
            # conditionally, and a worker whose handler never suspends is
            # neither entered nor resumed again, so its loop ran unspecialized.
            # 3.12 and later specialize each instruction as it runs. Kept,
            # though it pays on 3.11 alone: without it the one-handler count
            # on 3.11 is over DESIGN.md's 12 500.
            while True:
                if not source:
                    break
                # a Record, or an entry (see eventbus._entry) where the inbox takes them
                record: Any = source.popleft()
                if inbox.crowded:
                    inbox.took()
                self._delivering = record
                try:
                    if type(record) is tuple and not rejections:
                        # the commonest case: an entry's event to the handler, no Record at all
                        seq = record[seq_at]
                        enter(record)
                        await call_event(record[event_at])
                    else:
                        if type(record) is tuple:
                            record = record_of(record)
                        seq = record.seq
                        if direct is None or rejections:
                            await deliver(record, inbox.rejection(seq) if rejections else None)
                        else:
                            # without the call through deliver()
                            enter(record)
                            event = record.decoded
                            await direct(record.event if event is None else event)
                except BaseException as exc:
                    if not is_failure(exc):
                        raise
                    await pipeline.fail(record_of(record), exc)
                self._position = seq
                until_save -= 1
                if not until_save:
                    until_save = CHECKPOINT_EVERY
                    await checkpoints.save(self._position)
            await self._refill()
            if inbox.closed:
                return

    async def _work_concurrently(self) -> None:
        """One of ``concurrency`` workers; records with equal ``key`` stay in order."""
        inbox = self.inbox
        key = self._key
        busy = self._busy_keys
        deliver = self._deliver_tracked
        rejections = inbox.rejections
        while True:
            # while it holds records the source stays this deque: a spill
            # makes it the page (see Inbox.fall_behind), and only an empty
            # page turns the subscription live; never entries (see Inbox.takes_entries)
            source = cast("deque[Record]", inbox.source)
            while True:  # not `while source:` (see _work)
                if not source:
                    break
                record = source.popleft()
                if inbox.crowded:
                    inbox.took()
                self._in_flight.append(record.seq)
                rejection = inbox.rejection(record.seq) if rejections else None
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
        self._finished(record.seq)
        self._until_save -= 1
        if not self._until_save:
            self._until_save = CHECKPOINT_EVERY
            await self.checkpoints.save(self._position)

    def _finished(self, seq: int) -> None:
        """A concurrent delivery finished: move the position past every seq finished in order."""
        in_flight = self._in_flight
        if in_flight[0] != seq:
            self._finished_early.add(seq)
            return
        in_flight.popleft()
        position = seq
        early = self._finished_early
        while in_flight and in_flight[0] in early:
            position = in_flight.popleft()
            early.discard(position)
        self._position = position

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
                await self.checkpoints.wait_saving_when_idle(wait, self._current_position)
            else:
                await wait()
        finally:
            self._sleeping -= 1
