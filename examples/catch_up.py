"""Catch-up: subscribe from seq 1 while publishers keep going, and get the
history first, then live events, with no gap and no duplicate at the switch.

    python examples/catch_up.py [STORE]

STORE is a store URL (``memory://``, the default, or ``sqlite:///ticks.db``)
or the path of a SQLite file.

How it works (see the `eventbus.delivery.catchup` module docs): the subscription
buffers what is published from the moment it subscribes, reads the store from
``from_seq`` page by page, and once a read finds nothing new it continues with
the buffer, skipping what the store reads already covered. On a store shared
between processes (SQLite, PostgreSQL) it keeps reading the store instead of
switching, so it also sees events that other processes append.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import anyio
import anyio.lowlevel
import structlog

from eventbus import Event, EventBus, Record

HISTORY = 2_000  # events stored before anyone subscribes
PUBLISHERS = 4
AFTER_CATCH_UP = 200  # events each publisher still sends once the subscriber has caught up
MAX_PER_PUBLISHER = 50_000  # a bound, so the example ends whatever happens
BURST = 10  # events a publisher sends before letting the other tasks run


class Tick(Event, name="catch_up.tick"):
    publisher: int
    n: int


def store_from_argv() -> str:
    """The store URL from the command line: a URL as is, a path as a SQLite file."""
    if len(sys.argv) < 2:
        return "memory://"
    arg = sys.argv[1]
    return arg if "://" in arg else f"sqlite:///{Path(arg).resolve()}"


async def main() -> None:
    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
    )
    received: list[int] = []
    switched_at: int | None = None  # first seq delivered from the live queue
    caught_up = anyio.Event()

    async with EventBus(store=store_from_argv()) as bus:
        tails_store = bus.store.features.shared_between_processes
        start = bus.head + 1  # a SQLite file may hold earlier runs' events
        await bus.publish_many(Tick(publisher=0, n=n) for n in range(HISTORY))
        print(f"stored {HISTORY} events of history (seqs {start}..{bus.head})")

        async def publisher(number: int, running: anyio.Event) -> None:
            remaining = AFTER_CATCH_UP
            for n in range(MAX_PER_PUBLISHER):
                await bus.publish(Tick(publisher=number, n=n))
                if caught_up.is_set():
                    remaining -= 1
                    if not remaining:
                        return
                if n % BURST == BURST - 1:
                    running.set()
                    await anyio.lowlevel.checkpoint()  # give the others (and the subscriber) a turn

        async def audit(event: Tick, record: Record) -> None:
            nonlocal switched_at
            received.append(record.seq)
            if tails_store:
                if record.seq >= bus.head:
                    caught_up.set()
            # `behind` is true while the subscription reads from the store
            elif switched_at is None and not bus.subscriptions["audit"].stats().behind:
                switched_at = record.seq
                caught_up.set()
            if record.seq % 100 == 0:
                await anyio.lowlevel.checkpoint()  # a handler that awaits now and then, as real ones do

        async with anyio.create_task_group() as tg:
            running = [anyio.Event() for _ in range(PUBLISHERS)]
            for number, event in enumerate(running, start=1):
                tg.start_soon(publisher, number, event)
            for event in running:
                await event.wait()
            # Every publisher is busy: subscribe from the start of history now.
            head_at_subscribe = bus.head
            bus.subscribe(Tick, audit, name="audit", from_seq=start)
            print(f"subscribed from seq {start} while {PUBLISHERS} publishers run (head was {head_at_subscribe})")
        await bus.drain()

        stored = [record.seq async for record in bus.replay(Tick, from_seq=start)]
        stats = bus.stats()["audit"]

    history = sum(1 for seq in received if seq <= head_at_subscribe)
    print(f"the publishers stopped at head {bus.head}")
    later = len(received) - history
    print(f"audit received {len(received)} events: {history} from before it subscribed, {later} after")
    if switched_at is not None:
        print(f"history then live: read the store up to seq {switched_at - 1}, live from seq {switched_at}")
    elif tails_store:
        print("history then live: this store is shared between processes, so audit tails it to the end")
    print(f"audit stats: delivered={stats.delivered} position={stats.position}")
    if received == stored:
        print(f"every stored event from seq {start} arrived once, in seq order: no gap, no duplicate")
    else:
        missing = sorted(set(stored) - set(received))
        duplicates = len(received) - len(set(received))
        print(f"MISMATCH: {len(missing)} missing (first {missing[:5]}), {duplicates} duplicates")
        raise SystemExit(1)


if __name__ == "__main__":
    anyio.run(main)
