"""Checkpoints: saving how far a durable subscription has got.

A subscription's *position* is the greatest seq up to which every record it
was given is finished; its workers keep it (`eventbus.delivery.workers`).
A durable subscription saves its position in the store under its name: after
`CHECKPOINT_EVERY` deliveries, once it has run out of work for
`CHECKPOINT_IDLE` seconds, and when it stops. After a crash, at most
`CHECKPOINT_EVERY` deliveries (per worker) are made again. A save that fails
is logged and tried again later, after a pause that doubles up to
`~eventbus.delivery.recovery.MAX_BACKOFF`.

A subscription holding a lease (`eventbus.delivery.lease`) saves fenced with
the lease's token; a save the store refuses because another process has
taken the lease (`LeaseLost`) loses the lease, and nothing more is saved
until it is held again.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Protocol

import anyio

from .._log import logger
from ..exceptions import LeaseLost
from ..store.base import LeaseFence, Store
from .recovery import Backoff, retrying

__all__ = ["CHECKPOINT_EVERY", "CHECKPOINT_IDLE", "CLOSE_SAVE_TIMEOUT", "Checkpoints", "Fencing"]

CHECKPOINT_EVERY = 1_000
"""A durable subscription saves its position after this many deliveries, when
it has run out of work for `CHECKPOINT_IDLE` seconds, and when it closes. After
a crash, at most this many deliveries are made again."""
CHECKPOINT_IDLE = 1.0
"""Seconds a durable subscription waits, out of work, before saving its
position: a trickle of events does not cost a store write each."""

CLOSE_SAVE_TIMEOUT = 5.0
"""Seconds a stopping durable subscription keeps retrying a failed save of its position."""


class Fencing(Protocol):
    """What the checkpoints of a leased subscription see of its lease (`eventbus.delivery.lease.Lease`)."""

    @property
    def held(self) -> bool:
        """True while this process holds the lease."""
        ...

    @property
    def fence(self) -> LeaseFence:
        """What a save carries, so that the store refuses it once the lease changed hands."""
        ...

    def lose(self, reason: str) -> None:
        """The lease is lost: stop delivering and stand by."""


class Checkpoints:
    """Loading and saving one subscription's position during one run.

    Args:
        name: the subscription's name (the checkpoint's key).
        store: where durable positions are saved.
        durable: save the position (otherwise every call here is a no-op).
        lease: the lease of a durable subscription on a store shared between
            processes: saves carry its fence, and a refused one loses it.
    """

    def __init__(self, name: str, store: Store, durable: bool, lease: Fencing | None = None) -> None:
        self.name = name
        self.durable = durable
        self._store = store
        self._lease = lease
        self._saved = 0
        self._saving: int | None = None  # the position a save in flight writes
        self._idle_at = -1  # the position when the subscription last ran out of work
        self._idle_deadline = math.inf
        self._retry_at = -math.inf
        self._backoff = Backoff()

    @property
    def saved(self) -> int:
        """The position last saved (-1 before the first save)."""
        return self._saved

    def saved_in_transaction(self, position: int) -> None:
        """A projection's delivery saved ``position`` in its own transaction
        (`eventbus.delivery.projection`): the saves here have nothing to add."""
        self._saved = max(self._saved, position)
        self._backoff.reset()

    async def load(self, start: int) -> int:
        """Where a durable subscription resumes: after its saved position, if it
        has one; otherwise at ``start``, which is saved at once, so that a restart
        before the first delivery finishes resumes there and not at a newer head."""
        saved = await retrying(lambda: self._store.load_checkpoint(self.name), "checkpoint load", self.name)
        if saved is not None:
            self._saved = saved
            return saved + 1
        self._saved = -1  # nothing saved yet, not even 0
        await self._save(start - 1)
        return start

    async def wait_saving_when_idle(self, wait: Callable[[], Awaitable[None]], position: Callable[[], int]) -> None:
        """``await wait()``; a durable subscription whose ``position()`` moved
        saves it once it has stood still for `CHECKPOINT_IDLE` seconds (across
        waits that return early, such as tailing a store's appends)."""
        # A position another idle worker is saving counts as saved here: the
        # concurrent workers of one subscription stand still together, and
        # would otherwise all write the same position at the same moment.
        while self.durable and (now := position()) != self._saved and now != self._saving:
            if self._idle_at != now:
                self._idle_at = now
                self._idle_deadline = anyio.current_time() + CHECKPOINT_IDLE
            with anyio.CancelScope(deadline=max(self._idle_deadline, self._retry_at)):
                await wait()
                return
            if position() != self._saving:  # else another worker's deadline came first
                await self.save(position())
        await wait()

    async def save(self, position: int) -> bool:
        """Checkpoint a durable subscription's ``position``, if it moved; a
        failure is logged and the next save waits for the backoff. Returns
        whether the saved position is now ``position``."""
        if not self.durable:
            return True
        return await self._save(position)

    async def _save(self, position: int) -> bool:
        if position == self._saved:
            return True
        lease = self._lease
        self._saving = position
        try:
            if lease is None:
                await self._store.save_checkpoints({self.name: position})
            else:
                await self._store.save_checkpoints({self.name: position}, fence=lease.fence)
        except Exception as exc:
            if isinstance(exc, LeaseLost) and lease is not None:
                lease.lose("checkpoint save refused: another process has taken the lease")
                return False
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
        finally:
            if self._saving == position:
                self._saving = None
        self._saved = position
        self._backoff.reset()
        return True

    async def save_on_close(self, position: int) -> None:
        """The last save of a stopping subscription, at its final ``position``:
        shielded from cancellation, retried with backoff for up to
        `CLOSE_SAVE_TIMEOUT` seconds, unless the lease is lost meanwhile."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_SAVE_TIMEOUT):
            saved = await self.save(position)
            while not saved and (self._lease is None or self._lease.held):
                await anyio.sleep_until(self._retry_at)
                saved = await self.save(position)
