"""Positions and checkpoints: how far a subscription has got, and saving it.

A subscription's *position* is the greatest seq up to which every record it
was given is finished. With one worker that is the last record finished;
with ``concurrency=n`` records finish out of order, so the position only
moves past a seq once everything before it has finished too.

A durable subscription saves its position in the store under its name: after
`CHECKPOINT_EVERY` deliveries, once it has run out of work for
`CHECKPOINT_IDLE` seconds, and when it stops. After a crash, at most
`CHECKPOINT_EVERY` deliveries (per worker) are made again. A save that fails
is logged and tried again later, after a pause that doubles up to
`~eventbus.delivery.recovery.MAX_BACKOFF`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Awaitable, Callable

import anyio

from .._log import logger
from ..store.base import Store
from .recovery import Backoff, retrying

__all__ = ["CHECKPOINT_EVERY", "CHECKPOINT_IDLE", "CLOSE_SAVE_TIMEOUT", "Checkpoints"]

CHECKPOINT_EVERY = 1_000
"""A durable subscription saves its position after this many deliveries, when
it has run out of work for `CHECKPOINT_IDLE` seconds, and when it closes. After
a crash, at most this many deliveries are made again."""
CHECKPOINT_IDLE = 1.0
"""Seconds a durable subscription waits, out of work, before saving its
position: a trickle of events does not cost a store write each."""

CLOSE_SAVE_TIMEOUT = 5.0
"""Seconds a stopping durable subscription keeps retrying a failed save of its position."""

_NEVER = 2**30 - 1
"""`due` of a subscription that never saves: below 2**30, so that the workers'
``finished >= due`` stays an int compare CPython specializes (a non-durable
subscription past a billion deliveries only calls a `save_due` that saves nothing)."""


class Checkpoints:
    """The position of one subscription during one run, and its saving.

    Args:
        name: the subscription's name (the checkpoint's key).
        store: where durable positions are saved.
        durable: save the position (otherwise it is only tracked).
    """

    def __init__(self, name: str, store: Store, durable: bool) -> None:
        self.name = name
        self.durable = durable
        self.position = 0
        self._store = store
        self._saved = 0
        self.due = CHECKPOINT_EVERY if durable else _NEVER
        """The count of finished deliveries at which the next save is due (see `save_due`)."""
        self._idle_at = -1  # the position when the subscription last ran out of work
        self._idle_deadline = math.inf
        self._retry_at = -math.inf
        self._backoff = Backoff()
        self.in_flight: deque[int] = deque()
        """Seqs taken by concurrent workers and not all finished yet, in seq
        order: a worker appends the seq it takes, `finished` removes it."""
        self._finished_early: set[int] = set()

    async def load(self, start: int) -> int:
        """Where a durable subscription resumes: after its saved position, if it
        has one; otherwise at ``start``, which is saved at once, so that a restart
        before the first delivery finishes resumes there and not at a newer head.
        Seqs still in flight from an earlier resume (a lease lost) are forgotten."""
        self.in_flight.clear()
        self._finished_early.clear()
        saved = await retrying(lambda: self._store.load_checkpoint(self.name), "checkpoint load", self.name)
        if saved is not None:
            self.position = self._saved = saved
            return saved + 1
        self.position = start - 1
        self._saved = -1  # nothing saved yet, not even 0
        await self.save()
        return start

    @property
    def outstanding(self) -> bool:
        """Records taken by concurrent workers and not all finished yet."""
        return bool(self.in_flight)

    def finished(self, seq: int) -> None:
        """Advance the position past every seq finished in order (concurrent workers)."""
        outstanding = self.in_flight
        if outstanding[0] != seq:
            self._finished_early.add(seq)
            return
        outstanding.popleft()
        position = seq
        early = self._finished_early
        while outstanding and outstanding[0] in early:
            position = outstanding.popleft()
            early.discard(position)
        self.position = position

    async def save_due(self) -> None:
        """Save because `due` deliveries have finished; the next save is due
        `CHECKPOINT_EVERY` deliveries later."""
        self.due += CHECKPOINT_EVERY
        await self.save()

    async def wait_saving_when_idle(self, wait: Callable[[], Awaitable[None]]) -> None:
        """``await wait()``; a durable subscription whose position moved saves
        it once its position has stood still for `CHECKPOINT_IDLE` seconds
        (across waits that return early, such as tailing a store's appends)."""
        while self.durable and self.position != self._saved:
            if self._idle_at != self.position:
                self._idle_at = self.position
                self._idle_deadline = anyio.current_time() + CHECKPOINT_IDLE
            with anyio.CancelScope(deadline=max(self._idle_deadline, self._retry_at)):
                await wait()
                return
            await self.save()
        await wait()

    async def save(self) -> bool:
        """Checkpoint a durable subscription's position, if it moved; a failure
        is logged and the next save waits for the backoff. Returns whether the
        saved position is now the current one."""
        if not self.durable:
            return True
        position = self.position
        if position == self._saved:
            return True
        try:
            await self._store.save_checkpoints({self.name: position})
        except Exception as exc:
            delay = self._backoff.next()
            self._retry_at = anyio.current_time() + delay
            logger.error(
                "could not save checkpoint, retrying",
                subscription=self.name,
                position=position,
                error=repr(exc),
                retry_in=delay,
            )
            return False
        self._saved = position
        self._backoff.reset()
        return True

    async def save_on_close(self) -> None:
        """The last save of a stopping subscription: shielded from cancellation,
        retried with backoff for up to `CLOSE_SAVE_TIMEOUT` seconds."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_SAVE_TIMEOUT):
            saved = await self.save()
            while not saved:
                await anyio.sleep_until(self._retry_at)
                saved = await self.save()
