"""Publishing with the caller's event ids: a store never holds two records
with one event id, and publishing an id it holds returns the stored seq and
routes nothing again (``publish(event_id=)``, ``publish_many(event_ids=)``,
``ingest``), on the memory store and on a real SQLite file."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Sequence
from pathlib import Path
from uuid import UUID, uuid4

import anyio
import pytest
from eventbus_sqlite import SqliteStore

from eventbus import EventBus, PublishOutcomeUnknown, Record, Retry
from eventbus.store import MemoryStore, Store
from tests.policy_events import WAIT, Tick


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """A fresh store of each kind (the bus opens and closes it)."""
    return MemoryStore() if request.param == "memory" else SqliteStore(tmp_path / "events.db")


async def _stored(bus: EventBus) -> list[Record]:
    return list(await bus.store.read(1, limit=10_000))


async def test_publishing_a_stored_event_id_again_returns_its_seq_and_routes_nothing(store: Store) -> None:
    handled: list[int] = []
    event_id = uuid4()
    async with EventBus(store) as bus:
        bus.subscribe(Tick, lambda event: handled.append(event.n), name="counter")
        first = await bus.publish(Tick(n=1), event_id=event_id)
        other = await bus.publish(Tick(n=2))
        again = await bus.publish(Tick(n=3), event_id=event_id)
        await bus.drain(WAIT)
        stats = bus.stats()["counter"]
        records = await _stored(bus)
        assert bus.head == other
    assert (first, other, again) == (1, 2, 1)
    assert handled == [1, 2]
    assert (stats.delivered, stats.pending) == (2, 0)
    assert (records[0].seq, records[0].event_id) == (1, event_id)
    assert [record.event for record in records] == [Tick(n=1), Tick(n=2)]


async def test_publish_many_leaves_out_stored_and_repeated_ids(store: Store) -> None:
    handled: list[int] = []
    kept, new, repeated = uuid4(), uuid4(), uuid4()
    async with EventBus(store) as bus:
        bus.subscribe(Tick, lambda event: handled.append(event.n), name="counter")
        assert await bus.publish(Tick(n=0), event_id=kept) == 1
        seqs = await bus.publish_many(
            [Tick(n=1), Tick(n=2), Tick(n=3), Tick(n=4)], event_ids=[repeated, kept, new, repeated]
        )
        await bus.drain(WAIT)
        records = await _stored(bus)
    assert seqs == [2, 1, 3, 2]
    assert handled == [0, 1, 3]
    assert [(record.event_id, record.event) for record in records] == [
        (kept, Tick(n=0)),
        (repeated, Tick(n=1)),
        (new, Tick(n=3)),
    ]


async def test_concurrent_publishes_of_one_id_store_and_route_it_once(store: Store) -> None:
    handled: list[int] = []
    event_id = uuid4()
    seqs: list[int] = []

    async def publish(bus: EventBus, n: int) -> None:
        seqs.append(await bus.publish(Tick(n=n), event_id=event_id))
        seqs.append(await bus.publish(Tick(n=100 + n)))

    async with EventBus(store) as bus:
        bus.subscribe(Tick, lambda event: handled.append(event.n), name="counter")
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as group:
                for n in range(8):
                    group.start_soon(publish, bus, n)
            await bus.drain()
        records = await _stored(bus)
    assert [record.event_id for record in records].count(event_id) == 1
    assert len(records) == 9
    assert sorted(set(seqs)) == [record.seq for record in records]
    assert len(handled) == 9
    assert sorted(handled)[1:] == list(range(100, 108))


async def test_a_retried_handler_publishing_with_its_own_id_publishes_once(store: Store) -> None:
    attempts: list[int] = []
    shipped: list[int] = []

    async with EventBus(store) as bus:

        @bus.subscribe(name="orders", retry=Retry(attempts=3, backoff=0))
        async def place(event: Tick, record: Record) -> None:
            if event.n != 1:
                return
            attempts.append(await bus.publish(Tick(n=2), event_id=UUID(int=record.event_id.int ^ 1)))
            if len(attempts) < 3:
                raise RuntimeError("failed after publishing")

        @bus.subscribe(name="shipping")
        async def ship(event: Tick) -> None:
            if event.n == 2:
                shipped.append(event.n)

        await bus.publish(Tick(n=1))
        await bus.drain(WAIT)
        records = await _stored(bus)
    assert attempts == [2, 2, 2]
    assert shipped == [2]
    assert len(records) == 2
    assert records[1].causation_id == records[0].event_id


async def test_an_event_published_here_and_ingested_back_is_not_stored_twice(store: Store) -> None:
    handled: list[int] = []
    async with EventBus(store) as bus:
        bus.subscribe(Tick, lambda event: handled.append(event.n), name="counter")
        seq = await bus.publish(Tick(n=1))
        [record] = await _stored(bus)
        assert await bus.ingest(Tick(n=1), event_id=record.event_id, origin="loop") == seq
        await bus.drain(WAIT)
        assert len(await _stored(bus)) == 1
    assert handled == [1]


async def test_ingest_is_idempotent_across_restarts(tmp_path: Path) -> None:
    event_id = uuid4()
    handled: list[int] = []
    for _ in range(2):
        async with EventBus(SqliteStore(tmp_path / "events.db")) as bus:
            bus.subscribe(Tick, lambda event: handled.append(event.n), name=f"counter-{len(handled)}")
            assert await bus.ingest(Tick(n=1), event_id=event_id, origin="billing") == 1
            await bus.drain(WAIT)
            assert len(await _stored(bus)) == 1
    assert handled == [1]


_BAD_IDS: dict[str, tuple[Callable[[EventBus], Awaitable[object]], type[Exception], str]] = {
    "text id": (
        lambda bus: bus.publish(Tick(n=1), event_id=str(uuid4())),  # type: ignore[arg-type]
        TypeError,
        "event_id must be a UUID",
    ),
    "text among ids": (
        lambda bus: bus.publish_many([Tick(n=1), Tick(n=2)], event_ids=[uuid4(), "7"]),  # type: ignore[list-item]
        TypeError,
        r"event_ids\[1\]",
    ),
    "too few ids": (
        lambda bus: bus.publish_many([Tick(n=1), Tick(n=2)], event_ids=[uuid4()]),
        ValueError,
        "more events than event_ids",
    ),
    "too many ids": (
        lambda bus: bus.publish_many([Tick(n=1), Tick(n=2)], event_ids=[uuid4(), uuid4(), uuid4()]),
        ValueError,
        "3 event_ids for 2 events",
    ),
}


@pytest.mark.parametrize("case", list(_BAD_IDS))
async def test_bad_event_ids_are_typed_errors_and_store_nothing(store: Store, case: str) -> None:
    call, error, named = _BAD_IDS[case]
    async with EventBus(store) as bus:
        with pytest.raises(error, match=named):
            await call(bus)
        assert await _stored(bus) == []


class _DoubtfulStore(MemoryStore):
    """A memory store whose first append waits for ``gate``, and whose second
    cannot tell whether it stored anything (and did not)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = anyio.Event()
        self.appends = 0

    async def append(self, records: Sequence[Record]) -> Collection[int]:
        self.appends += 1
        if self.appends == 1:
            await self.gate.wait()
        elif self.appends == 2:
            raise PublishOutcomeUnknown("lost while committing", event_ids=[record.event_id for record in records])
        return await super().append(records)


async def test_an_append_in_doubt_reaches_each_publisher_with_its_own_ids_and_a_retry_is_safe() -> None:
    store = _DoubtfulStore()
    outcomes: dict[int, int | PublishOutcomeUnknown] = {}
    ids = {n: uuid4() for n in range(4)}

    async def publish(bus: EventBus, n: int) -> None:
        try:
            outcomes[n] = await bus.publish(Tick(n=n), event_id=ids[n])
        except PublishOutcomeUnknown as exc:
            outcomes[n] = exc

    async with EventBus(store) as bus:
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as group:
                for n in range(4):
                    group.start_soon(publish, bus, n)
                await anyio.wait_all_tasks_blocked()  # the first append waits at the gate, the others behind it
                store.gate.set()
        assert store.appends == 2  # the append in doubt is not tried again batch by batch
        [first] = [n for n, outcome in outcomes.items() if outcome == 1]  # whichever task reached the store first
        doubtful = sorted(set(ids) - {first})
        for seq, n in enumerate(doubtful, start=2):
            doubt = outcomes[n]
            assert isinstance(doubt, PublishOutcomeUnknown)
            assert doubt.event_ids == (ids[n],)
            assert isinstance(doubt.__cause__, PublishOutcomeUnknown)
            assert await bus.publish(Tick(n=n), event_id=doubt.event_ids[0]) == seq
            assert await bus.publish(Tick(n=n), event_id=doubt.event_ids[0]) == seq
        assert [record.event_id for record in await _stored(bus)] == [ids[n] for n in [first, *doubtful]]


async def test_bad_headers_beside_event_ids_are_named_as_headers(store: Store) -> None:
    async with EventBus(store) as bus:
        with pytest.raises(TypeError, match=r"^headers must map str to str"):
            await bus.publish_many([Tick(n=1)], {"k": 1}, event_ids=[uuid4()])  # type: ignore[dict-item]
        assert await _stored(bus) == []
