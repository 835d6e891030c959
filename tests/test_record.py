"""`Record`: the fields a handler and a replay see, and the gapless seqs of
`MemoryStore`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from uuid import UUID

import anyio
import pytest
from core_events import WAIT, Ping, Pong, Sink, stored

from eventbus import EventBus, Record

CLOCK_SLACK = timedelta(milliseconds=1)
"""recorded_at is rounded to microseconds through a float; allow for that."""


async def test_a_handled_record_carries_every_documented_field() -> None:
    sink = Sink()
    async with EventBus() as bus:
        bus.subscribe(Ping, sink, name="sink")
        before = datetime.now(UTC)
        seq = await bus.publish(Ping(n=7), headers={"tenant": "acme", "trace": "t-1"})
        await bus.drain(WAIT)
        after = datetime.now(UTC)

    [record] = sink.records
    assert record.seq == seq == 1
    assert isinstance(record.seq, int)
    assert record.event == Ping(n=7)
    assert type(record.event) is Ping
    assert isinstance(record.event_id, UUID)
    assert record.type == "core.ping"
    assert record.version == 1
    assert isinstance(record.recorded_at, datetime)
    assert record.recorded_at.tzinfo is not None
    assert record.recorded_at.utcoffset() == UTC.utcoffset(None)
    assert before - CLOCK_SLACK <= record.recorded_at <= after + CLOCK_SLACK
    assert record.correlation_id == record.event_id
    assert record.causation_id is None
    assert isinstance(record.headers, Mapping)
    assert dict(record.headers) == {"tenant": "acme", "trace": "t-1"}


async def test_a_record_without_headers_has_empty_headers() -> None:
    async with EventBus() as bus:
        await bus.publish(Ping(n=1))
        [record] = await stored(bus.store)
    assert dict(record.headers) == {}


async def test_headers_are_copied_and_read_only() -> None:
    headers = {"tenant": "acme"}
    async with EventBus() as bus:
        await bus.publish(Ping(n=1), headers=headers)
        headers["tenant"] = "changed"
        [record] = await stored(bus.store)
    assert dict(record.headers) == {"tenant": "acme"}
    with pytest.raises(TypeError):
        record.headers["tenant"] = "x"


@pytest.mark.parametrize("headers", [{"retries": 3}, {1: "one"}, [("a", "b")]])
async def test_headers_that_are_not_str_to_str_are_a_type_error(headers: object) -> None:
    async with EventBus() as bus:
        with pytest.raises(TypeError, match="headers"):
            await bus.publish(Ping(n=1), headers=headers)
        assert await stored(bus.store) == []


async def test_replay_yields_the_same_records_the_handler_saw() -> None:
    sink = Sink()
    async with EventBus() as bus:
        bus.subscribe(Ping, sink, name="sink")
        for n in range(5):
            await bus.publish(Ping(n=n), headers={"n": str(n)})
        await bus.drain(WAIT)
        replayed = [record async for record in bus.replay(Ping)]

    assert replayed == sink.records
    for seen, again in zip(sink.records, replayed, strict=True):
        assert (again.seq, again.event, again.event_id, again.type, again.version) == (
            seen.seq,
            seen.event,
            seen.event_id,
            seen.type,
            seen.version,
        )
        assert (again.recorded_at, again.correlation_id, again.causation_id) == (
            seen.recorded_at,
            seen.correlation_id,
            seen.causation_id,
        )
        assert dict(again.headers) == dict(seen.headers)


async def test_every_event_gets_its_own_id() -> None:
    async with EventBus() as bus:
        for n in range(100):
            await bus.publish(Ping(n=n))
        await bus.publish_many([Ping(n=n) for n in range(100)])
        ids = [record.event_id for record in await stored(bus.store)]
    assert len(set(ids)) == 200


async def test_memory_store_seqs_are_gapless_from_one() -> None:
    async with EventBus() as bus:
        seqs = [await bus.publish(Ping(n=n)) for n in range(10)]
        seqs += await bus.publish_many([Pong(n=n) for n in range(5)])
        seqs.append(await bus.publish(Pong(n=99)))
        seqs += await bus.publish_many([Ping(n=n) for n in range(3)])
        records = await stored(bus.store)
        head = await bus.store.head()

    assert seqs == list(range(1, 20))
    assert [record.seq for record in records] == seqs
    assert head == bus.head == 19


async def test_seqs_follow_the_order_publishes_complete_across_tasks() -> None:
    async with EventBus() as bus:
        results: list[int] = []

        async def publish(n: int) -> None:
            results.append(await bus.publish(Ping(n=n)))

        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                for n in range(50):
                    tg.start_soon(publish, n)
        records = await stored(bus.store)

    assert sorted(results) == list(range(1, 51))
    assert [record.seq for record in records] == list(range(1, 51))


def test_a_record_from_a_store_row_decodes_its_event_lazily() -> None:
    event_id = UUID("0190a6b4-3c1e-7000-8000-000000000001")
    record = Record.from_stored(
        seq=4,
        type="core.ping",
        version=1,
        data=b'{"n": 3}',
        event_id=str(event_id),
        recorded_at=1_700_000_000_000_000_000,
        causation_id=event_id.bytes,
        headers={"a": "b"},
    )
    assert record.event == Ping(n=3)
    assert record.event_id == event_id
    assert record.recorded_at == datetime.fromtimestamp(1_700_000_000, UTC)
    assert record.correlation_id == event_id
    assert record.causation_id == event_id
    assert json.loads(record.data) == {"n": 3}
    assert record == Record.from_stored(
        seq=4, type="core.ping", version=1, data=b"{}", event_id=event_id, recorded_at=0
    )
