"""`Inbox`: a subscription's bounded queue, its backpressure policy, the
history being delivered, and its counts.

The inbox owns all of a subscription's delivery state that others touch, the
way anyio's memory stream keeps its buffer, waiters and statistics in one
state object: every change goes through one of its verbs.

- The bus offers routed records (`offer`), asks whether a ``"block"`` inbox
  is `full`, reserves and waits for room, and waits for the subscription to
  become idle. A closed inbox takes no offer (see `Inbox.close`).
- Catch-up (`eventbus.delivery.catchup`) switches it between live and
  reading history: it falls behind (`fall_behind`, `read_history`), adds the
  pages it read (`add_page`), drops buffered records a read covered
  (`prune_below`) and goes live again (`go_live`).
- The workers take records from the front of `source`, park when there is
  nothing to do, and are woken by the next offer.

A ``"block"`` inbox that may be full is *crowded*: it is in a set the router
shares with every inbox it routes to, and stays there until a worker takes
from it with room to spare. A publish looks at its route's ``"block"``
inboxes only while that set is not empty, so backpressure costs nothing per
subscription until some subscription is full.

While the subscription is *behind* (reading history back from the store), a
full inbox does not apply its policy: it notes that it *missed* a record, and
catch-up reads it back from the store.

The counts (`routed`, `dropped`, ...) are kept here, by the code that routes
and drops; what the workers have finished is not counted but measured, so
``delivered + dropped + dead_lettered + pending == routed`` holds by
construction (see `Inbox.stats`).
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar

import anyio
import anyio.lowlevel

from .._entry import Item, event_of, seq_of, type_of
from .._log import logger
from ..policies import Backpressure
from ..stats import SubscriptionStats

__all__ = ["Inbox", "offer"]

_DROP_REPORT_INTERVAL = 1.0
_NEVER = sys.maxsize

_working_for: ContextVar[Inbox | None] = ContextVar("eventbus_working_for", default=None)
"""The inbox whose worker runs in this context (set once per worker task, see `Inbox.work_here`)."""


class Inbox:
    """The records routed to one subscription and not yet taken by a worker.

    Args:
        name: the subscription's name.
        max_pending: the bound of the queue.
        policy: what a full queue does.
        where: the ``where=`` predicate, compiled (None: every record).
        takes_entries: the subscription's worker delivers entries (see
            `eventbus._entry`) as well as records: one worker calling an async
            ``(event)`` handler with nothing around it. A publish routed only
            to such inboxes builds no `Record`.
    """

    def __init__(
        self,
        name: str,
        max_pending: int,
        policy: Backpressure,
        where: Callable[[object], bool] | None,
        *,
        takes_entries: bool,
    ) -> None:
        self.name = name
        self.max_pending = max_pending
        self.policy = policy
        self.takes_entries = takes_entries
        self._where = where
        self._queue: deque[Item] = deque()
        """What the bus routed here, in seq order (records, or entries if `takes_entries`)."""
        self._page: deque[Item] = deque()
        """History read back from the store, delivered before the queue while behind."""
        self._behind = False
        self._tailing = False
        self._missed = False
        self._closed = False
        self._capacity = max_pending
        self._reserved = 0
        """Records of publishes that found room and wait for their append (see
        `reserve`): they count against the bound a ``"block"`` publisher sees."""
        self._block_at = _NEVER
        """Queue length at which a ``"block"`` publisher waits: ``max_pending``
        while live and open, never while behind or closed, nor under another
        policy (kept by `_bounds_changed`)."""
        self._room_below = max_pending
        """`offer` appends at once while the queue is shorter than this: under
        the capacity, and one short of the length that makes the inbox `full`."""
        self.crowded = False
        """The inbox may be full (see `share_crowd`)."""
        self._crowd: set[Inbox] = set()
        self.parked = False
        """A worker sleeps in `park`."""
        self._lot: _AsyncioLot | _AnyioLot | None = None
        """Where parked workers wait (made by the first of them, in the event loop)."""
        self._room: anyio.Event | None = None
        """Set when a worker takes a record, for publishers waiting for room."""
        self.idle: anyio.Event | None = None
        """Set when the workers may have become idle, for `wait_idle` (None: nobody waits)."""
        self._rejections: dict[int, Exception] = {}
        """Exceptions ``where=`` raised, by seq: those records go to dead letters."""
        self._spill: Callable[[int], None] | None = None
        self._drops = _DropReport(name)
        self._routed = 0
        self._dropped = 0
        self._overflowed = 0
        self._retried = 0
        self._dead_lettered = 0
        self._bounds_changed()

    @property
    def closed(self) -> bool:
        """The subscription closed; nothing more is taken."""
        return self._closed

    @property
    def behind(self) -> bool:
        """The subscription reads history back from the store (catching up or tailing)."""
        return self._behind

    @property
    def source(self) -> deque[Item]:
        """What the workers take next, from the front: the page of history while
        behind, else the queue. Only the workers take from it, with ``popleft``,
        each record once (in seq order); everything else goes through verbs."""
        return self._page if self._behind else self._queue

    @property
    def rejections(self) -> Mapping[int, Exception]:
        """The exceptions ``where=`` raised, by seq (see `rejection`); read-only."""
        return self._rejections

    def held(self) -> int:
        """Records queued or paged and not taken yet."""
        return len(self._queue) + len(self._page)

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
        return len(self._queue) + self._reserved >= self._block_at

    def reserve(self, count: int) -> None:
        """Hold room for ``count`` records whose append the publisher awaits:
        publishers waiting in one group commit cannot all take the same room."""
        self._reserved += count
        self._bounds_changed()

    def release(self, count: int) -> None:
        """The reserved records are routed (or were not stored): give the room back."""
        self._reserved -= count
        self._bounds_changed()
        self.took()

    def delivers_here(self) -> bool:
        """True when called from this subscription's own worker (its handler,
        or a thread that handler runs in): a publish from there must not wait
        for room that only this subscription can make."""
        return _working_for.get() is self

    async def wait_for_room(self) -> None:
        """Return once the inbox has room, or is closed (the caller checks which)."""
        while self.full():
            self._join_crowd()  # so that the next worker to take a record calls `took`
            if self._room is None:
                self._room = anyio.Event()
            await self._room.wait()

    def release_waiters(self) -> None:
        """Wake every publisher waiting for room and every `drain` (the bus is stopping)."""
        if self._room is not None:
            self._room.set()
            self._room = None
        self.idle_now()

    async def wait_idle(self, is_idle: Callable[[], bool]) -> None:
        """Return once ``is_idle()`` holds; workers call `idle_now` when it may."""
        while not is_idle():
            if self.idle is None:
                self.idle = anyio.Event()
            await self.idle.wait()

    def _offer_at_bound(self, record: Item) -> None:
        """`offer` of a record that fills the queue, or finds it full, or finds the inbox closed."""
        if self._closed:
            return
        if self._where is not None and not self._accepts(record):
            return
        if len(self._queue) < self._capacity:
            self._queue.append(record)
            self._routed += 1
        else:
            self._overflow(record)
        if self.full():
            self._join_crowd()
        if self.parked:
            self.wake()

    def _accepts(self, record: Item) -> bool:
        """Apply ``where=``; a predicate that raises sends the record to dead letters."""
        if self._where is None:
            return True
        try:
            return bool(self._where(event_of(record)))
        except Exception as exc:
            self._rejections[seq_of(record)] = exc
            return True

    # -- catch-up's side ---------------------------------------------------------

    def on_spill(self, fall_behind: Callable[[int], None]) -> None:
        """Under the ``"spill"`` policy, call ``fall_behind(seq)`` with the first
        seq a full inbox did not keep (catch-up reads it back from there)."""
        self._spill = fall_behind

    def read_history(self, *, tailing: bool) -> None:
        """Deliver from pages of history (`add_page`) before the queue; while
        ``tailing`` (a store other processes append to) buffer nothing live."""
        self._behind = True
        self._tailing = tailing
        self._page_changed()

    def fall_behind(self) -> None:
        """Spill: what is queued is delivered as the first page (a worker going
        through it carries on), the queue starts empty, and the record that
        did not fit counts as missed."""
        self._page, self._queue = self._queue, self._page
        self._missed = True
        self.read_history(tailing=False)

    def go_live(self) -> None:
        """Back to delivering what the bus routes here."""
        self._behind = False
        self._tailing = False
        self._capacity = self.max_pending
        self._bounds_changed()

    @property
    def missed(self) -> bool:
        """A record was not kept because the inbox was full while behind, since `watch_misses`."""
        return self._missed

    def watch_misses(self) -> None:
        """Forget earlier misses: a read of the store begins."""
        self._missed = False

    def add_page(self, records: Sequence[Item]) -> None:
        """Add records read from the store (those ``where=`` accepts) to the page."""
        accepted = [record for record in records if self._accepts(record)]
        self._routed += len(accepted)
        self._page.extend(accepted)
        self._page_changed()

    def prune_below(self, seq: int) -> None:
        """Drop buffered records below ``seq``: a store read covered them."""
        queue = self._queue
        while queue and seq_of(queue[0]) < seq:
            record = queue.popleft()
            self._routed -= 1
            self._forget_rejection(record)

    def lost(self, count: int) -> None:
        """``count`` records are gone from the store before they were read: routed and dropped."""
        self._routed += count
        self._dropped += count

    def forget_pending(self, in_hand: int) -> None:
        """A durable subscription hands its unfinished work over with its lease:
        forget the page, the ``where=`` rejections and the ``in_hand`` records
        the workers had taken, as if they had never been routed here."""
        self._routed -= len(self._page) + in_hand
        self._page.clear()
        self._rejections.clear()
        self._page_changed()

    def _page_changed(self) -> None:
        if self._behind:
            self._capacity = 0 if self._tailing else max(0, self.max_pending - len(self._page))
        self._bounds_changed()

    # -- the workers' side -------------------------------------------------------

    def work_here(self) -> None:
        """Mark the calling task as this subscription's worker (see `delivers_here`);
        the tasks it starts inherit the mark."""
        _working_for.set(self)

    def took(self) -> None:
        """A worker took a record from a `crowded` inbox (or reserved room was
        given back): a waiting publisher may go on, and an inbox no longer
        full leaves the crowd."""
        room = self._room
        if room is not None:
            self._room = None
            room.set()
        if self.crowded and not self.full():
            self.crowded = False
            self._crowd.discard(self)

    def rejection(self, seq: int) -> Exception | None:
        """The exception ``where=`` raised for ``seq``, if any (once). The
        workers ask only while `rejections` is not empty."""
        return self._rejections.pop(seq, None)

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
        if self._closed:
            return anyio.lowlevel.checkpoint()
        self.parked = True
        lot = self._lot
        if lot is None:
            lot = self._lot = _parking_lot()
        return lot.park()

    def close(self) -> None:
        """Take nothing more; release publishers and drains that wait on this inbox.

        From now on `offer` passes this inbox by: a publisher that looked its
        route up before the subscription closed (and waited for room
        elsewhere meanwhile) still routes here, and that must neither queue
        nor count the record, nor apply a policy (a spill would call back into
        a catch-up that may be gone with its run). Once an event is stored,
        what becomes of a closing or closed subscription is the
        subscription's business, never the publisher's.
        """
        self._closed = True
        self._bounds_changed()
        self.crowded = False
        self._crowd.discard(self)
        self.release_waiters()
        self.wake()
        self._drops.flush()

    def flush_drop_report(self) -> None:
        """Log the drops not reported yet."""
        self._drops.flush()

    # -- counts ------------------------------------------------------------------

    def retried(self) -> None:
        """A failed attempt is made again."""
        self._retried += 1

    def dead_lettered(self) -> None:
        """A delivery ended as a dead letter."""
        self._dead_lettered += 1

    def stats(self, *, in_hand: int, position: int, holds_lease: bool | None) -> SubscriptionStats:
        """A snapshot of the counts, with ``in_hand`` records taken by the
        workers and not finished: ``pending`` is measured (queued, paged or in
        hand) and ``delivered`` is what is left of ``routed``, so the identity
        ``delivered + dropped + dead_lettered + pending == routed`` holds."""
        pending = len(self._queue) + len(self._page) + in_hand
        return SubscriptionStats(
            routed=self._routed,
            delivered=self._routed - self._dropped - self._dead_lettered - pending,
            failed=self._retried + self._dead_lettered,
            retried=self._retried,
            dead_lettered=self._dead_lettered,
            dropped=self._dropped,
            pending=pending,
            position=position,
            behind=self._behind,
            overflowed=self._overflowed,
            holds_lease=holds_lease,
        )

    # -- internals -------------------------------------------------------------------

    def _bounds_changed(self) -> None:
        """The capacity, reservations, ``behind`` or ``closed`` moved: recompute
        the bounds, and join the crowd if the inbox is full now."""
        live_block = self.policy == "block" and not self._behind and not self._closed
        self._block_at = self.max_pending if live_block else _NEVER
        # closed: no room, so that `offer` takes the slow way, which passes it by
        self._room_below = 0 if self._closed else min(self._capacity, self._block_at - self._reserved - 1)
        if self.full():
            self._join_crowd()

    def _join_crowd(self) -> None:
        if not self.crowded:
            self.crowded = True
            self._crowd.add(self)

    def _overflow(self, record: Item) -> None:
        if self._behind:
            self._missed = True
            self._forget_rejection(record)
        elif self.policy == "block":
            # publish waited for room before appending, unless it came from this
            # subscription's own handler (which cannot wait for room only it can
            # make), and a concurrent publisher may have taken the room since:
            # the queue holds a few more, counted.
            self._queue.append(record)
            self._routed += 1
            self._overflowed += 1
        elif self.policy == "drop_newest":
            self._routed += 1
            self._dropped += 1
            self._forget_rejection(record)
            self._drops.dropped(record, self.policy)
        elif self.policy == "drop_oldest":
            oldest = self._queue.popleft()
            self._queue.append(record)
            self._routed += 1
            self._dropped += 1
            self._forget_rejection(oldest)
            self._drops.dropped(oldest, self.policy)
        else:
            assert self._spill is not None
            self._forget_rejection(record)
            self._spill(seq_of(record))

    def _forget_rejection(self, record: Item) -> None:
        if self._rejections:
            self._rejections.pop(seq_of(record), None)


def offer(inboxes: Iterable[Inbox], record: Item) -> None:
    """Give ``record`` to the ``inboxes`` the bus routed it to (it routes in
    seq order). One call for all of them: an inbox with room takes the record
    inline, so a fan-out to n subscriptions is not n calls. A closed inbox
    has no room (see `Inbox.close`): it passes the record by."""
    for inbox in inboxes:
        queue = inbox._queue
        if len(queue) < inbox._room_below:
            if inbox._where is not None and not inbox._accepts(record):
                continue
            queue.append(record)
            inbox._routed += 1
            if inbox.parked:
                inbox.wake()
        else:
            inbox._offer_at_bound(record)


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
