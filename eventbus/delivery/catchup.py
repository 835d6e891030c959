"""Catch-up: delivering stored history, then switching to live without a gap
or a duplicate.

A subscription is in one of three states (`CatchUpState`):

- ``LIVE``: it delivers what the bus routes into its inbox.
- ``BEHIND``: it reads records back from the store, page by page, while the
  bus keeps buffering what is published meanwhile. It starts behind when it
  has ``from_seq`` or ``durable=True``, and falls behind when its inbox
  overflows under the ``"spill"`` policy.
- ``TAILING``: on a store that other processes append to
  (``shared_between_processes``), a subscription that started from history
  never turns live: the live inbox only ever sees this bus's own events. It
  keeps reading the store instead, buffering nothing and sleeping in the
  store's ``wait_for_append`` between reads, so it sees every process's
  events in seq order.

Switching from behind to live (the shape of EventStoreDB's catch-up
subscriptions):

1. While behind, records the bus routes here are still buffered in the inbox
   as long as there is room; when there is none the record is not kept but
   the inbox notes that it *missed* one.
2. A step reads the store from ``next_seq`` (the first seq not covered yet)
   into the inbox's page, which the workers deliver first, then drops
   buffered records below the new ``next_seq``: they are in the page.
3. When a read comes back empty and nothing was missed since that read
   began, every record above ``next_seq`` was published after the read
   started and so sits in the buffer, in order: the subscription turns live
   and goes on with the buffer. If something was missed, it reads again.

A record appended before an empty read started would have been in that read,
and one appended after it is buffered or flagged as missed, so none falls
between the two. The bus routes records in seq order (one append in flight
at a time), which keeps the buffer ordered.

History the store no longer holds (a read below its ``first_seq`` raises
`HistoryTruncated`: a `MemoryStore` past ``max_records``, or a ``from_seq`` or
durable checkpoint older than what retention kept) is not retried: the seqs
lost are counted as routed and dropped, a warning names the subscription and
the range, and catch-up goes on from ``first_seq``. `needed_from` tells the
store's compaction how far back a running subscription still reads.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection

from .._log import logger
from .._weak import weak_method
from ..exceptions import HistoryTruncated
from ..store.base import DEFAULT_PAGE_SIZE, Store
from .inbox import Inbox
from .recovery import retrying

__all__ = ["CatchUp", "CatchUpState", "Step"]


class CatchUpState(enum.Enum):
    """Where a subscription takes its records from."""

    LIVE = "live"
    BEHIND = "behind"
    TAILING = "tailing"


class Step(enum.Enum):
    """What a catch-up step found, and so what the worker does next."""

    READ = "read"
    """The page holds records (or the state changed): deliver, then step again."""
    WAIT_FOR_HEAD = "wait_for_head"
    """``from_seq`` lies past the bus's head: park until the bus routes more."""
    WAIT_FOR_APPEND = "wait_for_append"
    """Tailing and up to date: wait for another append to the store."""


class CatchUp:
    """The catch-up state of one subscription for one run of the bus.

    Args:
        inbox: the subscription's inbox (its buffer while behind, and the page).
        store: where history is read from.
        types: the type names to read (None: all).
        head: the newest seq the bus has committed, asked at each step.
        from_seq: the first seq to deliver (None: start live).
        shared_store: the store is appended to by other processes (tail it).
    """

    def __init__(
        self,
        inbox: Inbox,
        store: Store,
        types: Collection[str] | None,
        head: Callable[[], int],
        from_seq: int | None,
        shared_store: bool,
    ) -> None:
        self._inbox = inbox
        self._store = store
        self._types = types
        self._head = head
        self.next_seq = from_seq or 1
        """The first seq not covered yet by a read of the store."""
        if inbox.policy == "spill":
            # a bound method would close a cycle (see eventbus._weak); the inbox
            # calls it only while open (see Inbox.close), while this run lives
            inbox.on_spill(weak_method(self.fall_behind))
        self.state = CatchUpState.LIVE
        if from_seq is not None:
            self._enter(CatchUpState.TAILING if shared_store else CatchUpState.BEHIND)

    def start_at(self, seq: int) -> None:
        """Deliver from ``seq`` (a durable subscription's resume point)."""
        self.next_seq = seq

    def fall_behind(self, from_seq: int) -> None:
        """Spill: stop buffering, deliver what is queued, then read from the store."""
        self.next_seq = from_seq
        self.state = CatchUpState.BEHIND
        self._inbox.fall_behind()
        logger.warning(
            "subscription fell behind, reading back from the store", subscription=self._inbox.name, from_seq=from_seq
        )

    async def step(self) -> Step:
        """One read of the store (see the module docstring)."""
        inbox = self._inbox
        tailing = self.state is CatchUpState.TAILING
        if not tailing and self._head() < self.next_seq - 1:
            inbox.prune_below(self.next_seq)
            return Step.WAIT_FOR_HEAD
        inbox.watch_misses()
        # Everything up to this head is committed, so a read that comes back
        # short has covered it, even where the type filter skipped the last seqs.
        covered = self._head()
        if tailing:
            # Other processes, and transactions, append past this bus's head: the
            # store's, read before the page, is committed as far as it goes. Without
            # it a subscription whose types they did not append would read the same
            # empty page again each time the store announced their appends.
            covered = max(covered, await retrying(self._store.head, "head read", inbox.name))
        # a page never holds more than max_pending records: memory stays bounded while behind
        limit = min(DEFAULT_PAGE_SIZE, inbox.max_pending)
        from_seq = self.next_seq
        try:
            page = await retrying(
                lambda: self._store.read(from_seq, types=self._types, limit=limit),
                "catch-up read",
                inbox.name,
                from_seq=from_seq,
            )
        except HistoryTruncated as exc:
            self._lost(from_seq, exc.first_seq)
            return Step.READ
        if len(page) < limit:
            self.next_seq = max(self.next_seq, covered + 1)
        if page:
            self.next_seq = max(self.next_seq, page[-1].seq + 1)
            inbox.prune_below(self.next_seq)
            inbox.add_page(page)
            return Step.READ
        if inbox.missed:
            return Step.READ
        if tailing:
            return Step.WAIT_FOR_APPEND
        inbox.prune_below(self.next_seq)
        self._enter(CatchUpState.LIVE)
        return Step.READ

    def needed_from(self) -> int:
        """The lowest seq this subscription may still read from the store."""
        if self.state is not CatchUpState.LIVE:
            return self.next_seq
        # A live subscription reads the store only after spilling a record,
        # and the bus has routed everything up to its head already.
        return self._head() + 1

    async def wait_for_append(self) -> None:
        """Tailing: return once the store may hold a record past ``next_seq - 1``."""
        after = self.next_seq - 1
        await retrying(lambda: self._store.wait_for_append(after), "waiting for appends", self._inbox.name)

    def _enter(self, state: CatchUpState) -> None:
        self.state = state
        if state is CatchUpState.LIVE:
            self._inbox.go_live()
        else:
            self._inbox.read_history(tailing=state is CatchUpState.TAILING)

    def _lost(self, from_seq: int, first_seq: int) -> None:
        """Seqs ``from_seq`` to ``first_seq - 1`` are gone from the store: count them as dropped, go on after them."""
        lost = max(0, first_seq - from_seq)
        self._inbox.lost(lost)
        self.next_seq = max(self.next_seq, first_seq)
        logger.warning(
            "history no longer stored, events dropped",
            subscription=self._inbox.name,
            from_seq=from_seq,
            to_seq=first_seq - 1,
            dropped=lost,
        )
