"""Events and helpers shared by the delivery-policy tests (backpressure,
concurrency, retry, timeout, dead letters, shutdown, fault injection).

Every event here is registered under a ``policy.`` name, so no other test
module can collide with it in the process-wide registry.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import anyio

from eventbus import Event, EventBus, Record, SubscriptionStats

WAIT = 10.0
"""Upper bound, in seconds, on any wait in these tests; a healthy run never comes close."""


class Tick(Event, name="policy.tick"):
    n: int
    key: str = ""


def n_of(record: Record) -> int:
    """The ``n`` of the `Tick` in ``record``."""
    event = record.event
    assert isinstance(event, Tick), event
    return event.n


class Hold:
    """Holds every call of a handler until the test calls ``release()``.

    ``entered`` is set when the first call starts; ``calls`` counts the calls
    that have started; ``inside`` is how many are held right now.
    """

    def __init__(self) -> None:
        self.entered = anyio.Event()
        self._released = anyio.Event()
        self.calls = 0
        self.inside = 0

    async def wait(self) -> None:
        self.calls += 1
        self.inside += 1
        self.entered.set()
        try:
            await self._released.wait()
        finally:
            self.inside -= 1

    def release(self) -> None:
        self._released.set()


class Seen:
    """Collects the ``n`` of every handled `Tick`, and sets ``reached`` once
    ``n == until`` has been handled (for waits that cannot use ``drain``)."""

    def __init__(self, until: int | None = None) -> None:
        self.ns: list[int] = []
        self.until = until
        self.reached = anyio.Event()

    def add(self, event: Tick) -> None:
        self.ns.append(event.n)
        if event.n == self.until:
            self.reached.set()


def accounted(stats: SubscriptionStats) -> bool:
    """The accounting identity every subscription keeps at every moment."""
    return stats.delivered + stats.dropped + stats.dead_lettered + stats.pending == stats.routed


def assert_all_accounted(bus: EventBus) -> None:
    """Check the accounting identity for every subscription of ``bus``."""
    for name, stats in bus.stats().items():
        assert accounted(stats), (name, stats)


async def publish_ticks(bus: EventBus, ns: Iterable[int], **fields: Any) -> list[int]:
    """Publish one `Tick` per ``n``, one publish each; the seqs in order."""
    return [await bus.publish(Tick(n=n, **fields)) for n in ns]


def log_events(logs: Iterable[Mapping[str, Any]], event: str) -> list[Mapping[str, Any]]:
    """The captured structlog entries whose message is ``event``."""
    return [entry for entry in logs if entry["event"] == event]
