"""Events, stores and helpers shared by the history tests (catch-up, durable
subscriptions, replay, upcasting, decode errors).

Every event here is registered under a ``replay.`` name, so no other test
module can collide with it in the process-wide registry.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import anyio
import anyio.lowlevel

from eventbus import DeadLetter, Event, MemoryStore, Record
from eventbus.store import DEFAULT_PAGE_SIZE, LeaseFence

WAIT = 10.0
"""Upper bound, in seconds, on any wait in these tests; a healthy run never comes close."""


class Tick(Event, name="replay.tick"):
    n: int


class Tock(Event, name="replay.tock"):
    n: int


class Vehicle(Event, name="replay.vehicle"):
    plate: str


class Car(Vehicle, name="replay.car"):
    pass


class Truck(Vehicle, name="replay.truck"):
    load: int = 0


def sqlite_url(directory: Path, name: str = "events.db") -> str:
    """The URL of a SQLite file in ``directory`` (absolute, so four slashes)."""
    return f"sqlite:///{directory / name}"


def stored_record(type_name: str, data: bytes | str, *, version: int = 1) -> Record:
    """A record as an older program (or a durable store) would hand it back:
    raw JSON under a type name and version, decoded only when read."""
    return Record.from_stored(
        seq=0, type=type_name, version=version, data=data, event_id=uuid.uuid4(), recorded_at=time.time_ns()
    )


class Recorder:
    """An async ``(event, record)`` handler that keeps every record it was given,
    and sets ``reached`` once the record with seq ``until`` has been handled."""

    def __init__(self, until: int | None = None) -> None:
        self.records: list[Record] = []
        self.until = until
        self.reached = anyio.Event()

    async def __call__(self, event: Event, record: Record) -> None:
        self.records.append(record)
        if record.seq == self.until:
            self.reached.set()

    @property
    def seqs(self) -> list[int]:
        return [record.seq for record in self.records]

    @property
    def events(self) -> list[Event]:
        return [record.event for record in self.records]


class Window:
    """Holds one store read open so a test can publish while it is in progress.

    ``before_snapshot``: the window opens before the store looks at its
    records, so what is published meanwhile is in the read's result too (and
    in the subscription's live buffer). Otherwise it opens after: the result
    is already fixed and what is published meanwhile is only in the buffer.
    ``only_if_empty``: hold only a read that comes back empty (the one that
    decides to switch to live).
    """

    def __init__(self, *, before_snapshot: bool, only_if_empty: bool = False) -> None:
        self.before_snapshot = before_snapshot
        self.only_if_empty = only_if_empty
        self.opened = anyio.Event()
        self._closed = anyio.Event()

    async def hold(self) -> None:
        self.opened.set()
        await self._closed.wait()

    def close(self) -> None:
        self._closed.set()


class GatedStore(MemoryStore):
    """A real `MemoryStore` whose next matching read can be held open (see
    `Window`), and its next checkpoint load (``load_window``); it also keeps
    the seqs every read returned."""

    def __init__(self) -> None:
        super().__init__()
        self.window: Window | None = None
        self.load_window: Window | None = None
        self.returned: list[list[int]] = []

    async def load_checkpoint(self, name: str) -> int | None:
        window, self.load_window = self.load_window, None
        if window is not None:
            await window.hold()
        return await super().load_checkpoint(name)

    async def read(
        self,
        from_seq: int = 1,
        *,
        to_seq: int | None = None,
        types: Collection[str] | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
    ) -> Sequence[Record]:
        window = self.window
        if window is not None and window.before_snapshot:
            self.window = None
            await window.hold()
        page = await super().read(from_seq, to_seq=to_seq, types=types, limit=limit)
        if window is not None and not window.before_snapshot and (page == [] or not window.only_if_empty):
            self.window = None
            await window.hold()
        self.returned.append([record.seq for record in page])
        return page


_MAX_READ_RETURN_STEPS = 3


class YieldingStore(MemoryStore):
    """A real `MemoryStore` that lets other tasks run inside every append and
    read, the way a store doing I/O does."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self._random = random.Random(seed)

    async def append(self, records: Sequence[Record]) -> Collection[int]:
        await anyio.lowlevel.checkpoint()
        return await super().append(records)

    async def read(
        self,
        from_seq: int = 1,
        *,
        to_seq: int | None = None,
        types: Collection[str] | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
    ) -> Sequence[Record]:
        # before and after looking at the records, as a read in a worker thread
        # would; for a varying while after, so that some appends land between a
        # read that found nothing and the moment its caller looks at the result
        await anyio.lowlevel.checkpoint()
        page = await super().read(from_seq, to_seq=to_seq, types=types, limit=limit)
        for _ in range(self._random.randrange(_MAX_READ_RETURN_STEPS + 1)):
            await anyio.lowlevel.checkpoint()
        return page


class CheckpointWatch:
    """Keeps the checkpoint writes a store made, and lets a test wait for one."""

    def __init__(self) -> None:
        self.writes: list[dict[str, int]] = []
        self._changed = anyio.Event()

    def written(self, positions: Mapping[str, int]) -> None:
        self.writes.append(dict(positions))
        self._changed.set()
        self._changed = anyio.Event()

    async def saved(self, name: str, position: int) -> None:
        """Return once ``position`` has been written under ``name``."""
        while not any(positions.get(name) == position for positions in self.writes):
            await self._changed.wait()


class CheckpointCountingStore(MemoryStore):
    """A real `MemoryStore` that keeps every checkpoint write in ``watch``.

    After ``crash()`` it ignores every write (checkpoints and dead letters),
    as a process killed at that moment would never make them: what it holds
    is what a restarted process would find.
    """

    def __init__(self) -> None:
        super().__init__()
        self.watch = CheckpointWatch()
        self.crashed = False

    def crash(self) -> None:
        self.crashed = True

    async def save_checkpoints(self, positions: Mapping[str, int], *, fence: LeaseFence | None = None) -> None:
        if self.crashed:
            return
        await super().save_checkpoints(positions, fence=fence)
        self.watch.written(positions)

    async def add_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        if not self.crashed:
            await super().add_dead_letters(letters)
