"""Backpressure: a slow handler behind a fast publisher, under each policy.

    python examples/backpressure.py [STORE]

Every subscription has a bounded queue (``max_pending``). When it is full,
``backpressure=`` decides what happens to the next event:

- ``"drop_oldest"`` / ``"drop_newest"``: drop one, counted in ``bus.stats()``
  and logged (at most once a second, so a flood of drops is one log line);
- ``"spill"``: keep nothing more in memory, fall behind, and read the missed
  events back from the store later: memory stays bounded, and nothing is lost
  while the store still holds them (the memory store keeps ``max_records``);
- ``"block"`` (the default, not shown): ``publish`` waits for room.

STORE is a store URL (``memory://``, the default, or ``sqlite:///bp.db``) or
the path of a SQLite file. The drop warnings go to stderr.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import anyio
import structlog

from eventbus import Backpressure, Event, EventBus, SubscriptionStats

EVENTS = 100
MAX_PENDING = 10
SLOW = 0.001  # seconds the handler takes per event


class Reading(Event, name="backpressure.reading"):
    n: int


def store_from_argv() -> str:
    """The store URL from the command line: a URL as is, a path as a SQLite file."""
    if len(sys.argv) < 2:
        return "memory://"
    arg = sys.argv[1]
    return arg if "://" in arg else f"sqlite:///{Path(arg).resolve()}"


def show(stats: SubscriptionStats) -> str:
    return (
        f"routed={stats.routed} delivered={stats.delivered} dropped={stats.dropped} "
        f"pending={stats.pending} behind={stats.behind}"
    )


async def run(store: str, policy: Backpressure) -> None:
    print(f"{policy}: {EVENTS} events into a queue of {MAX_PENDING}")
    seen: list[int] = []
    entered = anyio.Event()
    gate = anyio.Event()  # holds the handler on the first event so the queue fills up

    async with EventBus(store=store) as bus:

        @bus.subscribe(name="slow", max_pending=MAX_PENDING, backpressure=policy)
        async def slow(event: Reading) -> None:
            entered.set()
            await gate.wait()
            await anyio.sleep(SLOW)
            seen.append(event.n)

        await bus.publish(Reading(n=1))
        await entered.wait()  # the handler has taken event 1 and is stuck on it
        for n in range(2, EVENTS + 1):
            await bus.publish(Reading(n=n))  # never waits: the policy makes room
        during = bus.stats()["slow"]
        print(f"  after publishing: {show(during)}")
        if during.behind:
            print(f"  in memory: {during.pending} events; the other {EVENTS - during.routed} wait in the store only")
        gate.set()
        await bus.drain()
        after = bus.stats()["slow"]
        print(f"  after drain:      {show(after)}")

    kept = f"{seen[:3]} ... {seen[-3:]}" if len(seen) > 6 else str(seen)
    print(f"  the handler saw {len(seen)} events: {kept}")
    # No policy loses an event silently: each one is delivered, dropped (and
    # counted), dead-lettered, or still pending.
    if after.delivered + after.dropped + after.dead_lettered + after.pending != EVENTS:
        raise SystemExit(f"{policy}: events unaccounted for: {after}")


async def main() -> None:
    structlog.configure(
        processors=[structlog.processors.add_log_level, structlog.dev.ConsoleRenderer(colors=False)],
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
    )
    store = store_from_argv()
    for policy in ("drop_oldest", "drop_newest", "spill"):
        await run(store, policy)
    print(f"every policy accounted for all {EVENTS} events: delivered + dropped == published")


if __name__ == "__main__":
    anyio.run(main)
