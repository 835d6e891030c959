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
"""

from __future__ import annotations

import enum
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from uuid import uuid4

import anyio

from .._log import logger
from ..store.base import Store

__all__ = ["DEFAULT_LEASE_TTL", "HOLD_SHARE", "Lease", "LeaseState", "LeaseTerms", "new_holder"]

DEFAULT_LEASE_TTL = 10.0
"""The bus's default ``lease_ttl``, in seconds."""

HOLD_SHARE = 0.75
"""The part of ``lease_ttl`` each acquisition or renewal is written for: a
holder renews every quarter of ``lease_ttl``, a killed holder's lease runs out
at most this much of ``lease_ttl`` after its last renewal, and a stand-by asks
every quarter, so it takes over within ``lease_ttl``."""

_TRY_SHARE = 0.25


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
        self._expires = 0.0  # when the lease held runs out, on this process's clock (conservatively)

    @property
    def held(self) -> bool:
        """True while this process holds the lease."""
        return self.state is LeaseState.HELD

    async def deliver_while_held(self, deliver: Callable[[], Awaitable[None]]) -> None:
        """Forever: stand by until the lease is ours, then run ``deliver()``
        while renewing the lease; if the lease is lost, cancel ``deliver()``
        and stand by again."""
        while True:
            await self._acquire()
            async with anyio.create_task_group() as holding:
                holding.start_soon(self._renew, holding.cancel_scope)
                await deliver()

    async def release(self) -> None:
        """Give the lease up if it is held (the run is stopping); shielded, errors logged."""
        if self.state is not LeaseState.HELD:
            return
        self.state = LeaseState.ASKING
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
        (another holder), None when the store failed (logged)."""
        asked_at = anyio.current_time()
        try:
            acquired = await self._store.acquire_lease(self.name, self.holder, self._ttl * HOLD_SHARE)
        except Exception as exc:
            logger.error("could not ask for lease", subscription=self.name, error=repr(exc))
            return None
        if acquired:
            self._expires = asked_at + self._ttl * HOLD_SHARE
        return acquired

    async def _renew(self, holding: anyio.CancelScope) -> None:
        """Renew every quarter of ``ttl``; once the lease is refused, or has run
        out while the store failed, cancel ``holding`` (the deliveries)."""
        while True:
            await anyio.sleep_until(min(anyio.current_time() + self._ttl * _TRY_SHARE, self._expires))
            answer = await self._ask()
            if answer or (answer is None and anyio.current_time() < self._expires):
                continue
            self.state = LeaseState.ASKING
            logger.warning("lease lost: stopped delivering, standing by", subscription=self.name)
            holding.cancel()
            return
