"""Catch-up subscriptions (``subscribe(..., from_seq=N)``): stored history from
N, then live, with no gap and no duplicate at the switch.

The two classic races are built on purpose with a store whose read can be held
open (`GatedStore`): *replay-then-attach* loses what is published between the
last history read and attaching to live; *attach-without-dedupe* delivers
twice what is both in the history read and in the live buffer.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import anyio.lowlevel
import pytest
from replay_events import (
    WAIT,
    Car,
    GatedStore,
    Recorder,
    Tick,
    Tock,
    Truck,
    Vehicle,
    Window,
    YieldingStore,
    sqlite_url,
)

from eventbus import Event, EventBus, MemoryStore, Record, Store


def _store(kind: str, tmp_path: Path) -> Store | str:
    if kind == "memory":
        return MemoryStore()
    if kind == "yielding":
        return YieldingStore()
    assert kind == "sqlite"
    return sqlite_url(tmp_path)


async def _stored_seqs(bus: EventBus, *types: type[Event]) -> list[int]:
    return [record.seq async for record in bus.replay(*types)]


# -- the switch from history to live under load --------------------------------------

PUBLISHERS = 4
PER_PUBLISHER = 400
HISTORY = 300


@pytest.mark.parametrize(
    ("kind", "from_seq"),
    [
        *((kind, from_seq) for kind in ("memory", "yielding") for from_seq in (1, HISTORY // 2, HISTORY + 1)),
        ("sqlite", HISTORY // 2),
    ],
)
async def test_catch_up_sees_every_seq_once_in_order_while_publishers_run_at_full_speed(
    kind: str, from_seq: int, tmp_path: Path
) -> None:
    recorder = Recorder()
    async with EventBus(_store(kind, tmp_path)) as bus:
        await bus.publish_many(Tick(n=n) for n in range(HISTORY))
        publishing = anyio.Event()

        async def publisher(index: int) -> None:
            for n in range(PER_PUBLISHER):
                await bus.publish(Tick(n=index * PER_PUBLISHER + n))
                if n == PER_PUBLISHER // 8:
                    publishing.set()
                # a memory store never yields inside publish: let the other tasks in
                await anyio.lowlevel.checkpoint()

        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as publishers:
                for index in range(PUBLISHERS):
                    publishers.start_soon(publisher, index)
                await publishing.wait()
                # a small queue, so the live buffer also overflows during catch-up
                bus.subscribe(Tick, recorder, name="late", from_seq=from_seq, max_pending=64)
                subscribed_at = bus.head
        await bus.drain(WAIT)
        head = bus.head
        stats = bus.stats()["late"]

    assert head == HISTORY + PUBLISHERS * PER_PUBLISHER
    assert subscribed_at < head, "the publishers were still running when the subscription started"
    assert recorder.seqs == list(range(from_seq, head + 1))
    assert (stats.delivered, stats.pending, stats.position) == (head - from_seq + 1, 0, head)


async def test_a_subscription_that_started_from_history_turns_live() -> None:
    recorder = Recorder()
    async with EventBus() as bus:
        await bus.publish_many(Tick(n=n) for n in range(5))
        bus.subscribe(Tick, recorder, name="late", from_seq=2)
        await bus.drain(WAIT)
        caught_up = bus.stats()["late"]
        await bus.publish(Tick(n=5))
        await bus.drain(WAIT)

    assert not caught_up.behind
    assert recorder.seqs == [2, 3, 4, 5, 6]
    assert [event.n for event in recorder.events if isinstance(event, Tick)] == [1, 2, 3, 4, 5]


# -- the two classic races, constructed on purpose ------------------------------------------


@pytest.mark.parametrize(
    ("max_pending", "via_store"),
    [pytest.param(1_000, False, id="from-the-live-buffer"), pytest.param(2, True, id="buffer-overflowed")],
)
async def test_replay_then_attach_race_events_published_after_the_last_history_read_are_not_lost(
    max_pending: int, via_store: bool
) -> None:
    store = GatedStore()
    recorder = Recorder()
    async with EventBus(store) as bus:
        await bus.publish_many(Tick(n=n) for n in range(1, 6))
        # hold the read that finds nothing past the history: it decided there is
        # nothing more to read, but the subscription has not switched to live yet
        window = store.window = Window(before_snapshot=False, only_if_empty=True)
        bus.subscribe(Tick, recorder, name="late", from_seq=1, max_pending=max_pending)
        with anyio.fail_after(WAIT):
            await window.opened.wait()
        assert recorder.seqs == [1, 2, 3, 4, 5]
        for n in range(6, 11):
            await bus.publish(Tick(n=n))
        window.close()
        await bus.drain(WAIT)
        stats = bus.stats()["late"]

    assert recorder.seqs == list(range(1, 11))
    assert (stats.routed, stats.delivered, stats.pending) == (10, 10, 0)
    read_back = sorted(seq for page in store.returned for seq in page if seq > 5)
    # with room they came through the live buffer; without, from the store again
    assert read_back == ([6, 7, 8, 9, 10] if via_store else [])


@pytest.mark.parametrize(
    "before_snapshot",
    [pytest.param(True, id="published-before-the-read-looked"), pytest.param(False, id="published-after-it-looked")],
)
async def test_attach_without_dedupe_race_events_both_in_history_and_in_the_live_buffer_are_delivered_once(
    before_snapshot: bool,
) -> None:
    store = GatedStore()
    recorder = Recorder()
    async with EventBus(store) as bus:
        await bus.publish_many(Tick(n=n) for n in range(1, 6))
        window = store.window = Window(before_snapshot=before_snapshot)
        bus.subscribe(Tick, recorder, name="late", from_seq=1)
        with anyio.fail_after(WAIT):
            await window.opened.wait()
        for n in range(6, 11):
            await bus.publish(Tick(n=n))
        buffered = bus.stats()["late"]
        window.close()
        await bus.drain(WAIT)
        stats = bus.stats()["late"]

    assert recorder.seqs == list(range(1, 11))
    # 6..10 sat in the live buffer while the store read was in progress ...
    assert (buffered.routed, buffered.behind) == (5, True)
    # ... and a store read returned them as well
    assert sorted(seq for page in store.returned for seq in page if seq > 5) == [6, 7, 8, 9, 10]
    assert (stats.routed, stats.delivered, stats.pending, stats.behind) == (10, 10, 0, False)


@pytest.mark.parametrize("max_pending", [3, 1_000])
async def test_events_published_by_the_handler_during_catch_up_arrive_once_in_order(max_pending: int) -> None:
    recorder = Recorder()
    async with EventBus() as bus:
        await bus.publish_many(Tick(n=n) for n in range(1, 21))

        async def react(event: Tick | Tock, record: Record) -> None:
            await recorder(event, record)
            if isinstance(event, Tick) and event.n % 5 == 0:
                await bus.publish(Tock(n=event.n))

        bus.subscribe(Tick | Tock, react, name="reactor", from_seq=1, max_pending=max_pending)
        await bus.drain(WAIT)
        stored = await _stored_seqs(bus)

    assert stored == list(range(1, 25))
    assert recorder.seqs == stored
    assert [type(event).__name__ for event in recorder.events].count("Tock") == 4


async def test_a_live_buffer_that_overflows_during_catch_up_falls_back_to_store_reads() -> None:
    max_pending = 10
    store = GatedStore()
    recorder = Recorder()
    blocked = anyio.Event()
    release = anyio.Event()
    held_in_memory: list[int] = []

    async with EventBus(store) as bus:
        await bus.publish_many(Tick(n=n) for n in range(50))

        async def slow(event: Tick, record: Record) -> None:
            # events the subscription keeps in memory, besides this one
            held_in_memory.append(bus.stats()["slow"].pending - 1)
            if record.seq == 1:
                blocked.set()
                await release.wait()
            await recorder(event, record)

        bus.subscribe(Tick, slow, name="slow", from_seq=1, max_pending=max_pending)
        with anyio.fail_after(WAIT):
            await blocked.wait()
        for n in range(50, 250):
            await bus.publish(Tick(n=n))
            held_in_memory.append(bus.stats()["slow"].pending - 1)
        during = bus.stats()["slow"]
        release.set()
        await bus.drain(WAIT)

    assert during.behind
    assert recorder.seqs == list(range(1, 251))
    # the live events that did not fit were read back from the store
    assert any(seq > 50 + max_pending for page in store.returned for seq in page)
    assert max(held_in_memory) <= max_pending, "catch-up holds at most max_pending events in memory"


# -- start points ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_from_seq_past_the_head_waits_for_that_seq_live(kind: str, tmp_path: Path) -> None:
    recorder = Recorder(until=7)
    async with EventBus(_store(kind, tmp_path)) as bus:
        await bus.publish_many(Tick(n=n) for n in range(3))
        bus.subscribe(Tick, recorder, name="future", from_seq=6)
        await bus.drain(WAIT)
        assert recorder.seqs == []
        await bus.publish(Tick(n=3))
        await bus.publish(Tick(n=4))
        await bus.drain(WAIT)
        assert recorder.seqs == []
        await bus.publish(Tick(n=5))
        await bus.publish(Tick(n=6))
        with anyio.fail_after(WAIT):
            await recorder.reached.wait()
        await bus.drain(WAIT)

    assert recorder.seqs == [6, 7]


@pytest.mark.parametrize("from_seq", [0, -1, True, 1.0, "1"])
async def test_from_seq_below_one_or_not_an_int_is_a_value_error(from_seq: object) -> None:
    async with EventBus() as bus:
        with pytest.raises(ValueError, match="from_seq"):
            bus.subscribe(Tick, Recorder(), name="bad", from_seq=from_seq)  # type: ignore[arg-type]
        assert "bad" not in bus.subscriptions


async def test_events_queued_before_the_first_store_read_come_after_the_history() -> None:
    """Regression: records routed before the worker's first read were delivered
    first and again from the store ([4, 1, 3, 4] instead of [1, 2, 3, 4])."""
    store = GatedStore()
    async with EventBus(store) as first:
        await first.publish_many(Tick(n=n) for n in range(1, 4))

    recorder = Recorder()
    bus = EventBus(store)
    bus.subscribe(Tick, recorder, name="history", from_seq=1, durable=True)
    # the worker has started, but is still loading its checkpoint
    window = store.load_window = Window(before_snapshot=True)
    async with bus:
        with anyio.fail_after(WAIT):
            await window.opened.wait()
        await bus.publish(Tick(n=4))
        await bus.publish(Tick(n=5))
        window.close()
        await bus.drain(WAIT)

    assert recorder.seqs == [1, 2, 3, 4, 5]


async def test_events_published_right_after_subscribing_on_a_running_bus_come_after_the_history() -> None:
    recorder = Recorder()
    async with EventBus() as bus:
        await bus.publish_many(Tick(n=n) for n in range(1, 4))
        bus.subscribe(Tick, recorder, name="history", from_seq=2)
        await bus.publish(Tick(n=4))
        await bus.publish(Tick(n=5))
        await bus.drain(WAIT)

    assert recorder.seqs == [2, 3, 4, 5]


# -- type filters -----------------------------------------------------------------------------


def _mixed(n: int) -> list[Event]:
    return [Tick(n=n), Tock(n=n), Car(plate=f"C{n}"), Truck(plate=f"T{n}", load=n)]


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_type_filtered_catch_up_sees_only_its_types_from_history_and_live(kind: str, tmp_path: Path) -> None:
    ticks, vehicles, union, even = Recorder(), Recorder(), Recorder(), Recorder()
    async with EventBus(_store(kind, tmp_path)) as bus:
        for n in range(10):
            await bus.publish_many(_mixed(n))
        bus.subscribe(Tick, ticks, name="ticks", from_seq=7)
        bus.subscribe(Vehicle, vehicles, name="vehicles", from_seq=1)
        bus.subscribe(Tock | Car, union, name="union", from_seq=20)
        bus.subscribe(Tick, even, name="even", from_seq=1, where=lambda e: e.n % 2 == 0)
        for n in range(10, 15):
            await bus.publish_many(_mixed(n))
        await bus.drain(WAIT)
        everything = [record async for record in bus.replay()]

    def seqs(wanted: tuple[type[Event], ...], from_seq: int = 1) -> list[int]:
        return [r.seq for r in everything if isinstance(r.event, wanted) and r.seq >= from_seq]

    assert ticks.seqs == seqs((Tick,), 7)
    assert vehicles.seqs == seqs((Vehicle,))
    assert {type(event) for event in vehicles.events} == {Car, Truck}
    assert union.seqs == seqs((Tock, Car), 20)
    assert even.seqs == [r.seq for r in everything if isinstance(r.event, Tick) and r.event.n % 2 == 0]
    assert len(even.seqs) == 8


# -- a durable store -------------------------------------------------------------------------


async def test_catch_up_on_sqlite_from_the_middle_of_a_long_history_while_others_publish(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    async with EventBus(url) as first:
        await first.publish_many(Tick(n=n) for n in range(2_000))

    recorder = Recorder()
    async with EventBus(url) as bus:
        bus.subscribe(Tick, recorder, name="late", from_seq=500, max_pending=100)

        async def publisher(index: int) -> None:
            for n in range(100):
                await bus.publish(Tick(n=10_000 * index + n))

        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as publishers:
                for index in range(3):
                    publishers.start_soon(publisher, index)
        await bus.drain(WAIT)
        head = bus.head

    assert head == 2_300
    assert recorder.seqs == list(range(500, head + 1))
