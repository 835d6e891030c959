"""The least a bus with eventbus's guarantees costs per event, in pure Python.

Everything eventbus does per event, inlined into two functions: a `Record`
per event (id, time, seq), appended to a store list, routed to a bounded
deque, and a worker that sets the context variable (causation) and awaits
the handler, counting and advancing the position. No module boundaries, no
group commit, no policies. It measures how far the modular design is from
what the same guarantees cost at least.

    valgrind --tool=callgrind --callgrind-out-file=/dev/null python benchmarks/inlined_floor.py 20000 all
    (and with N=0, and with ``build`` for the cost of building the events)

Per event = ((N, all) - (0, all) - ((N, build) - (0, build))) / N.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import sys
import time
from collections import deque
from typing import Any

from eventbus import Event, Record

MAX_PENDING = 10_000


class Tick(Event, name="inlined.tick"):
    n: int


current: contextvars.ContextVar[Record | None] = contextvars.ContextVar("current", default=None)


class InlinedBus:
    """A store list, one bounded queue, one worker: nothing but the guarantees."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.queue: deque[Record] = deque()
        self.seq = 0
        self.next_id = 1
        self.routed = 0
        self.finished = 0
        self.position = 0
        self.handled = 0

    async def handler(self, event: Any) -> None:
        self.handled += 1

    async def publish(self, event: Tick) -> int:
        current.get()  # causation, as a publish from a handler would need it
        event_id = self.next_id
        self.next_id = event_id + 1
        record: Record = Record(0, event, "inlined.tick", 1, event_id, time.time_ns())
        self.seq += 1
        record.seq = self.seq
        self.records.append(record)
        if len(self.queue) < MAX_PENDING:
            self.queue.append(record)
            self.routed += 1
        return record.seq

    async def work(self) -> None:
        queue = self.queue
        enter = current.set
        while queue:
            record = queue.popleft()
            enter(record)
            with contextlib.suppress(Exception):
                await self.handler(record.decoded)
            self.finished += 1
            self.position = record.seq


async def main(count: int, mode: str) -> None:
    events = [Tick(n=n) for n in range(count)]
    if mode == "build":
        return
    bus = InlinedBus()
    for event in events:
        await bus.publish(event)
    await bus.work()
    assert bus.handled == count


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "all"))
