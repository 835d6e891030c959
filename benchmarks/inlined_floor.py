"""The least a bus with eventbus's guarantees costs per event, in pure Python.

Everything the contract asks per event, inlined into a few functions with no
module boundaries, no group commit, no policies and no anyio (asyncio
primitives directly): a `Record` per event (id, time, seq) appended to a
store list; per subscription a bounded queue, a worker task of its own that
parks when the queue is empty and is woken by the next publish, and a
publisher that waits for room when a queue is full (``"block"``
backpressure); per delivery the causation context variable set, the handler
awaited (a failure caught), the subscription's count and position moved; and
a drain that waits for every worker to finish. It measures how far the
modular design is from what the same guarantees cost at least, with one
subscription and with ten (fan-out).

The contract modes (`ContractBus`) also make, inlined, every per-event check
eventbus makes for the features a subscription may use, each feature unused
(the bus's state, causation, group commit, the store's bound, ``where=``,
catch-up, records against entries, dead letters, self-publishing,
checkpoints), and keep entries, eventbus's six-field tuples, instead of
records: the least the whole contract costs, which eventbus's module
structure adds to.

The paced modes yield to the event loop after each publish, so that every
publish wakes the workers (in a tight loop they wake once per burst), as
``instructions.py``'s paced cases do.

The script counts itself the way ``instructions.py`` counts eventbus, under
valgrind's callgrind, four processes per mode:

    python benchmarks/inlined_floor.py               # every mode, N = 20 000 (paced: 5 000), a few minutes
    python benchmarks/inlined_floor.py --quick       # N = 2 000
    python benchmarks/inlined_floor.py --parts       # what each ingredient costs alone

per event = ((N, bus) - (0, bus) - ((N, build) - (0, build))) / N, counted
per published event (ten deliveries in fan-out). ``--parts`` counts each
ingredient N times in a loop, in a process of its own, minus the bare loop:
the price list the floor, and eventbus, are made of.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from eventbus import Event, Record

MAX_PENDING = 10_000
"""eventbus's default ``max_pending``: with N = 20 000 the publisher waits for room, as eventbus's does."""
MODES = {
    "one": (1, False, False),
    "fanout": (10, False, False),
    "one-paced": (1, True, False),
    "fanout-paced": (10, True, False),
    "one-contract": (1, False, True),
    "fanout-contract": (10, False, True),
}
"""Subscriptions per mode, whether the publisher yields to the event loop after
each publish, and whether the bus makes every per-event check of the whole
contract (`ContractBus`)."""
N = 20_000
N_QUICK = 2_000
MAX_RECORDS = 100_000
"""eventbus's default ``MemoryStore`` bound."""
N_PACED = 5_000
"""A paced event costs several event-loop turns: fewer of them, as in ``instructions.py``."""


class Tick(Event, name="inlined.tick"):
    n: int


current: contextvars.ContextVar[Any] = contextvars.ContextVar("current", default=None)


class Subscription:
    """One subscription's bounded queue, wake-up, count and position."""

    __slots__ = ("failed", "finished", "handler", "idle", "parked", "position", "queue", "room", "routed")

    def __init__(self, handler: Callable[[Any], Awaitable[None]]) -> None:
        self.handler = handler
        self.queue: deque[Record] = deque()
        self.parked: asyncio.Future[None] | None = None
        self.room: asyncio.Future[None] | None = None
        self.idle: asyncio.Future[None] | None = None
        self.routed = 0
        self.finished = 0
        self.failed = 0
        self.position = 0

    async def work(self) -> None:
        queue = self.queue
        enter = current.set
        handler = self.handler
        loop = asyncio.get_running_loop()
        while True:
            while True:  # not `while queue:`, which CPython 3.11 would never specialize here (see eventbus's _work)
                if not queue:
                    break
                record = queue.popleft()
                room = self.room
                if room is not None:
                    self.room = None
                    room.set_result(None)
                enter(record)
                try:
                    await handler(record.decoded)
                except Exception:
                    self.failed += 1
                self.finished += 1
                self.position = record.seq
            await self.sleep(loop)

    def sleep(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
        """Tell a waiting drain that the queue is empty, and park until the next publish."""
        idle = self.idle
        if idle is not None:
            self.idle = None
            idle.set_result(None)
        self.parked = loop.create_future()
        return self.parked


class InlinedBus:
    """A store list, and the subscriptions: nothing but the guarantees."""

    subscription_class: type[Subscription] = Subscription

    def __init__(self, handlers: list[Callable[[Any], Awaitable[None]]]) -> None:
        self.records: list[Any] = []
        self.subscriptions = [self.subscription_class(handler) for handler in handlers]
        self.seq = 0
        self.next_id = 1

    async def publish(self, event: Tick) -> int:
        parent = current.get()  # causation, as a publish from a handler would need it
        assert parent is None
        subscriptions = self.subscriptions
        for sub in subscriptions:
            while len(sub.queue) >= MAX_PENDING:
                sub.room = asyncio.get_running_loop().create_future()
                await sub.room
        event_id = self.next_id
        self.next_id = event_id + 1
        record: Record = Record(0, event, "inlined.tick", 1, event_id, time.time_ns())
        self.seq = seq = self.seq + 1
        record.seq = seq
        self.records.append(record)
        for sub in subscriptions:
            sub.queue.append(record)
            sub.routed += 1
            parked = sub.parked
            if parked is not None:
                sub.parked = None
                parked.set_result(None)
        return seq

    async def drain(self) -> None:
        for sub in self.subscriptions:
            while sub.finished < sub.routed:
                sub.idle = asyncio.get_running_loop().create_future()
                await sub.idle


class ContractSubscription(Subscription):
    """A `Subscription` that also makes each per-delivery check eventbus's
    contract asks for, with the feature behind it unused, as eventbus's own
    single worker does: where to take records from (the catch-up page while
    behind), an entry or a `Record` (a record comes from a store read or a
    publish inside a handler), a record whose ``where=`` raised (it goes to
    dead letters), a note of what is delivered (a handler publishing into its
    own full queue must not wait for itself), and a durable checkpoint coming
    due. Queues hold entries, eventbus's six-field tuples."""

    __slots__ = ("behind", "delivering", "due", "page", "rejections", "where")

    def __init__(self, handler: Callable[[Any], Awaitable[None]]) -> None:
        super().__init__(handler)
        self.page: deque[Any] = deque()
        self.behind = False
        self.where: Callable[[Any], bool] | None = None
        self.rejections: dict[int, Exception] = {}
        self.delivering: Any = None
        self.due = 2**30 - 1

    async def work(self) -> None:
        enter = current.set
        handler = self.handler
        rejections = self.rejections
        loop = asyncio.get_running_loop()
        while True:
            source = self.page if self.behind else self.queue
            while True:  # see Subscription.work
                if not source:
                    break
                entry = source.popleft()
                room = self.room
                if room is not None:
                    self.room = None
                    room.set_result(None)
                if type(entry) is not tuple or rejections:
                    raise NotImplementedError("records and dead letters are not what this floor measures")
                self.delivering = entry
                seq = entry[0]
                enter(entry)
                try:
                    await handler(entry[1])
                except Exception:
                    self.failed += 1
                self.finished += 1
                self.position = seq
                if self.finished >= self.due:
                    raise NotImplementedError("no checkpoint comes due here")
            await self.sleep(loop)


class ContractBus(InlinedBus):
    """An `InlinedBus` that makes each per-publish check eventbus's contract
    asks for, with the feature behind it unused, and keeps entries instead of
    records: the bus's state (a stopped bus refuses publishes), the route of
    the event's class, the causation parent and headers (a `Record` is needed
    then), a store that may be appending already (group commit), the bound
    of a `MemoryStore`, the bus's head and count, and per subscription its
    ``where=`` filter and the room left in its queue."""

    subscription_class = ContractSubscription

    def __init__(self, handlers: list[Callable[[Any], Awaitable[None]]]) -> None:
        super().__init__(handlers)
        self.running = True
        self.routes = {Tick: ("inlined.tick", 1, self.subscriptions)}
        self.appending = False
        self.full_at = MAX_RECORDS
        self.head = 0
        self.published = 0

    async def publish(self, event: Tick, headers: dict[str, str] | None = None) -> int:
        if not self.running:
            raise RuntimeError("the bus is not running")
        name, version, subscriptions = self.routes[type(event)]
        parent = current.get()
        for sub in subscriptions:
            while len(sub.queue) >= MAX_PENDING:
                sub.room = asyncio.get_running_loop().create_future()
                await sub.room
        if parent is not None or headers is not None or self.appending:
            raise NotImplementedError("a publish that needs a Record is not what this floor measures")
        event_id = self.next_id
        self.next_id = event_id + 1
        self.seq = seq = self.seq + 1
        entry = (seq, event, name, version, event_id, time.time_ns())
        entries = self.records
        entries.append(entry)
        if len(entries) > self.full_at:
            raise NotImplementedError("the store's bound is not reached here")
        self.head = seq
        self.published += 1
        for sub in subscriptions:
            if sub.where is not None and not sub.where(event):
                continue
            sub.queue.append(entry)
            sub.routed += 1
            parked = sub.parked
            if parked is not None:
                sub.parked = None
                parked.set_result(None)
        return seq


async def run(count: int, subscriptions: int, paced: bool, contract: bool) -> None:
    """Publish ``count`` pre-built events to ``subscriptions`` workers and drain;
    ``paced``: yield to the event loop after each publish, so every publish wakes the workers;
    ``contract``: on a `ContractBus`."""
    events = [Tick(n=n) for n in range(count)]
    counter = 0

    async def handler(event: Tick) -> None:  # the handler of benchmarks/_cases.py
        nonlocal counter
        counter += 1

    bus = (ContractBus if contract else InlinedBus)([handler] * subscriptions)
    workers = [asyncio.create_task(sub.work()) for sub in bus.subscriptions]
    await asyncio.sleep(0)  # every worker parks, as eventbus's do once the bus runs
    publish = bus.publish
    for event in events:
        await publish(event)
        if paced:
            await asyncio.sleep(0)
    await bus.drain()
    for worker in workers:
        worker.cancel()
    assert counter == count * subscriptions
    assert all(sub.finished == count and sub.position == count for sub in bus.subscriptions)


async def _loop(count: int) -> None:
    for _ in range(count):
        pass


async def _record(count: int) -> None:
    event, store = Tick(n=0), []
    keep = store.append
    for seq in range(count):
        keep(Record(seq, event, "inlined.tick", 1, seq, time.time_ns()))


async def _tuple(count: int) -> None:
    event, store = Tick(n=0), []
    keep = store.append
    for seq in range(count):
        keep((seq, event, "inlined.tick", 1, seq, time.time_ns()))


async def _call(count: int) -> None:
    def step(record: Record | None) -> None:
        return None

    for _ in range(count):
        step(None)


async def _coroutine(count: int) -> None:
    async def step(record: Record | None) -> None:
        return None

    for _ in range(count):
        await step(None)


async def _context_variable(count: int) -> None:
    enter, record = current.set, Record(0, Tick(n=0), "inlined.tick", 1, 0, 0)
    for _ in range(count):
        enter(record)


async def _queue(count: int) -> None:
    queue: deque[Record] = deque()
    record = Record(0, Tick(n=0), "inlined.tick", 1, 0, 0)
    for _ in range(count):
        queue.append(record)
        queue.popleft()


async def _counter(count: int) -> None:
    sub = Subscription(_coroutine)
    for seq in range(count):
        sub.finished += 1
        sub.position = seq


async def _yield(count: int) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


async def _wake(count: int) -> None:
    loop = asyncio.get_running_loop()
    sub = Subscription(_coroutine)

    async def worker() -> None:
        while True:
            sub.parked = loop.create_future()
            await sub.parked
            sub.finished += 1

    task = asyncio.create_task(worker())
    await asyncio.sleep(0)
    for _ in range(count):
        parked, sub.parked = sub.parked, None
        assert parked is not None
        parked.set_result(None)
        await asyncio.sleep(0)
    task.cancel()
    assert sub.finished == count


PARTS: dict[str, tuple[str, Callable[[int], Awaitable[None]]]] = {
    "loop": ("the bare loop (subtracted from the others)", _loop),
    "record": ("a Record, kept in a list (the store)", _record),
    "tuple": ("the same fields as a tuple, kept in a list (what a Record's class call costs)", _tuple),
    "call": ("a call of a Python function", _call),
    "coroutine": ("an async function called and awaited", _coroutine),
    "context variable": ("ContextVar.set", _context_variable),
    "queue": ("a deque append and popleft", _queue),
    "counter": ("count and position: two attribute writes", _counter),
    "yield": ("await asyncio.sleep(0): one turn of the event loop", _yield),
    "wake": ("a parked task woken through a future, with that turn", _wake),
}
"""The ingredients ``--parts`` prices, each alone in a loop."""


def child(mode: str, count: int, bus: bool) -> None:
    if mode in PARTS:
        asyncio.run(PARTS[mode][1](count))
    elif bus:
        asyncio.run(run(count, *MODES[mode]))
    else:
        [Tick(n=n) for n in range(count)]


def parts(n: int, script: str, interpreter: str, count: Callable[[list[str]], int]) -> None:
    """Print what each of `PARTS` costs per iteration, the bare loop subtracted."""
    runs = [[interpreter, script, "--child", part, str(size)] for part in PARTS for size in (n, 0)]
    with ThreadPoolExecutor(2) as pool:
        counts = list(pool.map(count, runs))
    per = {part: (counts[2 * index] - counts[2 * index + 1]) / n for index, part in enumerate(PARTS)}
    print(f"what each ingredient costs alone (callgrind, N = {n:,}, the bare loop subtracted)\n")
    for part, (label, _) in PARTS.items():
        value = per[part] if part == "loop" else per[part] - per["loop"]
        print(f"{part:<18}{value:>8,.0f}   {label}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"N = {N_QUICK:,}")
    parser.add_argument("--parts", action="store_true", help="price each ingredient alone instead")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--no-bus", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), bus=not args.no_bus)
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import instructions

    n = N_QUICK if args.quick else N
    sizes = {mode: min(n, N_PACED) if paced else n for mode, (_, paced, _) in MODES.items()}
    script = str(Path(__file__).resolve())
    try:
        if args.parts:
            parts(n, script, instructions.interpreter(), instructions.count_instructions)
            return
        runs = [
            [instructions.interpreter(), script, "--child", mode, str(size), *flag]
            for mode in MODES
            for size in (sizes[mode], 0)
            for flag in ([], ["--no-bus"])
        ]
        with ThreadPoolExecutor(2) as pool:
            counts = list(pool.map(instructions.count_instructions, runs))
    except instructions.ValgrindMissing as exc:
        sys.exit(str(exc))
    print("inlined floor, instructions per published event (callgrind)\n")
    for index, (mode, (handlers, _, _)) in enumerate(MODES.items()):
        full, build_full, empty, build_empty = counts[4 * index : 4 * index + 4]
        value = instructions.per_event(full, empty, build_full, build_empty, sizes[mode])
        print(f"{mode:<17}{handlers:>3} subscription(s)   N = {sizes[mode]:>6,}{value:>10,.0f}")


if __name__ == "__main__":
    main()
