"""The bus and bounded history: running subscriptions hold back what they still
read (``store.hold_history``), and history lost anyway is counted as dropped,
logged with the range, and skipped, never retried forever."""

from __future__ import annotations

from pathlib import Path

import anyio
from core_events import Ping
from eventbus_sqlite import SqliteStore
from structlog.testing import capture_logs

from eventbus import EventBus, MemoryStore, Retention
from eventbus.store import DEFAULT_MAX_RECORDS
from tests.policy_events import WAIT, Hold, Seen, Tick, accounted, log_events, publish_ticks

LOST = "history no longer stored, events dropped"


async def test_a_lagging_spill_subscriber_past_the_memory_bound_counts_what_it_lost() -> None:
    hold = Hold()
    seen = Seen()
    with capture_logs() as logs:
        async with EventBus(store=MemoryStore(max_records=20)) as bus:

            @bus.subscribe(name="lagging", max_pending=5, backpressure="spill")
            async def lagging(event: Tick) -> None:
                if event.n == 1:
                    await hold.wait()
                seen.add(event)

            await bus.publish(Tick(n=1))
            with anyio.fail_after(WAIT):
                await hold.entered.wait()
            await publish_ticks(bus, range(2, 101))
            assert bus.store.first_seq == 81
            assert accounted(bus.stats()["lagging"])
            hold.release()
            await bus.drain(WAIT)
            stats = bus.stats()

    # 1 in the handler and 2..6 queued when 7 spilled; 7..80 were gone when it read back
    assert seen.ns == [1, 2, 3, 4, 5, 6, *range(81, 101)]
    lagged = stats["lagging"]
    assert (lagged.routed, lagged.delivered, lagged.dropped, lagged.pending) == (100, 26, 74, 0)
    assert accounted(lagged)
    assert stats.first_seq == 81
    assert stats.to_dict()["first_seq"] == 81
    (lost,) = log_events(logs, LOST)
    assert (lost["subscription"], lost["from_seq"], lost["to_seq"], lost["dropped"]) == ("lagging", 7, 80, 74)
    assert lost["log_level"] == "warning"


async def test_spill_on_the_default_store_loses_what_falls_past_max_records() -> None:
    """What the backpressure page states: held back while 120 000 events are
    published on a default ``EventBus()``, a spilling subscription loses about
    20 000, counted as dropped; everything the store still held is delivered."""
    hold = Hold()
    published = 120_000
    queued = 10
    async with EventBus() as bus:

        @bus.subscribe(name="lagging", max_pending=queued, backpressure="spill")
        async def lagging(event: Tick) -> None:
            if event.n == 1:
                await hold.wait()

        await bus.publish(Tick(n=1))
        with anyio.fail_after(WAIT):
            await hold.entered.wait()
        for start in range(2, published + 1, 1_000):
            await bus.publish_many([Tick(n=n) for n in range(start, min(start + 1_000, published + 1))])
        hold.release()
        await bus.drain(WAIT)
        lagged = bus.stats()["lagging"]

    first_kept = published - DEFAULT_MAX_RECORDS + 1
    spilled_from = 1 + queued + 1  # 1 in the handler, the next `queued` in its queue
    assert (lagged.routed, lagged.dropped, lagged.pending) == (published, first_kept - spilled_from, 0)
    assert lagged.delivered == 1 + queued + DEFAULT_MAX_RECORDS
    assert accounted(lagged)


async def test_a_from_seq_below_first_seq_counts_the_lost_seqs_and_goes_on_from_first_seq() -> None:
    seen = Seen()
    with capture_logs() as logs:
        async with EventBus(store=MemoryStore(max_records=10)) as bus:
            await publish_ticks(bus, range(1, 31))

            @bus.subscribe(name="late", from_seq=5)
            async def late(event: Tick) -> None:
                seen.add(event)

            await bus.drain(WAIT)
            stats = bus.stats()["late"]

    assert seen.ns == list(range(21, 31))
    assert (stats.routed, stats.delivered, stats.dropped, stats.pending) == (26, 10, 16, 0)
    (lost,) = log_events(logs, LOST)
    assert (lost["subscription"], lost["from_seq"], lost["to_seq"], lost["dropped"]) == ("late", 5, 20, 16)


async def test_a_durable_checkpoint_below_first_seq_resumes_at_first_seq() -> None:
    store = MemoryStore(max_records=10)
    async with EventBus(store=store) as bus:
        await publish_ticks(bus, range(1, 31))
    await store.save_checkpoints({"audit": 3})
    seen = Seen()
    with capture_logs() as logs:
        async with EventBus(store=store) as bus:

            @bus.subscribe(name="audit", durable=True)
            async def audit(event: Tick) -> None:
                seen.add(event)

            await bus.drain(WAIT)
            stats = bus.stats()["audit"]

    assert seen.ns == list(range(21, 31))
    assert (stats.routed, stats.delivered, stats.dropped, stats.pending) == (27, 10, 17, 0)
    (lost,) = log_events(logs, LOST)
    assert (lost["subscription"], lost["from_seq"], lost["to_seq"]) == ("audit", 4, 20)
    assert await store.load_checkpoint("audit") == 30


async def test_sqlite_retention_keeps_what_a_running_subscription_still_reads(tmp_path: Path) -> None:
    # keep=0 and compact_interval=0: every append compacts as far as the holds let it
    store = SqliteStore(tmp_path / "events.db", retention=Retention(keep=0, compact_interval=0))
    hold = Hold()
    seen = Seen()
    with capture_logs() as logs:
        async with EventBus(store=store) as bus:

            @bus.subscribe(name="lagging", max_pending=5, backpressure="spill")
            async def lagging(event: Tick) -> None:
                if event.n == 1:
                    await hold.wait()
                seen.add(event)

            @bus.subscribe(name="idle")  # routed nothing, so it holds nothing back
            async def idle(event: Ping) -> None:
                raise AssertionError("no Ping is published")

            await bus.publish(Tick(n=1))
            with anyio.fail_after(WAIT):
                await hold.entered.wait()
            await publish_ticks(bus, range(2, 51))
            # lagging spilled at 7 and reads back from there: nothing from 7 on may go
            assert store.first_seq == 7
            assert len(await store.read(7, limit=100)) == 44
            hold.release()
            await bus.drain(WAIT)
            # live again, it needs only what is routed after 50: the next append compacts up to it
            await bus.publish(Tick(n=51))
            assert bus.stats().first_seq == 51
            await bus.drain(WAIT)
            stats = bus.stats()["lagging"]

    assert seen.ns == list(range(1, 52))
    assert (stats.routed, stats.delivered, stats.dropped, stats.pending) == (51, 51, 0, 0)
    assert log_events(logs, LOST) == []
    # the bus stopped: closing the store forgot what it held, so nothing holds history now
    await store.open()
    try:
        assert (await store.compact()).first_seq == 52
    finally:
        await store.close()


async def test_a_live_subscription_routed_long_ago_holds_no_history_back(tmp_path: Path) -> None:
    # A live subscription reads the store only after spilling a record routed
    # later, so a record it was routed long ago must not pin the history after it.
    store = SqliteStore(tmp_path / "events.db", retention=Retention(keep=0, compact_interval=0))
    async with EventBus(store=store) as bus:

        @bus.subscribe(name="rare")
        async def rare(event: Ping) -> None:
            return None

        @bus.subscribe(name="ticks")
        async def ticks(event: Tick) -> None:
            return None

        await bus.publish(Ping(n=1))
        await bus.drain(WAIT)
        await publish_ticks(bus, range(2, 21))
        await bus.drain(WAIT)
        await bus.publish(Tick(n=21))
        assert bus.stats().first_seq == 21
        await bus.drain(WAIT)
        stats = bus.stats()
    assert (stats["rare"].delivered, stats["ticks"].delivered) == (1, 20)
