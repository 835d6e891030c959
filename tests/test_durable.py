"""Durable subscriptions (``durable=True``): the position is checkpointed in
the store, in batches, and a bus restarted on the same store resumes after the
last handled event (at-least-once, with a bounded number of repeats)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest
from eventbus_sqlite import SqliteStore
from replay_events import WAIT, CheckpointCountingStore, CheckpointWatch, Recorder, Tick, sqlite_url

from eventbus import EventBus, MemoryStore, Record, Store
from eventbus.delivery import CHECKPOINT_EVERY, checkpoints
from eventbus.store import LeaseFence


class WatchedSqliteStore(SqliteStore):
    """A real `SqliteStore` that tells a test about every checkpoint write."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.watch = CheckpointWatch()

    async def save_checkpoints(self, positions: Mapping[str, int], *, fence: LeaseFence | None = None) -> None:
        await super().save_checkpoints(positions, fence=fence)
        self.watch.written(positions)


def _store(kind: str, tmp_path: Path) -> Store | str:
    return MemoryStore() if kind == "memory" else sqlite_url(tmp_path)


async def _publish(store: Store | str, first: int, last: int) -> None:
    """Publish ``Tick(first)`` .. ``Tick(last)`` from a bus without subscriptions
    (another part of the system, while the durable subscriber is down)."""
    async with EventBus(store) as bus:
        await bus.publish_many(Tick(n=n) for n in range(first, last + 1))


def test_durable_needs_an_explicit_name() -> None:
    bus = EventBus()

    async def ledger(event: Tick) -> None:
        pass

    with pytest.raises(ValueError, match="durable=True needs name="):
        bus.subscribe(Tick, ledger, durable=True)
    with pytest.raises(ValueError, match="ledger"):
        bus.subscribe(durable=True)(ledger)
    assert dict(bus.subscriptions) == {}
    assert bus.subscribe(Tick, ledger, durable=True, name="ledger").name == "ledger"


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_a_restarted_bus_resumes_after_the_last_handled_event(kind: str, tmp_path: Path) -> None:
    store = _store(kind, tmp_path)
    first, second = Recorder(), Recorder()

    bus = EventBus(store)
    bus.subscribe(Tick, first, name="ledger", durable=True)
    async with bus:
        for n in range(1, 6):
            await bus.publish(Tick(n=n))
        await bus.drain(WAIT)

    await _publish(store, 6, 8)  # published while the ledger is down

    bus = EventBus(store)
    bus.subscribe(Tick, second, name="ledger", durable=True)
    async with bus:
        await bus.drain(WAIT)
        caught_up = list(second.seqs)
        await bus.publish(Tick(n=9))
        await bus.drain(WAIT)

    async with EventBus(store) as reader:
        checkpoints = await reader.store.checkpoints()
    assert first.seqs == [1, 2, 3, 4, 5]
    assert caught_up == [6, 7, 8]
    assert second.seqs == [6, 7, 8, 9]
    assert [event.n for event in second.events if isinstance(event, Tick)] == [6, 7, 8, 9]
    assert dict(checkpoints) == {"ledger": 9}


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_without_a_checkpoint_a_durable_subscription_starts_with_new_events(kind: str, tmp_path: Path) -> None:
    store = _store(kind, tmp_path)
    await _publish(store, 1, 3)
    recorder = Recorder()
    bus = EventBus(store)
    bus.subscribe(Tick, recorder, name="ledger", durable=True)
    async with bus:
        await bus.publish(Tick(n=4))
        await bus.drain(WAIT)

    assert recorder.seqs == [4]


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_from_seq_is_where_a_durable_subscription_starts_until_it_has_a_checkpoint(
    kind: str, tmp_path: Path
) -> None:
    store = _store(kind, tmp_path)
    await _publish(store, 1, 5)
    first, second = Recorder(), Recorder()

    bus = EventBus(store)
    bus.subscribe(Tick, first, name="ledger", durable=True, from_seq=2)
    async with bus:
        await bus.drain(WAIT)

    await _publish(store, 6, 7)
    bus = EventBus(store)
    bus.subscribe(Tick, second, name="ledger", durable=True, from_seq=2)
    async with bus:
        await bus.drain(WAIT)

    assert first.seqs == [2, 3, 4, 5]
    assert second.seqs == [6, 7], "the checkpoint wins over from_seq"


async def test_a_durable_subscription_made_on_a_running_bus_resumes_from_its_checkpoint() -> None:
    store = MemoryStore()
    await store.save_checkpoints({"ledger": 3})
    await _publish(store, 1, 5)
    recorder = Recorder()
    async with EventBus(store) as bus:
        bus.subscribe(Tick, recorder, name="ledger", durable=True)
        await bus.publish(Tick(n=6))
        await bus.drain(WAIT)

    assert recorder.seqs == [4, 5, 6]


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_a_dead_lettered_event_still_moves_the_checkpoint_past_it(kind: str, tmp_path: Path) -> None:
    store = _store(kind, tmp_path)
    handled: list[int] = []

    async def ledger(event: Tick) -> None:
        if event.n == 3:
            raise RuntimeError("cannot book 3")
        handled.append(event.n)

    bus = EventBus(store)
    bus.subscribe(Tick, ledger, name="ledger", durable=True)
    async with bus:
        for n in range(1, 6):
            await bus.publish(Tick(n=n))
        await bus.drain(WAIT)

    again = Recorder()
    bus = EventBus(store)
    bus.subscribe(Tick, again, name="ledger", durable=True)
    async with bus:
        await bus.drain(WAIT)
        checkpoint = await bus.store.load_checkpoint("ledger")
        [letter] = await bus.dead_letters.list("ledger")

    assert handled == [1, 2, 4, 5]
    assert checkpoint == 5
    assert again.seqs == [], "the failed event lives in the dead letters, not in the subscription's backlog"
    assert (letter.record.seq, letter.error_message) == (3, "cannot book 3")


# -- at-least-once and checkpoint batching ---------------------------------------------------


async def test_after_a_crash_at_most_checkpoint_every_deliveries_are_repeated() -> None:
    """The worst case: the process dies in the handler of the event that would
    have triggered the next checkpoint write. Every event handled since the last
    write, and the one in the handler, are delivered again after the restart."""
    total = 3 * CHECKPOINT_EVERY + 10
    crash_at = 3 * CHECKPOINT_EVERY
    store = CheckpointCountingStore()
    await _publish(store, 1, total)
    first: list[int] = []
    dying = anyio.Event()

    async def doomed(event: Tick, record: Record) -> None:
        first.append(record.seq)
        if record.seq == crash_at:
            dying.set()
            await anyio.sleep_forever()

    bus = EventBus(store, shutdown_timeout=0)
    bus.subscribe(Tick, doomed, name="ledger", durable=True, from_seq=1)
    async with bus:
        with anyio.fail_after(WAIT):
            await dying.wait()
        store.crash()  # from here on, nothing this process writes reaches the store

    store.crashed = False  # the restarted process
    second = Recorder()
    bus = EventBus(store)
    bus.subscribe(Tick, second, name="ledger", durable=True, from_seq=1)
    async with bus:
        await bus.drain(WAIT)

    assert first == list(range(1, crash_at + 1))
    assert sorted(set(first) | set(second.seqs)) == list(range(1, total + 1)), "nothing is lost"
    repeated = sorted(set(first) & set(second.seqs))
    assert len(repeated) <= CHECKPOINT_EVERY
    assert repeated == list(range(crash_at - CHECKPOINT_EVERY + 1, crash_at + 1)), "the bound is reached"
    assert second.seqs == list(range(crash_at - CHECKPOINT_EVERY + 1, total + 1))


@pytest.mark.parametrize("trickle", [pytest.param(False, id="burst"), pytest.param(True, id="one-at-a-time")])
async def test_checkpoint_writes_are_batched_not_one_per_event(trickle: bool) -> None:
    total = 2_500
    store = CheckpointCountingStore()
    recorder = Recorder()
    bus = EventBus(store)
    bus.subscribe(Tick, recorder, name="ledger", durable=True)
    async with bus:
        for n in range(total):
            await bus.publish(Tick(n=n))
            if trickle:
                # the handler keeps up: the subscription runs out of work after every event
                await anyio.lowlevel.checkpoint()
        await bus.drain(WAIT)

    assert recorder.seqs == list(range(1, total + 1))
    # one every CHECKPOINT_EVERY deliveries and one on close; a very slow
    # machine may add one when the subscription sat idle for CHECKPOINT_IDLE
    assert len(store.watch.writes) <= 10, store.watch.writes
    assert store.watch.writes[-1] == {"ledger": total}


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_a_durable_subscription_out_of_work_saves_its_position_once_idle(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkpoints, "CHECKPOINT_IDLE", 0.05)
    store = CheckpointCountingStore() if kind == "memory" else WatchedSqliteStore(tmp_path / "events.db")
    async with EventBus(store) as bus:
        bus.subscribe(Tick, Recorder(), name="ledger", durable=True)
        await bus.publish_many(Tick(n=n) for n in range(3))
        with anyio.fail_after(WAIT):
            await store.watch.saved("ledger", 3)
        await bus.publish(Tick(n=3))
        with anyio.fail_after(WAIT):
            await store.watch.saved("ledger", 4)
        assert bus.running

    # (a first write of 0 may save where the subscription started)
    assert [positions["ledger"] for positions in store.watch.writes if positions["ledger"]][:2] == [3, 4]


async def test_the_idle_workers_of_a_concurrent_subscription_save_its_position_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkpoints, "CHECKPOINT_IDLE", 0.05)
    store = WatchedSqliteStore(tmp_path / "events.db")  # its saves yield to the loop, as every durable store's do
    async with EventBus(store) as bus:
        bus.subscribe(Tick, Recorder(), name="ledger", durable=True, concurrency=8)
        await bus.publish_many(Tick(n=n) for n in range(20))
        with anyio.fail_after(WAIT):
            await store.watch.saved("ledger", 20)

    # (a first write of 0 saves where the subscription started; closing has nothing new to save)
    assert [positions["ledger"] for positions in store.watch.writes if positions["ledger"]] == [20]


async def test_a_long_catch_up_writes_a_checkpoint_every_checkpoint_every_deliveries() -> None:
    total = 2 * CHECKPOINT_EVERY + 500
    store = CheckpointCountingStore()
    await _publish(store, 1, total)
    bus = EventBus(store)
    bus.subscribe(Tick, Recorder(), name="ledger", durable=True, from_seq=1)
    async with bus:
        await bus.drain(WAIT)

    # (a first write of 0 may save where the subscription started)
    written = [positions["ledger"] for positions in store.watch.writes if positions["ledger"]]
    assert written == [CHECKPOINT_EVERY, 2 * CHECKPOINT_EVERY, total]


# -- flushing on the way out -----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_closing_the_bus_flushes_the_checkpoint(kind: str, tmp_path: Path) -> None:
    store = _store(kind, tmp_path)
    bus = EventBus(store)
    bus.subscribe(Tick, Recorder(), name="ledger", durable=True)
    async with bus:
        await bus.publish_many(Tick(n=n) for n in range(7))

    async with EventBus(store) as reader:
        assert await reader.store.load_checkpoint("ledger") == 7


async def test_closing_a_durable_subscription_saves_its_position() -> None:
    store = CheckpointCountingStore()
    async with EventBus(store) as bus:
        sub = bus.subscribe(Tick, Recorder(), name="ledger", durable=True)
        await bus.publish_many(Tick(n=n) for n in range(4))
        await bus.drain(WAIT)
        await sub.aclose()
        assert await store.load_checkpoint("ledger") == 4
        writes = len(store.watch.writes)
        await bus.publish(Tick(n=4))

    assert len(store.watch.writes) == writes, "a closed subscription writes nothing more"
    assert await store.load_checkpoint("ledger") == 4


async def test_a_subscription_that_is_not_durable_never_writes_a_checkpoint() -> None:
    store = CheckpointCountingStore()
    async with EventBus(store) as bus:
        bus.subscribe(Tick, Recorder(), name="plain", from_seq=1)
        await bus.publish_many(Tick(n=n) for n in range(CHECKPOINT_EVERY + 1))
        await bus.drain(WAIT)

    assert store.watch.writes == []
    assert await store.checkpoints() == {}
