"""`EventBus.ingest`: events that originated elsewhere (another process, a
broker) are appended under a new local seq, keeping their ids, headers and
causation depth plus an ``origin`` header, routed like local events, and
appended once per event id within the documented window; `EventBus.ingest_many`
does the same for a batch, in one append."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path
from uuid import UUID, uuid4

import anyio
import pytest
from eventbus_sqlite import SqliteStore

from eventbus import BusClosed, CausationLoopError, EventBus, MemoryStore, Record
from eventbus.bus import ORIGIN_HEADER
from tests.policy_events import WAIT, Tick


async def test_an_ingested_event_keeps_its_ids_headers_and_depth_and_is_routed(tmp_path: Path) -> None:
    seen: list[Record] = []
    event_id, correlation, cause = uuid4(), uuid4(), uuid4()
    store = SqliteStore(tmp_path / "events.db")
    async with EventBus(store) as bus:
        bus.subscribe(Tick, lambda event, record: seen.append(record), name="local")
        await bus.publish(Tick(n=0))
        with anyio.fail_after(WAIT):
            seq = await bus.ingest(
                Tick(n=1),
                event_id=event_id,
                origin="billing",
                correlation_id=correlation,
                causation_id=cause,
                headers={"tenant": "t1"},
                depth=3,
            )
            await bus.drain()
        [stored] = await bus.store.read(seq)
    assert seq == 2
    for record in (seen[-1], stored):
        assert record.seq == 2
        assert record.event == Tick(n=1)
        assert (record.event_id, record.correlation_id, record.causation_id) == (event_id, correlation, cause)
        assert dict(record.headers) == {"tenant": "t1", ORIGIN_HEADER: "billing"}
        assert record.depth == 3


async def test_an_event_published_from_an_ingested_one_continues_its_chain() -> None:
    caused: list[Record] = []
    event_id, correlation = uuid4(), uuid4()
    async with EventBus() as bus:

        @bus.subscribe(name="react")
        async def react(event: Tick) -> None:
            if event.n == 1:
                await bus.publish(Tick(n=2))

        bus.subscribe(Tick, lambda event, record: caused.append(record), name="watch")
        with anyio.fail_after(WAIT):
            await bus.ingest(Tick(n=1), event_id=event_id, origin="orders", correlation_id=correlation, depth=2)
            await bus.drain()
    child = caused[-1]
    assert child.causation_id == event_id
    assert child.correlation_id == correlation
    assert child.depth == 3


async def test_ingesting_the_same_event_id_again_appends_nothing() -> None:
    seen: list[int] = []
    event_id = uuid4()
    async with EventBus() as bus:
        bus.subscribe(Tick, lambda event: seen.append(event.n), name="local")
        first = await bus.ingest(Tick(n=1), event_id=event_id, origin="billing")
        again = await bus.ingest(Tick(n=1), event_id=event_id, origin="billing")
        other = await bus.ingest(Tick(n=2), event_id=uuid4(), origin="billing")
        await bus.drain(WAIT)
        assert await bus.store.head() == 2
    assert (first, again, other) == (1, 1, 2)
    assert seen == [1, 2]


async def test_a_chain_too_deep_is_refused_and_nothing_is_stored() -> None:
    async with EventBus(max_causation_depth=4) as bus:
        with pytest.raises(CausationLoopError, match="5 events deep"):
            await bus.ingest(Tick(n=1), event_id=uuid4(), origin="loop", depth=5)
        assert await bus.store.head() == 0


@pytest.mark.parametrize(
    ("options", "error", "named"),
    [
        ({"event_id": "not-a-uuid", "origin": "x"}, TypeError, "event_id"),
        ({"event_id": UUID(int=1), "origin": "x", "causation_id": 7}, TypeError, "causation_id"),
        ({"event_id": UUID(int=1), "origin": ""}, ValueError, "origin"),
        ({"event_id": UUID(int=1), "origin": "x", "depth": -1}, ValueError, "depth"),
        ({"event_id": UUID(int=1), "origin": "x", "headers": {"k": 1}}, TypeError, "headers"),
    ],
)
async def test_bad_arguments_are_typed_errors_naming_them(options: dict[str, object], error: type, named: str) -> None:
    async with EventBus() as bus:
        with pytest.raises(error, match=named):
            await bus.ingest(Tick(n=1), **options)
        assert await bus.store.head() == 0


async def test_ingesting_on_a_bus_that_is_not_running_is_bus_closed() -> None:
    with pytest.raises(BusClosed, match="ingest"):
        await EventBus().ingest(Tick(n=1), event_id=uuid4(), origin="billing")


# -- ingest_many -----------------------------------------------------------------


def arriving(
    n: int,
    event_id: UUID | None = None,
    *,
    headers: dict[str, str] | None = None,
    depth: int = 0,
    correlation_id: UUID | None = None,
    causation_id: UUID | None = None,
) -> Record:
    """A `Tick` as a bridge reads it off the wire: a record whose event is still JSON."""
    return Record.from_stored(
        seq=0,
        type=Tick.__event_type__,
        version=1,
        data=Tick(n=n).model_dump_json(),
        event_id=event_id or uuid4(),
        recorded_at=0,
        correlation_id=correlation_id,
        causation_id=causation_id,
        headers=headers,
        depth=depth,
    )


class CountingAppends(MemoryStore):
    """A real `MemoryStore` that counts its appends."""

    def __init__(self) -> None:
        super().__init__()
        self.appends = 0

    async def append(self, records: Sequence[Record]) -> Collection[int]:
        self.appends += 1
        return await super().append(records)


async def test_a_batch_is_ingested_in_one_append_keeping_ids_headers_and_depth_and_routed_in_order(
    tmp_path: Path,
) -> None:
    seen: list[Record] = []
    correlation, cause = uuid4(), uuid4()
    batch = [
        arriving(1, headers={"tenant": "t1"}, depth=3, correlation_id=correlation, causation_id=cause),
        arriving(2, headers={ORIGIN_HEADER: "shop"}),  # its own origin wins over origin=
        arriving(3),
    ]
    async with EventBus(SqliteStore(tmp_path / "events.db")) as bus:
        bus.subscribe(Tick, lambda event, record: seen.append(record), name="local")
        await bus.publish(Tick(n=0))
        with anyio.fail_after(WAIT):
            seqs = await bus.ingest_many(batch, origin="billing")
            await bus.drain()
        stored = await bus.store.read(2)
    assert seqs == [2, 3, 4]
    for records in (seen[1:], stored):
        assert [record.seq for record in records] == [2, 3, 4]
        assert [record.event for record in records] == [Tick(n=1), Tick(n=2), Tick(n=3)]
        assert [record.event_id for record in records] == [given.event_id for given in batch]
        assert [dict(record.headers) for record in records] == [
            {"tenant": "t1", ORIGIN_HEADER: "billing"},
            {ORIGIN_HEADER: "shop"},
            {ORIGIN_HEADER: "billing"},
        ]
        first = records[0]
        assert (first.correlation_id, first.causation_id, first.depth) == (correlation, cause, 3)


async def test_ingest_many_appends_once_and_skips_ids_already_stored_or_repeated() -> None:
    store = CountingAppends()
    seen: list[int] = []
    known, repeated = uuid4(), uuid4()
    async with EventBus(store) as bus:
        bus.subscribe(Tick, lambda event: seen.append(event.n), name="local")
        await bus.ingest(Tick(n=1), event_id=known, origin="billing")
        appends = store.appends
        seqs = await bus.ingest_many(
            [arriving(1, known), arriving(2, repeated), arriving(2, repeated), arriving(3)], origin="billing"
        )
        await bus.drain(WAIT)
        assert store.appends == appends + 1
        assert await bus.store.head() == 3
    assert seqs == [1, 2, 2, 3]
    assert seen == [1, 2, 3]


@pytest.mark.parametrize(
    ("batch", "error", "named"),
    [
        ([arriving(1), arriving(2, depth=5)], CausationLoopError, r"records\[1\]: .*5 events deep"),
        ([arriving(1), "not a record"], TypeError, r"records\[1\]: ingest_many takes Records"),
    ],
)
async def test_a_bad_record_is_a_typed_error_naming_its_index_and_nothing_is_stored(
    batch: list[Record], error: type, named: str
) -> None:
    async with EventBus(max_causation_depth=4) as bus:
        with pytest.raises(error, match=named):
            await bus.ingest_many(batch, origin="billing")
        assert await bus.store.head() == 0


async def test_a_record_without_an_origin_is_refused_naming_it() -> None:
    async with EventBus() as bus:
        with pytest.raises(ValueError, match=r"records\[0\]: .*origin"):
            await bus.ingest_many([arriving(1)])
        assert await bus.ingest_many([]) == []
        assert await bus.store.head() == 0


async def test_ingesting_a_batch_on_a_bus_that_is_not_running_is_bus_closed() -> None:
    with pytest.raises(BusClosed, match="ingest"):
        await EventBus().ingest_many([arriving(1)], origin="billing")
