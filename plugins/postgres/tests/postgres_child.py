"""A separate process for the PostgreSQL tests: appends or publishes ticks, printing acknowledgements.

    python postgres_child.py store BACKEND URL BATCH_SIZE [BATCHES]
    python postgres_child.py bus BACKEND URL BATCH_SIZE

``store`` appends batches of ``BATCH_SIZE`` ticks straight to a
`PostgresStore` (``BATCHES`` of them, or until killed) and prints
``ack FIRST LAST`` (the batch's seqs) after each append returns.

``bus`` runs an `EventBus` on the URL with a durable subscription named
``audit`` (from seq 1) that prints ``handled SEQ`` for each tick it handles,
and publishes batches until killed, printing ``ack FIRST LAST`` after each.

Every line is flushed, so a parent that reads it knows it happened.
"""

from __future__ import annotations

import logging
import sys
from itertools import count

import anyio
import structlog
from eventbus_postgres import PostgresStore
from postgres_events import Tick, tick_records

from eventbus import EventBus, Record

AUDIT = "audit"
"""The name of the durable subscription of ``bus`` mode."""


async def append_ticks(url: str, batch_size: int, batches: int | None) -> None:
    store = PostgresStore(url)
    await store.open()
    try:
        for batch in count() if batches is None else range(batches):
            records = tick_records(0, batch * batch_size, batch_size, batch=batch)
            await store.append(records)
            print("ack", records[0].seq, records[-1].seq, flush=True)
    finally:
        await store.close()


def audit(event: Tick, record: Record) -> None:
    print("handled", record.seq, flush=True)


async def publish_ticks(url: str, batch_size: int) -> None:
    # a short lease: the test's restarted bus takes the killed one's over within a second
    bus = EventBus(store=url, lease_ttl=1.0)
    bus.subscribe(Tick, audit, durable=True, from_seq=1, name=AUDIT)
    async with bus:
        for batch in count():
            first = batch * batch_size
            seqs = await bus.publish_many(Tick(batch=batch, n=n) for n in range(first, first + batch_size))
            print("ack", seqs[0], seqs[-1], flush=True)


def main() -> None:
    # stdout carries the acknowledgements: the bus's log lines go to stderr, warnings and up only.
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    mode, backend, url, batch_size, *batches = sys.argv[1:]
    if mode == "store":
        anyio.run(append_ticks, url, int(batch_size), int(batches[0]) if batches else None, backend=backend)
    else:
        anyio.run(publish_ticks, url, int(batch_size), backend=backend)


if __name__ == "__main__":
    main()
