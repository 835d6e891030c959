"""``bus.replay(*types, from_seq=, to_seq=)``: stored records in seq order, by
type and range, on the memory and SQLite stores, streamed a page at a time."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Sequence
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
from eventbus_sqlite import SqliteStore
from replay_events import Car, Tick, Tock, Truck, Vehicle

from eventbus import BusClosed, Event, EventBus, MemoryStore, Record, Replay, Store
from eventbus.store import DEFAULT_PAGE_SIZE


class ReadAhead:
    """Counts what a store's reads returned, to compare with what a consumer took."""

    def __init__(self) -> None:
        self.reads = 0
        self.returned = 0
        self.limits: set[int] = set()

    def note(self, limit: int, page: Sequence[Record]) -> None:
        self.reads += 1
        self.returned += len(page)
        self.limits.add(limit)


class CountingReads:
    """Mixed in before a store class: notes every page its ``read`` returns in ``ahead``."""

    ahead: ReadAhead

    async def read(
        self,
        from_seq: int = 1,
        *,
        to_seq: int | None = None,
        types: Collection[str] | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
    ) -> Sequence[Record]:
        page: Sequence[Record] = await super().read(  # type: ignore[misc]
            from_seq, to_seq=to_seq, types=types, limit=limit
        )
        self.ahead.note(limit, page)
        return page


class CountingMemoryStore(CountingReads, MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.ahead = ReadAhead()


class CountingSqliteStore(CountingReads, SqliteStore):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.ahead = ReadAhead()


def _counting_store(kind: str, tmp_path: Path) -> CountingMemoryStore | CountingSqliteStore:
    return CountingMemoryStore() if kind == "memory" else CountingSqliteStore(tmp_path / "events.db")


@pytest.fixture(params=["memory", "sqlite"])
async def bus(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EventBus]:
    """A running bus on each store, holding ten events of mixed types:
    seqs 1-4 Tick 0-3, 5-6 Car, 7 Truck, 8-9 Tock, 10 Tick 4."""
    store: Store = MemoryStore() if request.param == "memory" else SqliteStore(tmp_path / "events.db")
    async with EventBus(store) as running:
        await running.publish_many([Tick(n=n) for n in range(4)])
        await running.publish_many([Car(plate="C1"), Car(plate="C2"), Truck(plate="T1", load=3)])
        await running.publish_many([Tock(n=0), Tock(n=1)])
        await running.publish(Tick(n=4), headers={"source": "test"})
        yield running


async def _seqs(replay: Replay) -> list[int]:
    return [record.seq async for record in replay]


async def test_replay_yields_every_stored_record_in_seq_order_with_its_metadata(bus: EventBus) -> None:
    records = [record async for record in bus.replay()]

    assert [record.seq for record in records] == list(range(1, 11))
    assert [record.type for record in records[:7]] == ["replay.tick"] * 4 + ["replay.car"] * 2 + ["replay.truck"]
    assert records[6].event == Truck(plate="T1", load=3)
    assert {record.version for record in records} == {1}
    assert len({record.event_id for record in records}) == 10
    assert all(record.recorded_at.tzinfo is UTC for record in records)
    assert records[-1].headers == {"source": "test"}
    assert records[-1].event == Tick(n=4)


@pytest.mark.parametrize(
    ("types", "expected"),
    [
        pytest.param((Tick,), [1, 2, 3, 4, 10], id="one-class"),
        pytest.param((Vehicle,), [5, 6, 7], id="base-class-gets-subclasses"),
        pytest.param((Car,), [5, 6], id="subclass-only"),
        pytest.param((Tock, Truck), [7, 8, 9], id="several-classes"),
        pytest.param(("replay.tock",), [8, 9], id="type-name"),
        pytest.param(("replay.car", Tick), [1, 2, 3, 4, 5, 6, 10], id="name-and-class"),
        pytest.param((Event,), list(range(1, 11)), id="event-gets-everything"),
        pytest.param(("replay.never-stored",), [], id="unknown-name"),
    ],
)
async def test_replay_filters_by_type(bus: EventBus, types: tuple[type[Event] | str, ...], expected: list[int]) -> None:
    assert await _seqs(bus.replay(*types)) == expected


async def test_replay_refuses_what_is_not_an_event_class_or_a_name(bus: EventBus) -> None:
    with pytest.raises(TypeError, match="Event classes or type names"):
        bus.replay(int)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Event classes or type names"):
        bus.replay(Tick(n=1))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("from_seq", "to_seq", "expected"),
    [
        pytest.param(1, None, list(range(1, 11)), id="everything"),
        pytest.param(4, None, list(range(4, 11)), id="from"),
        pytest.param(1, 3, [1, 2, 3], id="to-is-inclusive"),
        pytest.param(3, 6, [3, 4, 5, 6], id="from-to"),
        pytest.param(5, 5, [5], id="one"),
        pytest.param(6, 5, [], id="to-below-from"),
        pytest.param(8, 1_000, [8, 9, 10], id="to-past-the-head"),
        pytest.param(11, None, [], id="from-past-the-head"),
        pytest.param(50, 60, [], id="range-past-the-head"),
    ],
)
async def test_replay_bounds(bus: EventBus, from_seq: int, to_seq: int | None, expected: list[int]) -> None:
    assert await _seqs(bus.replay(from_seq=from_seq, to_seq=to_seq)) == expected


async def test_replay_bounds_and_types_together(bus: EventBus) -> None:
    assert await _seqs(bus.replay(Tick, Car, from_seq=3, to_seq=9)) == [3, 4, 5, 6]


@pytest.mark.parametrize(
    "bounds",
    [{"from_seq": 0}, {"from_seq": -5}, {"from_seq": True}, {"from_seq": "1"}, {"to_seq": 2.5}, {"to_seq": False}],
)
async def test_replay_with_a_bad_bound_is_a_value_error(bus: EventBus, bounds: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="_seq"):
        bus.replay(**bounds)


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_replay_of_an_empty_store_yields_nothing(kind: str, tmp_path: Path) -> None:
    store = _counting_store(kind, tmp_path)
    async with EventBus(store) as bus:
        assert await _seqs(bus.replay()) == []
        assert await _seqs(bus.replay(Tick, from_seq=1, to_seq=100)) == []
    assert store.ahead.reads == 2


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_replay_reads_nothing_until_iterated(kind: str, tmp_path: Path) -> None:
    store = _counting_store(kind, tmp_path)
    async with EventBus(store) as bus:
        await bus.publish(Tick(n=1))
        replay = bus.replay()
        assert store.ahead.reads == 0
        assert (await replay.__anext__()).seq == 1
        assert store.ahead.reads == 1


async def test_replay_outside_a_running_bus_raises_bus_closed() -> None:
    bus = EventBus()
    with pytest.raises(BusClosed, match="replay"):
        bus.replay()
    async with bus:
        await bus.publish(Tick(n=1))
    with pytest.raises(BusClosed, match="replay"):
        bus.replay(Tick)


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
@pytest.mark.parametrize("filtered", [False, True], ids=["all", "one-type"])
async def test_replay_streams_a_page_at_a_time(kind: str, filtered: bool, tmp_path: Path) -> None:
    """Memory stays bounded by one page, however long the history: the store
    is never asked for more than a page ahead of what the consumer took."""
    total = 20_000
    store = _counting_store(kind, tmp_path)
    async with EventBus(store) as bus:
        for start in range(0, total, 5_000):
            await bus.publish_many(Tick(n=n) if n % 2 else Tock(n=n) for n in range(start, start + 5_000))
        taken = 0
        most_ahead = 0
        last_seq = 0
        async for record in bus.replay(*([Tick] if filtered else [])):
            taken += 1
            assert record.seq > last_seq
            last_seq = record.seq
            most_ahead = max(most_ahead, store.ahead.returned - taken)

    expected = total // 2 if filtered else total
    assert taken == expected
    assert store.ahead.limits == {DEFAULT_PAGE_SIZE}
    assert most_ahead < DEFAULT_PAGE_SIZE
    assert store.ahead.reads == expected // DEFAULT_PAGE_SIZE + 1  # the last read finds the end
