"""The counts of a bus and its subscriptions, as frozen snapshots (`EventBus.stats`, `Subscription.stats`)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["BusStats", "SubscriptionStats"]


@dataclass(frozen=True)
class SubscriptionStats:
    """What one subscription has done, at the moment `stats()` was called.

    Every event routed to a subscription ends in exactly one of ``delivered``,
    ``dropped`` and ``dead_lettered``, or is still ``pending``, so
    ``delivered + dropped + dead_lettered + pending == routed`` at any moment.

    Attributes:
        routed: events given to the subscription (matching type and filter).
        delivered: handled successfully (after retries, if any).
        failed: handler attempts that raised or timed out.
        retried: attempts made again after a failure.
        dead_lettered: deliveries that ended as dead letters.
        dropped: events dropped by a ``drop_oldest`` / ``drop_newest`` policy.
        overflowed: events a ``"block"`` subscription took past
            ``max_pending``: published by its own handler (which cannot wait
            for room only it can make), or by publishers that found room at
            the same moment.
        pending: routed events not finished yet (queued, being read back from
            the store, or in a handler).
        position: the greatest seq up to which every routed event is finished
            (0 before the first); durable subscriptions checkpoint it.
        behind: the subscription is reading events back from the store
            (catching up from ``from_seq``, or after spilling).
        holds_lease: for a durable subscription on a store shared between
            processes, whether this process holds its lease and so delivers it
            (False: another process does, this one stands by); None for the
            others, which need no lease.
    """

    routed: int
    delivered: int
    failed: int
    retried: int
    dead_lettered: int
    dropped: int
    pending: int
    position: int
    behind: bool
    overflowed: int = 0
    holds_lease: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        """The counters as a plain dict of ints, bools and None, ready for ``json.dumps``."""
        return asdict(self)


@dataclass(frozen=True)
class BusStats(Mapping[str, SubscriptionStats]):
    """``bus.stats()``: the bus's counters and a `SubscriptionStats` per subscription.

    Behaves as a read-only mapping from subscription name to its stats, so
    ``bus.stats()["ship"].delivered`` works.

    Attributes:
        published: events this bus appended to its store.
        head: the greatest seq this bus has seen appended.
        first_seq: the first seq the store still holds (1 until retention
            removed anything; see `Store.first_seq`).
        subscriptions: name -> `SubscriptionStats`.
    """

    published: int
    head: int
    first_seq: int
    subscriptions: Mapping[str, SubscriptionStats]

    def __getitem__(self, name: str) -> SubscriptionStats:
        return self.subscriptions[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.subscriptions)

    def __len__(self) -> int:
        return len(self.subscriptions)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable data: ``published``, ``head``, ``first_seq``
        and ``subscriptions`` (name -> `SubscriptionStats.to_dict`), for a
        health endpoint or ``json.dumps``."""
        return {
            "published": self.published,
            "head": self.head,
            "first_seq": self.first_seq,
            "subscriptions": {name: stats.to_dict() for name, stats in self.subscriptions.items()},
        }
