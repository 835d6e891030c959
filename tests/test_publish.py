"""Publishing and delivery: seqs returned, batches in one append, ``drain``,
exactly-once in-order delivery under concurrent publishers, and handler
failures that stay with their subscription."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import anyio
import pytest
from core_events import WAIT, CountingStore, Gate, Ping, Pong, Sink, stored
from structlog.testing import capture_logs

from eventbus import EventBus, Record

PUBLISHERS = 4
EVENTS_PER_PUBLISHER = 2_500


async def test_publish_returns_the_int_seq_of_the_stored_event() -> None:
    async with EventBus() as bus:
        first = await bus.publish(Ping(n=1))
        second = await bus.publish(Pong(n=2))
        records = await stored(bus.store)
    assert (first, second) == (1, 2)
    assert type(first) is int
    assert [(r.seq, r.event) for r in records] == [(1, Ping(n=1)), (2, Pong(n=2))]


async def test_publish_does_not_wait_for_handlers() -> None:
    gate = Gate()
    async with EventBus() as bus:

        @bus.subscribe
        async def slow(event: Ping) -> None:
            await gate.pass_through()

        with anyio.fail_after(WAIT):
            await bus.publish(Ping(n=1))
            await gate.entered.wait()
            assert await bus.publish(Ping(n=2)) == 2
        gate.open()


async def test_publish_many_returns_seqs_in_order_from_one_append() -> None:
    store = CountingStore()
    sink = Sink()
    async with EventBus(store) as bus:
        bus.subscribe(Ping, sink, name="sink")
        await bus.publish(Pong(n=0))
        seqs = await bus.publish_many([Ping(n=n) for n in range(5)])
        await bus.drain(WAIT)
    assert seqs == [2, 3, 4, 5, 6]
    assert store.batches == [1, 5]
    assert sink.events == [Ping(n=n) for n in range(5)]
    assert sink.seqs == seqs


async def test_publish_many_of_nothing_appends_nothing() -> None:
    store = CountingStore()
    async with EventBus(store) as bus:
        assert await bus.publish_many([]) == []
    assert store.batches == []


async def test_publish_many_accepts_any_iterable() -> None:
    async with EventBus() as bus:
        seqs = await bus.publish_many(Ping(n=n) for n in range(3))
    assert seqs == [1, 2, 3]


@pytest.mark.parametrize("not_an_event", [{"n": 1}, None, "Ping", Ping])
async def test_publishing_something_that_is_not_an_event_is_a_type_error(not_an_event: Any) -> None:
    store = CountingStore()
    async with EventBus(store) as bus:
        with pytest.raises(TypeError, match="Event"):
            await bus.publish(not_an_event)
        with pytest.raises(TypeError, match=r"events\[1\]"):
            await bus.publish_many([Ping(n=1), not_an_event, Ping(n=2)])
    assert store.batches == []


async def test_drain_returns_only_after_handlers_have_finished() -> None:
    gate = Gate()
    steps: list[str] = []
    async with EventBus() as bus:

        @bus.subscribe
        async def held(event: Ping) -> None:
            await gate.pass_through()
            steps.append("handler finished")

        async def drain() -> None:
            await bus.drain(WAIT)
            steps.append("drain returned")
            drained.set()

        drained = anyio.Event()
        with anyio.fail_after(WAIT):
            await bus.publish(Ping(n=1))
            async with anyio.create_task_group() as tg:
                tg.start_soon(drain)
                await gate.entered.wait()
                # give drain every chance to return too early before the handler is released
                for _ in range(50):
                    await anyio.lowlevel.checkpoint()
                assert steps == []
                assert not drained.is_set()
                gate.open()
                await drained.wait()
    assert steps == ["handler finished", "drain returned"]


async def test_drain_waits_for_events_handlers_publish_meanwhile() -> None:
    seen: list[int] = []
    async with EventBus() as bus:

        @bus.subscribe
        async def relay(event: Ping) -> None:
            if event.n < 5:
                await bus.publish(Ping(n=event.n + 1))

        @bus.subscribe
        async def last(event: Ping) -> None:
            seen.append(event.n)

        await bus.publish(Ping(n=0))
        await bus.drain(WAIT)
        assert seen == [0, 1, 2, 3, 4, 5]


async def test_drain_with_a_timeout_raises_timeout_error_while_a_handler_is_stuck() -> None:
    gate = Gate()
    async with EventBus() as bus:

        @bus.subscribe
        async def stuck(event: Ping) -> None:
            await gate.pass_through()

        await bus.publish(Ping(n=1))
        with pytest.raises(TimeoutError):
            await bus.drain(timeout=0.05)
        gate.open()
        await bus.drain(WAIT)


async def test_drain_on_an_idle_bus_returns_at_once() -> None:
    async with EventBus() as bus:
        bus.subscribe(Ping, Sink(), name="sink")
        with anyio.fail_after(WAIT):
            await bus.drain()


async def test_events_from_concurrent_publishers_arrive_exactly_once_in_seq_order() -> None:
    async_seen: list[Record] = []
    sync_seen: list[int] = []
    async with EventBus() as bus:

        @bus.subscribe(name="first")
        async def first(event: Ping, record: Record) -> None:
            async_seen.append(record)

        # a small queue, so publishers also take turns waiting for room
        @bus.subscribe(name="second", max_pending=64)
        def second(event: Ping, record: Record) -> None:
            sync_seen.append(record.seq)

        async def publisher(index: int) -> None:
            for n in range(EVENTS_PER_PUBLISHER):
                await bus.publish(Ping(n=index * EVENTS_PER_PUBLISHER + n))
                await anyio.lowlevel.checkpoint()

        with anyio.fail_after(WAIT * 3):
            async with anyio.create_task_group() as tg:
                for index in range(PUBLISHERS):
                    tg.start_soon(publisher, index)
            await bus.drain()

    total = PUBLISHERS * EVENTS_PER_PUBLISHER
    assert [record.seq for record in async_seen] == list(range(1, total + 1))
    assert sync_seen == list(range(1, total + 1))
    assert sorted(record.event.n for record in async_seen if isinstance(record.event, Ping)) == list(range(total))
    publishers = [record.event.n // EVENTS_PER_PUBLISHER for record in async_seen if isinstance(record.event, Ping)]
    switches = sum(1 for a, b in pairwise(publishers) if a != b)
    assert switches > PUBLISHERS * 10, "the publishers did not actually interleave"
    for index in range(PUBLISHERS):
        # each publisher's own events keep the order it published them in
        own = [
            record.event.n
            for record in async_seen
            if isinstance(record.event, Ping) and record.event.n // EVENTS_PER_PUBLISHER == index
        ]
        assert own == sorted(own)
    stats = bus.stats()
    assert stats["first"] == stats["second"]
    assert stats["first"].delivered == total


async def test_a_handler_error_never_reaches_the_publisher_or_other_subscriptions() -> None:
    calls: list[int] = []
    healthy = Sink()
    async with EventBus() as bus:

        @bus.subscribe(name="flaky")
        async def flaky(event: Ping) -> None:
            calls.append(event.n)
            if event.n % 3 == 0:
                raise RuntimeError(f"cannot handle {event.n}")

        bus.subscribe(Ping, healthy, name="healthy")
        seqs = [await bus.publish(Ping(n=n)) for n in range(1, 31)]
        await bus.drain(WAIT)
        letters = await bus.dead_letters.list()
        stats = bus.stats()

    assert seqs == list(range(1, 31))
    assert calls == list(range(1, 31))
    assert healthy.seqs == list(range(1, 31))
    assert stats["flaky"].delivered == 20
    assert stats["flaky"].dead_lettered == 10
    assert stats["healthy"].delivered == 30
    assert stats["healthy"].failed == 0
    assert sorted(letter.record.seq for letter in letters) == list(range(3, 31, 3))
    assert {letter.subscription for letter in letters} == {"flaky"}
    assert all(letter.error_type == "builtins.RuntimeError" for letter in letters)


async def test_a_sync_handler_error_is_contained_as_well() -> None:
    async with EventBus() as bus:

        @bus.subscribe(name="broken")
        def broken(event: Ping) -> None:
            raise ValueError("nope")

        assert await bus.publish(Ping(n=1)) == 1
        assert await bus.publish_many([Ping(n=2), Ping(n=3)]) == [2, 3]
        await bus.drain(WAIT)
        assert bus.stats()["broken"].dead_lettered == 3


async def test_handler_errors_are_logged_with_seq_type_and_subscription() -> None:
    async with EventBus() as bus:

        @bus.subscribe(name="picky")
        async def picky(event: Ping) -> None:
            if event.n == 2:
                raise RuntimeError("two is not allowed")

        with capture_logs() as logs:
            await bus.publish(Ping(n=1))
            await bus.publish(Ping(n=2))
            await bus.drain(WAIT)

    errors = [entry for entry in logs if entry["log_level"] in ("error", "critical")]
    assert len(errors) == 1
    [entry] = errors
    assert entry["subscription"] == "picky"
    assert entry["seq"] == 2
    assert entry["type"] == "core.ping"
    assert "two is not allowed" in entry["error"]


async def test_each_append_is_logged_at_debug_with_its_seqs_and_type() -> None:
    with capture_logs() as logs:
        async with EventBus() as bus:
            await bus.publish(Ping(n=1))
            await bus.publish_many([Ping(n=2), Pong(n=3)])
    published = [entry for entry in logs if entry["event"] == "published"]
    assert [(e["log_level"], e["seq"], e["last_seq"], e["count"], e["type"]) for e in published] == [
        ("debug", 1, 1, 1, Ping.__event_type__),
        ("debug", 2, 3, 2, Ping.__event_type__),
    ]
