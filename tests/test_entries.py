"""Publishes that no subscription needs as a `Record` are kept as entries
(see ``eventbus._entry``): what the store, dead letters, ``where=``,
backpressure and compaction still show of them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

import anyio
from core_events import WAIT, Ping, Sink, stored

from eventbus import EventBus, MemoryStore, Record


async def test_an_event_only_plain_handlers_take_reads_back_as_a_whole_record() -> None:
    seen: list[Ping] = []
    async with EventBus() as bus:

        @bus.subscribe
        async def plain(event: Ping) -> None:
            seen.append(event)

        before = datetime.now(UTC)
        ping = Ping(n=7)
        seq = await bus.publish(ping)
        await bus.drain(WAIT)
        (record,) = await stored(bus.store)
        (again,) = await bus.store.read(seq)

    assert seen == [ping]
    assert isinstance(record, Record)
    assert again is record, "a second read returns the record the first one built"
    assert (record.seq, record.type, record.version) == (seq, "core.ping", 1)
    assert record.event is ping
    assert isinstance(record.event_id, UUID)
    assert record.correlation_id == record.event_id
    assert record.causation_id is None
    assert (dict(record.headers), record.depth) == ({}, 0)
    assert before <= record.recorded_at <= datetime.now(UTC)


async def test_a_plain_handler_failing_leaves_a_dead_letter_with_the_whole_record() -> None:
    async with EventBus() as bus:

        @bus.subscribe
        async def broken(event: Ping) -> None:
            raise ValueError(f"cannot take {event.n}")

        seq = await bus.publish(Ping(n=3))
        await bus.drain(WAIT)
        (letter,) = await bus.store.dead_letters()
        (stored_record,) = await stored(bus.store)

    assert letter.error_message == "cannot take 3"
    assert letter.record.seq == seq
    assert letter.record.event == Ping(n=3)
    assert letter.record.event_id == stored_record.event_id
    assert letter.record.recorded_at == stored_record.recorded_at


async def test_a_where_that_raises_on_an_entry_sends_it_to_dead_letters() -> None:
    handled: list[int] = []

    def picky(event: Ping) -> bool:
        if event.n == 2:
            raise KeyError("no such account")
        return True

    async with EventBus() as bus:

        @bus.subscribe(where=picky)
        async def plain(event: Ping) -> None:
            handled.append(event.n)

        for n in range(4):
            await bus.publish(Ping(n=n))
        await bus.drain(WAIT)
        letters = await bus.store.dead_letters()

    assert handled == [0, 1, 3]
    assert [(letter.record.seq, letter.error_type) for letter in letters] == [(3, "builtins.KeyError")]


async def test_a_route_with_a_handler_taking_the_record_stores_the_record_it_was_given() -> None:
    plain_seen: list[int] = []
    sink = Sink()
    async with EventBus() as bus:

        @bus.subscribe
        async def plain(event: Ping) -> None:
            plain_seen.append(event.n)

        bus.subscribe(Ping, sink, name="sink")
        await bus.publish(Ping(n=1))
        await bus.drain(WAIT)
        (record,) = await stored(bus.store)

    assert plain_seen == [1]
    assert sink.records == [record]
    assert sink.records[0] is record, "one Record per publish, shared by the store and the handlers"


async def test_a_plain_handler_publishing_into_its_own_full_inbox_does_not_wait_for_itself() -> None:
    handled: list[int] = []
    async with EventBus(publish_timeout=WAIT) as bus:
        done = anyio.Event()

        @bus.subscribe(name="echo", max_pending=1, backpressure="block")
        async def echo(event: Ping) -> None:
            handled.append(event.n)
            if event.n == 0:
                await bus.publish(Ping(n=1))  # fills the inbox
                await bus.publish(Ping(n=2))  # only this handler could make room: it must not wait
            elif event.n == 2:
                done.set()

        await bus.publish(Ping(n=0))
        with anyio.fail_after(WAIT / 2):
            await done.wait()
        await bus.drain(WAIT)
        stats = bus.stats().subscriptions["echo"]

    assert handled == [0, 1, 2]
    assert (stats.dead_lettered, stats.overflowed) == (0, 1)


async def test_compaction_of_a_memory_store_holding_entries_keeps_what_it_is_told() -> None:
    store = MemoryStore()
    async with EventBus(store=store) as bus:

        @bus.subscribe
        async def plain(event: Ping) -> None:
            return None

        for n in range(10):
            await bus.publish(Ping(n=n))
        await bus.drain(WAIT)
        kept_by_age = await store.compact(keep_age=timedelta(hours=1))
        kept_by_count = await store.compact(keep=3)
        records = await store.read(store.first_seq)

    assert kept_by_age.removed == 0
    assert (kept_by_count.removed, kept_by_count.first_seq) == (7, 8)
    assert [record.event for record in records] == [Ping(n=n) for n in (7, 8, 9)]
