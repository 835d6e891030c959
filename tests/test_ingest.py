"""`EventBus.ingest`: events that originated elsewhere (another process, a
broker) are appended under a new local seq, keeping their ids, headers and
causation depth plus an ``origin`` header, routed like local events, and
appended once per event id within the documented window."""

from __future__ import annotations

from pathlib import Path
from uuid import UUID, uuid4

import anyio
import pytest
from eventbus_sqlite import SqliteStore

from eventbus import BusClosed, CausationLoopError, EventBus, Record
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
