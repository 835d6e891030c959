"""Leases: one process at a time delivers a durable subscription on a shared store.

Several processes (replicas of one service) may run the same durable
subscription on one SQLite file or PostgreSQL database. Its name is leased in
the store (`Store.acquire_lease`): the holder delivers, the others *stand by*,
asking again every quarter of ``lease_ttl``. The holder renews its lease every
quarter of ``lease_ttl``, each time for `HOLD_SHARE` of it. A holder that
closes releases the lease, and a stand-by takes over at its next try; one that
is killed stops renewing, and its lease runs out at most ``3/4 lease_ttl``
after its last renewal, so a stand-by takes over within ``lease_ttl``. The new
holder resumes from the checkpoint, which is at most `CHECKPOINT_EVERY`
deliveries behind what the old one handled: those are delivered again.

A holder that cannot renew in time (the store unreachable, the process
paused) has lost its lease: it stops delivering at once, without saving its
position (another process may hold the name by now), and stands by again.

Leases are fenced, twice over, because a process can be paused (SIGSTOP, a
VM migrating, a stop-the-world swap storm) at any instruction and resumed
after its lease has gone to another process:

- *The deadline.* Each acquisition or renewal is good until `HOLD_SHARE` of
  ``lease_ttl`` after the moment it was *asked*, on this process's monotonic
  clock, read before the request: the store's clock started the lease later
  than that, so this deadline never lies past the store's. Every handler
  call of a leased subscription first compares the clock with it (`guard`);
  past it, the call waits for the renewal, and starts only if the lease was
  renewed without changing hands. A resumed process whose timers all fire at
  once therefore starts nothing before its renewal has been answered.
- *The fencing token.* The store hands out a token that grows each time the
  lease changes hands; every checkpoint save carries it (`fence`), and the
  store refuses it, in the same transaction as the write, once another
  holder has taken the lease. That covers what no clock can: a save that was
  on its way when the process stopped. A refused save (`LeaseLost`) loses
  the lease like a refused renewal.
"""

from __future__ import annotations

import enum
import math
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from uuid import uuid4

import anyio
import anyio.lowlevel

from .._log import logger
from ..handler import Handle
from ..record import Record
from ..store.base import LeaseFence, Store

__all__ = ["DEFAULT_LEASE_TTL", "HOLD_SHARE", "Lease", "LeaseState", "LeaseTerms", "new_holder"]

DEFAULT_LEASE_TTL = 10.0
"""The bus's default ``lease_ttl``, in seconds."""

HOLD_SHARE = 0.75
"""The part of ``lease_ttl`` each acquisition or renewal is written for: a
holder renews every quarter of ``lease_ttl``, a killed holder's lease runs out
at most this much of ``lease_ttl`` after its last renewal, and a stand-by asks
every quarter, so it takes over within ``lease_ttl``."""

_TRY_SHARE = 0.25
_REFUSED = "renewal refused: another process holds the lease, or held it in between"


def new_holder() -> str:
    """A holder name unique to one bus: host, process id and a random part, readable in the store."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid4().hex[:8]}"


@dataclass(frozen=True)
class LeaseTerms:
    """How a bus leases its durable subscriptions' names: who it is, and ``lease_ttl``."""

    holder: str
    ttl: float


class LeaseState(enum.Enum):
    """Where a durable subscription on a shared store stands with its lease."""

    ASKING = "asking"
    """Not asked yet, or asking for the first time."""
    HELD = "held"
    """This process holds the lease and delivers."""
    STANDING_BY = "standing_by"
    """Another process holds it; this one asks again every quarter of ``lease_ttl``."""


class Lease:
    """The lease on one durable subscription's name, for one run of the bus.

    Args:
        name: the subscription's name (the lease's key).
        terms: who this bus is and its ``lease_ttl``.
        store: the shared store holding the lease.
        on_standing_by: called when the subscription starts to stand by (it is idle then).
    """

    def __init__(self, name: str, terms: LeaseTerms, store: Store, on_standing_by: Callable[[], None]) -> None:
        self.name = name
        self.holder = terms.holder
        self.state = LeaseState.ASKING
        self._store = store
        self._ttl = terms.ttl
        self._on_standing_by = on_standing_by
        self._expires = -math.inf
        """The deadline of the lease held, on this process's clock, from before
        the request that got it; -inf while it is not held."""
        self._token = 0
        """The fencing token of this process's last acquisition (0: none yet, which no store hands out)."""
        self._holding: anyio.CancelScope | None = None
        """The scope of the deliveries while the lease is held: losing the lease cancels it."""
        self._answered = anyio.Event()
        """Set (and replaced) each time an acquisition or renewal is answered, or the lease is lost."""

    @property
    def held(self) -> bool:
        """True while this process holds the lease."""
        return self.state is LeaseState.HELD

    @property
    def fence(self) -> LeaseFence:
        """What a checkpoint save carries, so that the store refuses it once
        another process has taken the lease (see `Store.save_checkpoints`)."""
        return LeaseFence(self.name, self._token)

    def guard(self, call: Handle) -> Handle:
        """``call`` (the handler step of the subscription), starting only within the lease's deadline.

        Past the deadline it first waits for the renewal that is due: renewed
        without changing hands, the call starts; lost, the deliveries are
        cancelled, this one before it starts. Outside the deliveries of a
        holding (a redrive while this process stands by) it starts at once.
        """

        async def guarded(record: Record) -> None:
            if anyio.current_time() >= self._expires:
                await self._wait_for_renewal()
            await call(record)

        return guarded

    def lose(self, reason: str) -> None:
        """The lease is lost (``reason`` says how): stop delivering at once,
        without saving the position, and ask again; nothing if not held."""
        if self.state is not LeaseState.HELD:
            return
        self.state = LeaseState.ASKING
        self._expires = -math.inf
        logger.warning("lease lost: stopped delivering, standing by", subscription=self.name, reason=reason)
        if self._holding is not None:
            self._holding.cancel()
        self._answer()

    async def deliver_while_held(self, deliver: Callable[[], Awaitable[None]]) -> None:
        """Forever: stand by until the lease is ours, then run ``deliver()``
        while renewing the lease; if the lease is lost, cancel ``deliver()``
        and stand by again."""
        while True:
            await self._acquire()
            async with anyio.create_task_group() as holding:
                self._holding = holding.cancel_scope
                holding.start_soon(self._renew)
                await deliver()

    async def release(self) -> None:
        """Give the lease up if it is held (the run is stopping); shielded, errors logged."""
        if self.state is not LeaseState.HELD:
            return
        self.state = LeaseState.ASKING
        self._expires = -math.inf
        with anyio.CancelScope(shield=True):
            try:
                await self._store.release_lease(self.name, self.holder)
            except Exception as exc:
                logger.warning(
                    "could not release lease; it runs out by itself", subscription=self.name, error=repr(exc)
                )

    async def _acquire(self) -> None:
        while not await self._ask():
            if self.state is not LeaseState.STANDING_BY:
                self.state = LeaseState.STANDING_BY
                logger.info("standing by: another process delivers this durable subscription", subscription=self.name)
                self._on_standing_by()
            await anyio.sleep(self._ttl * _TRY_SHARE)
        if self.state is LeaseState.STANDING_BY:
            logger.info("took over the lease, resuming from the checkpoint", subscription=self.name)
        self.state = LeaseState.HELD

    async def _ask(self) -> bool | None:
        """One acquisition or renewal: True when held, False when refused
        (another holder, or a renewal that finds the lease changed hands in
        between), None when the store failed (logged)."""
        asked_at = anyio.current_time()  # before the request: the store's lease starts later
        try:
            token = await self._store.acquire_lease(self.name, self.holder, self._ttl * HOLD_SHARE)
        except Exception as exc:
            logger.error("could not ask for lease", subscription=self.name, error=repr(exc))
            self._answer()
            return None
        changed_hands = self.state is LeaseState.HELD and token != self._token
        if token is not None and not changed_hands:
            self._token = token
            self._expires = asked_at + self._ttl * HOLD_SHARE
        self._answer()
        return token is not None and not changed_hands

    async def _renew(self) -> None:
        """Renew every quarter of ``ttl``; once the lease is refused, or has run
        out while the store failed, lose it (which cancels the deliveries)."""
        while True:
            await anyio.sleep_until(min(anyio.current_time() + self._ttl * _TRY_SHARE, self._expires))
            answer = await self._ask()
            if answer or (answer is None and anyio.current_time() < self._expires):
                continue
            self.lose(_REFUSED if answer is False else "ran out while the store failed")
            return

    async def _wait_for_renewal(self) -> None:
        """A handler call past the deadline: wait while the lease is held and
        the renewal unanswered; once it is lost, the cancelled deliveries raise here."""
        while self.state is LeaseState.HELD and anyio.current_time() >= self._expires:
            await self._answered.wait()
        await anyio.lowlevel.checkpoint_if_cancelled()

    def _answer(self) -> None:
        self._answered.set()
        self._answered = anyio.Event()
