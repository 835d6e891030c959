"""The lifecycle's edge cases (DESIGN, "Lifecycle and failure containment"):
cancellation of the task running the bus, closing from another task, waits
that must end when the bus or a subscription closes, handlers that would wait
for themselves, start-up failures, redrive's context and claims, and running
a module-level bus again."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import anyio
import pytest
from eventbus_sqlite import SqliteStore
from structlog.testing import capture_logs

from eventbus import BusClosed, BusState, DeadLetter, EventBus, MemoryStore, Plugin, Record, Retry, StoreError
from tests.policy_events import WAIT, Hold, Seen, Tick, publish_ticks


async def test_cancelling_the_task_running_the_bus_stops_it_promptly_and_saves_checkpoints(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "events.db")
    hold = Hold()
    seen = Seen()
    bus = EventBus(store, shutdown_timeout=None)

    @bus.subscribe(name="ledger", durable=True)
    async def ledger(event: Tick) -> None:
        if event.n == 3:
            await hold.wait()
        seen.add(event)

    with anyio.fail_after(WAIT):
        with anyio.CancelScope() as service:
            async with bus:
                await publish_ticks(bus, [1, 2, 3, 4])
                await hold.entered.wait()
                service.cancel()
                await anyio.sleep_forever()
    assert bus.state is BusState.STOPPED
    assert seen.ns == [1, 2]
    with pytest.raises(StoreError):
        await store.head()  # closed
    reopened = SqliteStore(tmp_path / "events.db")
    await reopened.open()
    try:
        assert await reopened.load_checkpoint("ledger") == 2
    finally:
        await reopened.close()


async def test_aclose_from_another_task_stops_the_bus_and_the_owner_goes_on() -> None:
    seen = Seen()
    stopped = anyio.Event()
    bus = EventBus()
    bus.subscribe(Tick, lambda event: seen.add(event), name="seen")

    async def closer() -> None:
        await bus.aclose()
        stopped.set()

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg, bus:
            await publish_ticks(bus, [1, 2])
            tg.start_soon(closer)
            await stopped.wait()
            assert bus.state is BusState.STOPPED
            with pytest.raises(BusClosed):
                await bus.publish(Tick(n=3))
    assert seen.ns == [1, 2], "aclose drained first"


async def test_drain_returns_once_a_subscription_it_waits_on_is_closed() -> None:
    hold = Hold()
    async with EventBus() as bus:

        @bus.subscribe(name="stuck")
        async def stuck(event: Tick) -> None:
            await hold.wait()

        with anyio.fail_after(WAIT):
            await publish_ticks(bus, [1, 2])
            await hold.entered.wait()
            async with anyio.create_task_group() as tg:
                tg.start_soon(bus.drain)
                await anyio.wait_all_tasks_blocked()
                bus.subscriptions["stuck"].close()


async def test_a_publish_waiting_for_room_raises_bus_closed_when_the_bus_closes() -> None:
    hold = Hold()
    outcome: list[BaseException] = []
    bus = EventBus(shutdown_timeout=0.01)

    @bus.subscribe(name="full", max_pending=1)
    async def full(event: Tick) -> None:
        await hold.wait()

    async def blocked_publisher() -> None:
        try:
            await bus.publish(Tick(n=3))
        except BusClosed as exc:
            outcome.append(exc)

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg, bus:
            await publish_ticks(bus, [1, 2])  # one in the handler, one queued: full
            await hold.entered.wait()
            tg.start_soon(blocked_publisher)
            await anyio.wait_all_tasks_blocked()
            assert not outcome
    [error] = outcome
    assert "not stored" in str(error)
    assert bus.stats()["full"].routed == 2


async def test_drain_from_inside_a_handler_raises_instead_of_waiting_for_itself() -> None:
    errors: list[Exception] = []
    async with EventBus() as bus:

        @bus.subscribe(name="impatient")
        async def impatient(event: Tick) -> None:
            try:
                await bus.drain()
            except RuntimeError as exc:
                errors.append(exc)

        with anyio.fail_after(WAIT):
            await bus.publish(Tick(n=1))
            await bus.drain()
    [error] = errors
    assert "inside a handler" in str(error)


async def test_a_handler_publishing_more_than_its_own_block_queue_holds_does_not_deadlock() -> None:
    seen = Seen()
    async with EventBus() as bus:

        @bus.subscribe(name="fanout", max_pending=2)
        async def fanout(event: Tick) -> None:
            seen.add(event)
            if event.n == 0:
                for n in range(1, 6):
                    await bus.publish(Tick(n=n))

        with anyio.fail_after(WAIT):
            await bus.publish(Tick(n=0))
            await bus.drain()
        stats = bus.stats()["fanout"]
    assert seen.ns == [0, 1, 2, 3, 4, 5]
    assert stats.overflowed == 3, "admitted past max_pending=2, and counted"


class Recording(Plugin):
    def __init__(self, name: str, log: list[str], *, fail: bool = False) -> None:
        self.name = name
        self.log = log
        self.fail = fail

    async def start(self, bus: EventBus) -> None:
        if self.fail:
            raise RuntimeError(f"{self.name} cannot start")
        self.log.append(f"start {self.name}")

    async def stop(self, bus: EventBus) -> None:
        self.log.append(f"stop {self.name}")


class OpenCountingStore(MemoryStore):
    def __init__(self, *, fail_open: bool = False) -> None:
        super().__init__()
        self.fail_open = fail_open
        self.opened = 0
        self.closed = 0

    async def open(self) -> None:
        if self.fail_open:
            raise StoreError("the store cannot be reached")
        self.opened += 1

    async def close(self) -> None:
        self.closed += 1


async def test_a_plugin_failing_to_start_stops_the_ones_started_before_and_closes_the_store() -> None:
    log: list[str] = []
    store = OpenCountingStore()
    plugins = [Recording("a", log), Recording("b", log), Recording("c", log, fail=True), Recording("d", log)]
    bus = EventBus(store, plugins=plugins)
    with anyio.fail_after(WAIT), pytest.raises(RuntimeError, match="c cannot start"):
        async with bus:
            pytest.fail("the body must not run")
    assert log == ["start a", "start b", "stop b", "stop a"]
    assert (store.opened, store.closed) == (1, 1)
    assert bus.state is BusState.STOPPED
    plugins[2].fail = False
    async with bus:
        assert bus.running
    assert (store.opened, store.closed) == (2, 2)


class Feeding(Plugin):
    """A plugin whose `run` brings events in until the bus stops (as a bridge does)."""

    name = "feeding"

    def __init__(self, log: list[str], *, fail: bool = False) -> None:
        self.log = log
        self.fail = fail
        self.running = anyio.Event()

    async def start(self, bus: EventBus) -> None:
        self.log.append("start")

    async def run(self, bus: EventBus) -> None:
        self.log.append(f"run while {bus.state.value}")
        await bus.publish(Tick(n=1))
        self.running.set()  # the waiter wakes after this task's next step: the raise, or the sleep
        if self.fail:
            raise LookupError("the feed broke")
        try:
            await anyio.sleep_forever()
        finally:
            self.log.append(f"run cancelled while {bus.state.value}")

    async def stop(self, bus: EventBus) -> None:
        self.log.append("stop")


async def test_a_plugins_run_task_lives_while_the_bus_runs_and_is_cancelled_before_the_drain() -> None:
    log: list[str] = []
    plugin = Feeding(log)
    bus = EventBus(plugins=[plugin])
    seen = Seen()
    bus.subscribe(Tick, seen.add, name="seen")
    with anyio.fail_after(WAIT):
        async with bus:
            await plugin.running.wait()
            await bus.drain()
            assert seen.ns == [1]
    assert log == ["start", "run while running", "run cancelled while running", "stop"]


async def test_a_plugins_run_task_failing_is_logged_and_the_bus_goes_on() -> None:
    log: list[str] = []
    plugin = Feeding(log, fail=True)
    bus = EventBus(plugins=[plugin])
    with anyio.fail_after(WAIT), capture_logs() as logs:
        async with bus:
            await plugin.running.wait()
            assert bus.running
            assert await bus.publish(Tick(n=3)) > 1
    failure = next(entry for entry in logs if entry["event"].startswith("plugin failed"))
    assert failure["plugin"] == "feeding"
    assert "the feed broke" in failure["error"]
    assert log == ["start", "run while running", "stop"]


async def test_a_store_that_fails_to_open_leaves_the_bus_stopped() -> None:
    store = OpenCountingStore(fail_open=True)
    bus = EventBus(store)
    with pytest.raises(StoreError, match="cannot be reached"):
        async with bus:
            pytest.fail("the body must not run")
    assert bus.state is BusState.STOPPED
    store.fail_open = False
    async with bus:
        assert await bus.publish(Tick(n=1)) == 1


async def test_leaving_async_with_on_an_error_drains_then_re_raises_it_unchanged() -> None:
    seen = Seen()
    error = LookupError("from the body")
    bus = EventBus()

    @bus.subscribe(name="slow")
    async def slow(event: Tick) -> None:
        await anyio.lowlevel.checkpoint()
        seen.add(event)

    async def body() -> None:
        async with bus:
            await publish_ticks(bus, range(1, 21))
            raise error

    with anyio.fail_after(WAIT), pytest.raises(LookupError) as raised:
        await body()
    assert raised.value is error
    assert seen.ns == list(range(1, 21))


async def test_after_a_redrive_the_callers_publishes_carry_no_causation() -> None:
    broken = True
    seen: list[Record] = []
    async with EventBus() as bus:

        @bus.subscribe(name="flaky")
        async def flaky(event: Tick) -> None:
            if broken:
                raise RuntimeError("broken")

        bus.subscribe(Tick, lambda event, record: seen.append(record), name="watch")
        with anyio.fail_after(WAIT):
            await bus.publish(Tick(n=1))
            await bus.drain()
            broken = False
            assert await bus.dead_letters.redrive() == 1
            await bus.publish(Tick(n=2))
            await bus.drain()
    later = seen[-1]
    assert later.causation_id is None
    assert later.correlation_id == later.event_id


async def test_concurrent_redrives_deliver_each_letter_once() -> None:
    calls: list[int] = []
    broken = True
    async with EventBus() as bus:

        @bus.subscribe(name="flaky", retry=Retry(attempts=1))
        async def flaky(event: Tick) -> None:
            calls.append(event.n)
            await anyio.lowlevel.checkpoint()
            if broken:
                raise RuntimeError(f"still broken at {event.n}")

        with anyio.fail_after(WAIT):
            await publish_ticks(bus, range(1, 6))
            await bus.drain()
            calls.clear()
            results: list[int] = []

            async def redrive() -> None:
                results.append(await bus.dead_letters.redrive())

            async with anyio.create_task_group() as tg:
                tg.start_soon(redrive)
                tg.start_soon(redrive)
            still_failing = await bus.dead_letters.list()
            assert sorted(calls) == [1, 2, 3, 4, 5], "each letter delivered once"
            assert len(still_failing) == 5, "the letters were replaced, not doubled"
            assert {letter.attempts for letter in still_failing} == {2}

            broken = False
            calls.clear()
            async with anyio.create_task_group() as tg:
                tg.start_soon(redrive)
                tg.start_soon(redrive)
    assert sorted(calls) == [1, 2, 3, 4, 5]
    assert sum(results[-2:]) == 5
    assert await bus.dead_letters.list() == []


app_bus = EventBus()
"""A module-level bus, as a web app keeps one: every test that starts the app runs it."""
app_seen: list[int] = []


@app_bus.subscribe(name="app-handler")
async def _app_handler(event: Tick) -> None:
    app_seen.append(event.n)


@pytest.mark.parametrize("start", [1, 2, 3])
async def test_a_module_level_bus_serves_every_test_that_starts_the_app(start: int) -> None:
    before = len(app_seen)
    async with app_bus:
        await app_bus.publish(Tick(n=start))
        await app_bus.drain(WAIT)
    assert app_seen[before:] == [start]
    assert not app_bus.running


class RefusingLettersStore(MemoryStore):
    """A real `MemoryStore` that refuses new dead letters once ``refuse`` is set."""

    refuse = False

    async def add_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        if self.refuse:
            raise StoreError("the dead-letter table is full")
        await super().add_dead_letters(letters)


async def test_a_failed_redrive_whose_new_letter_cannot_be_stored_keeps_the_old_one() -> None:
    store = RefusingLettersStore()
    async with EventBus(store) as bus:

        @bus.subscribe(name="broken")
        async def broken(event: Tick) -> None:
            raise RuntimeError("still broken")

        with anyio.fail_after(WAIT):
            await bus.publish(Tick(n=1))
            await bus.drain()
            [letter] = await bus.dead_letters.list()
            store.refuse = True
            assert await bus.dead_letters.redrive() == 0
            assert await bus.dead_letters.list() == [letter], "the old letter stays"
            store.refuse = False
            assert await bus.dead_letters.redrive() == 0
            [replacement] = await bus.dead_letters.list()
    assert replacement.id != letter.id
    assert replacement.attempts == 2
