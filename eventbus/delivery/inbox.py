"""`Inbox`: a subscription's bounded queue, its backpressure policy, and the
signals around it.

The bus touches a subscription only through its inbox: it offers routed
records (`offer`), asks whether a ``"block"`` inbox is full and waits
for room, and waits for the subscription to become idle (`drain`). The
workers take records from the queue, park in the inbox when there is nothing
to do, and are woken by the next offer.

A ``"block"`` inbox that may be full is *crowded*: it is in a set the router
shares with every inbox it routes to, and stays there until a worker takes
from it with room to spare. A publish looks at its route's ``"block"``
inboxes only while that set is not empty, so backpressure costs nothing per
subscription until some subscription is full.

While the subscription is *behind* (reading history back from the store, see
`eventbus.delivery.catchup`), a full inbox does not apply its policy: it
notes that it *missed* a record, and catch-up reads it back from the store.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Iterable

import anyio
import anyio.lowlevel

from .._entry import Item, event_of, seq_of, type_of
from .._log import logger
from ..policies import Backpressure
from ..stats import Counters

__all__ = ["Inbox", "offer"]

_DROP_REPORT_INTERVAL = 1.0
_NEVER = sys.maxsize


class Inbox:
    """The records routed to one subscription and not yet taken by a worker.

    Attributes:
        queue: the records (or entries, see `takes_entries`), in seq order.
        behind: set by catch-up while the subscription reads the store.
        missed: a record was not kept because the inbox was full while behind.
        closed: the subscription closed; nothing more is taken.
        crowded: the inbox may be full (see `share_crowd`).
    """

    def __init__(
        self,
        name: str,
        max_pending: int,
        policy: Backpressure,
        counters: Counters,
        where: Callable[[object], bool] | None,
    ) -> None:
        self.name = name
        self.max_pending = max_pending
        self.policy = policy
        self.counters = counters
        self.queue: deque[Item] = deque()
        self.takes_entries = False
        """The subscription's worker delivers entries (see `eventbus._entry`)
        as well as records: one worker calling an async ``(event)`` handler
        with nothing around it. A publish routed only to such inboxes
        builds no `Record`."""
        self.behind = False
        self.block_at = _NEVER
        """Queue length at which a ``"block"`` publisher waits: ``max_pending``
        while live and open, never while behind or closed, nor under another
        policy (see `full`; kept by `_bounds_changed`)."""
        self.reserved = 0
        """Records of publishes that found room and wait for their append (see
        `reserve`): they count against the bound a ``"block"`` publisher sees."""
        self._capacity = max_pending
        self.room_below = max_pending
        """`offer` appends at once while the queue is shorter than this: under
        `capacity`, and one short of the length that makes the inbox `full`.
        At this length or more it looks again (`offer_at_bound`)."""
        self.crowded = False
        self._crowd: set[Inbox] = set()
        self.delivering: Item | None = None
        """The record the single worker is delivering (or delivered last)."""
        self.in_flight: Collection[int] = ()
        """Seqs concurrent workers are delivering (see `owns`)."""
        self.missed = False
        self.closed = False
        self.rejections: dict[int, Exception] = {}
        self.parked = False
        self.spill: Callable[[int], None] | None = None
        self._where = where
        self._lot: _AsyncioLot | _AnyioLot | None = None
        """Where parked workers wait (made by the first of them, in the event loop)."""
        self.room: anyio.Event | None = None
        """Set when a worker takes a record, for publishers waiting for room."""
        self.idle: anyio.Event | None = None
        """Set when the workers may have become idle, for `wait_idle` (None: nobody waits)."""
        self._drops = _DropReport(name)
        self._bounds_changed()

    @property
    def capacity(self) -> int:
        """How many records the queue may hold (``max_pending``; less while a
        page of history is being delivered, 0 while tailing)."""
        return self._capacity

    @capacity.setter
    def capacity(self, capacity: int) -> None:
        self._capacity = capacity
        self._bounds_changed()

    # -- the bus's side ----------------------------------------------------------

    def share_crowd(self, crowd: set[Inbox]) -> None:
        """Be in ``crowd`` whenever this inbox may be `full` (and only then, once
        a worker takes from it again): the router's set, which lets a publisher
        skip looking at its route's ``"block"`` inboxes while it is empty."""
        if crowd is not self._crowd:
            self._crowd.discard(self)
            self._crowd = crowd
            if self.crowded:
                crowd.add(self)

    def full(self) -> bool:
        """True when a ``"block"`` publisher must wait before appending."""
        return len(self.queue) + self.reserved >= self.block_at

    def reserve(self, count: int) -> None:
        """Hold room for ``count`` records whose append the publisher awaits:
        publishers waiting in one group commit cannot all take the same room."""
        self.reserved += count
        self._bounds_changed()

    def release(self, count: int) -> None:
        """The reserved records are routed (or were not stored): give the room back."""
        self.reserved -= count
        self._bounds_changed()
        self.took()

    def offer_at_bound(self, record: Item) -> None:
        """`offer` of a record that fills the queue, or finds it full."""
        if len(self.queue) < self._capacity:
            self.queue.append(record)
            self.counters.routed += 1
        else:
            self._overflow(record)
        if self.full():
            self._join_crowd()
        if self.parked:
            self.wake()

    def owns(self, record: Item) -> bool:
        """True while ``record``'s handler runs in this subscription: a publish
        from it must not wait for room that only this subscription can make."""
        return record is self.delivering or seq_of(record) in self.in_flight

    def set_behind(self, behind: bool) -> None:
        """Catch-up switches the inbox between buffering (behind) and live."""
        self.behind = behind
        self._bounds_changed()

    async def wait_for_room(self) -> None:
        """Return once the inbox has room, or is closed (the caller checks which)."""
        while self.full():
            self._join_crowd()  # so that the next worker to take a record calls `took`
            if self.room is None:
                self.room = anyio.Event()
            await self.room.wait()

    def release_waiters(self) -> None:
        """Wake every publisher waiting for room and every `drain` (the bus is stopping)."""
        if self.room is not None:
            self.room.set()
            self.room = None
        self.idle_now()

    async def wait_idle(self, is_idle: Callable[[], bool]) -> None:
        """Return once ``is_idle()`` holds; workers call `idle_now` when it may."""
        while not is_idle():
            if self.idle is None:
                self.idle = anyio.Event()
            await self.idle.wait()

    # -- the workers' side -------------------------------------------------------

    def took(self) -> None:
        """A worker took a record from a `crowded` inbox (or reserved room was
        given back): a waiting publisher may go on, and an inbox no longer
        full leaves the crowd."""
        room = self.room
        if room is not None:
            self.room = None
            room.set()
        if self.crowded and not self.full():
            self.crowded = False
            self._crowd.discard(self)

    def wake(self) -> None:
        """Wake the parked workers (once: offers in a burst do not set it again)."""
        self.parked = False
        lot = self._lot
        if lot is not None:
            lot.unpark_all()

    def idle_now(self) -> None:
        """Tell whoever waits in `wait_idle` to look again."""
        idle = self.idle
        if idle is not None:
            self.idle = None
            idle.set()

    def park(self) -> Awaitable[None]:
        """What a worker awaits to sleep until a record is offered (or `wake` is
        called); once closed, a checkpoint that returns at once."""
        if self.closed:
            return anyio.lowlevel.checkpoint()
        self.parked = True
        lot = self._lot
        if lot is None:
            lot = self._lot = _parking_lot()
        return lot.park()

    def close(self) -> None:
        """Take nothing more; release publishers and drains that wait on this inbox."""
        self.closed = True
        self._bounds_changed()
        self.crowded = False
        self._crowd.discard(self)
        self.release_waiters()
        self.wake()
        self._drops.flush()

    def flush_drop_report(self) -> None:
        """Log the drops not reported yet."""
        self._drops.flush()

    def discard(self, record: Item) -> None:
        """Forget a queued record that will not be delivered from the queue
        (catch-up covered it from the store)."""
        self.counters.routed -= 1
        self._forget_rejection(record)

    def accepts(self, record: Item) -> bool:
        """Apply ``where=``; a predicate that raises sends the record to dead letters."""
        if self._where is None:
            return True
        try:
            return bool(self._where(event_of(record)))
        except Exception as exc:
            self.rejections[seq_of(record)] = exc
            return True

    # -- internals -------------------------------------------------------------------

    def _bounds_changed(self) -> None:
        """``capacity``, ``reserved``, ``behind`` or ``closed`` moved: recompute
        `block_at` and `room_below`, and join the crowd if the inbox is full now."""
        live_block = self.policy == "block" and not self.behind and not self.closed
        self.block_at = self.max_pending if live_block else _NEVER
        self.room_below = min(self._capacity, self.block_at - self.reserved - 1)
        if self.full():
            self._join_crowd()

    def _join_crowd(self) -> None:
        if not self.crowded:
            self.crowded = True
            self._crowd.add(self)

    def _overflow(self, record: Item) -> None:
        counters = self.counters
        if self.behind:
            self.missed = True
            self._forget_rejection(record)
        elif self.policy == "block":
            # publish waited for room before appending, unless it came from this
            # subscription's own handler (which cannot wait for room only it can
            # make), and a concurrent publisher may have taken the room since:
            # the queue holds a few more, counted.
            self.queue.append(record)
            counters.routed += 1
            counters.overflowed += 1
        elif self.policy == "drop_newest":
            counters.routed += 1
            counters.dropped += 1
            self._forget_rejection(record)
            self._drops.dropped(record, self.policy)
        elif self.policy == "drop_oldest":
            oldest = self.queue.popleft()
            self.queue.append(record)
            counters.routed += 1
            counters.dropped += 1
            self._forget_rejection(oldest)
            self._drops.dropped(oldest, self.policy)
        else:
            assert self.spill is not None
            self._forget_rejection(record)
            self.spill(seq_of(record))

    def _forget_rejection(self, record: Item) -> None:
        if self.rejections:
            self.rejections.pop(seq_of(record), None)


def offer(inboxes: Iterable[Inbox], record: Item) -> None:
    """Give ``record`` to the ``inboxes`` the bus routed it to (it routes in
    seq order). One call for all of them: an inbox with room takes the record
    inline, so a fan-out to n subscriptions is not n calls."""
    for inbox in inboxes:
        if inbox._where is not None and not inbox.accepts(record):
            continue
        queue = inbox.queue
        if len(queue) < inbox.room_below:
            queue.append(record)
            inbox.counters.routed += 1
            if inbox.parked:
                inbox.wake()
        else:
            inbox.offer_at_bound(record)


def _parking_lot() -> _AsyncioLot | _AnyioLot:
    """Where a subscription's workers wait for the next offer: bare futures on
    asyncio, an `anyio.Event` elsewhere (trio)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return _AnyioLot()
    return _AsyncioLot(loop)


class _AsyncioLot:
    """Workers waiting for an offer on asyncio: a future each, all set by `unpark_all`.

    What an `anyio.Event` made anew for each wake-up does, without its layers
    (anyio's backend lookup, then `asyncio.Event` and its waiter list, all in
    Python), which cost more than the rest of a wake-up together. One future
    per waiter, as `asyncio.Event` has: cancelling a task cancels the future
    it awaits, which must not end the other workers' waits.
    """

    __slots__ = ("_loop", "_waiters")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._waiters: list[asyncio.Future[None]] = []

    def park(self) -> Awaitable[None]:
        waiters = self._waiters
        if waiters:
            # a wait that was cancelled (a deadline) left its future behind
            waiters[:] = [future for future in waiters if not future.done()]
        future = self._loop.create_future()
        waiters.append(future)
        return future

    def unpark_all(self) -> None:
        waiters = self._waiters
        if waiters:
            self._waiters = []
            for future in waiters:
                if not future.done():
                    future.set_result(None)


class _AnyioLot:
    """Workers waiting for an offer on any other backend: one `anyio.Event` per wake-up."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event: anyio.Event | None = None

    def park(self) -> Awaitable[None]:
        event = self._event
        if event is None:
            event = self._event = anyio.Event()
        return event.wait()

    def unpark_all(self) -> None:
        event = self._event
        if event is not None:
            self._event = None
            event.set()


class _DropReport:
    """Logs drops without flooding: the first one at once, then a count at most
    once a second, and whatever is left when the subscription closes."""

    def __init__(self, subscription: str) -> None:
        self._subscription = subscription
        self._unreported = 0
        self._last_report = -math.inf
        self._last: tuple[int, str, str] | None = None

    def dropped(self, record: Item, policy: str) -> None:
        self._unreported += 1
        self._last = (seq_of(record), type_of(record), policy)
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
