"""A child process for the crash tests: appends to a SQLite store as fast as it can.

    python sqlite_appender.py PATH WRITERS LIMIT BACKEND

Runs WRITERS tasks that append batches of 1 to 20 records until LIMIT records
are acknowledged in all (0: forever, until killed). After each append returns
it prints one line per record, ``<seq> <event id hex>``, and flushes: a printed
line is an acknowledged event, which must survive ``kill -9``.
"""

from __future__ import annotations

import random
import sys

import anyio
from eventbus_sqlite import SqliteStore

from eventbus import Event
from eventbus.testing.conformance import new_record


class Tick(Event, name="eventbus_sqlite.tests.Tick"):
    writer: int
    number: int
    padding: str


async def main(path: str, writers: int, limit: int) -> None:
    store = SqliteStore(path)
    await store.open()
    acknowledged = 0
    out = sys.stdout.buffer

    async def write(writer: int) -> None:
        nonlocal acknowledged
        sizes = random.Random(writer)
        number = 0
        while not limit or acknowledged < limit:
            batch = []
            for _ in range(sizes.randint(1, 20)):
                batch.append(new_record(Tick(writer=writer, number=number, padding="x" * (number % 200))))
                number += 1
            await store.append(batch)
            acknowledged += len(batch)
            out.write(b"".join(f"{record.seq} {record.event_id.hex}\n".encode() for record in batch))
            out.flush()

    async with anyio.create_task_group() as group:
        for writer in range(writers):
            group.start_soon(write, writer)
    await store.close()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), backend=sys.argv[4])
