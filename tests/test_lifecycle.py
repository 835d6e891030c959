"""The bus lifecycle: starting with ``async with``, draining on the way out,
``BusClosed`` before start and after close, and the constructor's checks."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from core_events import WAIT, Gate, Ping, Sink
from structlog.testing import capture_logs

from eventbus import BusClosed, BusState, EventBus, EventBusError, MemoryStore, Plugin


async def test_async_with_an_eventbus_expression_binds_the_running_bus() -> None:
    async with EventBus() as bus:
        assert isinstance(bus, EventBus)
        assert bus.running
        assert await bus.publish(Ping(n=1)) == 1
    assert not bus.running


async def test_async_with_an_existing_bus_starts_and_stops_it() -> None:
    bus = EventBus()
    assert not bus.running
    async with bus as entered:
        assert entered is bus
        assert bus.running
    assert not bus.running


async def test_leaving_async_with_drains_every_queued_delivery() -> None:
    handled: list[int] = []
    bus = EventBus()

    @bus.subscribe
    async def slow(event: Ping) -> None:
        for _ in range(3):
            await anyio.lowlevel.checkpoint()
        handled.append(event.n)

    with anyio.fail_after(WAIT):
        async with bus:
            for n in range(200):
                await bus.publish(Ping(n=n))
            assert len(handled) < 200
    assert handled == list(range(200))


async def test_an_error_in_the_body_still_closes_the_bus_and_propagates() -> None:
    bus = EventBus()

    async def fail_inside() -> None:
        async with bus:
            await bus.publish(Ping(n=1))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await fail_inside()
    assert not bus.running
    with pytest.raises(BusClosed):
        await bus.publish(Ping(n=2))


async def test_publishing_before_start_raises_bus_closed() -> None:
    bus = EventBus()
    with pytest.raises(BusClosed, match="Ping"):
        await bus.publish(Ping(n=1))
    with pytest.raises(BusClosed):
        await bus.publish_many([Ping(n=1)])
    with pytest.raises(BusClosed):
        bus.replay()


async def test_publishing_after_close_raises_bus_closed() -> None:
    async with EventBus() as bus:
        await bus.publish(Ping(n=1))
    with pytest.raises(BusClosed, match="stopped"):
        await bus.publish(Ping(n=2))
    with pytest.raises(BusClosed):
        await bus.publish_many([Ping(n=3)])
    with pytest.raises(EventBusError):
        bus.replay()


async def test_a_stopped_bus_runs_again_with_its_subscriptions_and_store() -> None:
    sink = Sink()
    bus = EventBus()
    bus.subscribe(Ping, sink, name="again")
    async with bus:
        await bus.publish(Ping(n=1))
    async with bus:
        assert bus.running
        assert await bus.publish(Ping(n=2)) == 2
        await bus.drain(WAIT)
        assert bus.stats()["again"].delivered == 1
    assert sink.seqs == [1, 2]
    assert not bus.running


async def test_a_running_bus_cannot_be_entered_twice() -> None:
    async with EventBus() as bus:
        with pytest.raises(RuntimeError, match="already running"):
            async with bus:
                pass
        assert bus.running


async def test_aclose_is_idempotent_and_closes_the_bus() -> None:
    bus = EventBus()
    async with bus:
        await bus.aclose()
        assert not bus.running
        await bus.aclose()
        with pytest.raises(BusClosed):
            await bus.publish(Ping(n=1))


async def test_subscriptions_made_before_start_receive_events() -> None:
    sink = Sink()
    bus = EventBus()
    bus.subscribe(Ping, sink, name="early")
    async with bus:
        await bus.publish(Ping(n=1))
    assert sink.seqs == [1]


async def test_a_given_store_is_used_and_stays_readable_after_close() -> None:
    store = MemoryStore()
    async with EventBus(store) as bus:
        await bus.publish(Ping(n=1))
    assert bus.store is store
    assert await store.head() == 1


async def test_a_memory_url_gives_a_memory_store() -> None:
    async with EventBus("memory://") as bus:
        assert isinstance(bus.store, MemoryStore)
        assert await bus.publish(Ping(n=1)) == 1


async def test_shutdown_timeout_cancels_a_stuck_handler_and_logs_it() -> None:
    gate = Gate()
    bus = EventBus(shutdown_timeout=0.05)

    @bus.subscribe(name="stuck")
    async def stuck(event: Ping) -> None:
        await gate.pass_through()

    with capture_logs() as logs, anyio.fail_after(WAIT):
        async with bus:
            await bus.publish(Ping(n=1))
            await gate.entered.wait()
    assert not bus.running
    [warning] = [entry for entry in logs if entry["event"].startswith("shutdown timeout")]
    assert warning["log_level"] == "warning"
    assert warning["pending"] == {"stuck": 1}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"publish_timeout": 0}, "publish_timeout"),
        ({"publish_timeout": -1.0}, "publish_timeout"),
        ({"shutdown_timeout": -1}, "shutdown_timeout"),
        ({"max_causation_depth": 0}, "max_causation_depth"),
        ({"max_causation_depth": True}, "max_causation_depth"),
        ({"max_causation_depth": 2.5}, "max_causation_depth"),
    ],
)
def test_invalid_bus_options_are_a_value_error(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EventBus(**options)


def test_a_store_that_is_not_a_store_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="store"):
        EventBus(store=42)


async def test_subscribing_while_the_bus_stops_raises_bus_closed() -> None:
    gate = Gate()

    class SubscribesWhenStopped(Plugin):
        refused: BusClosed | None = None

        async def stop(self, bus: Any, /) -> None:
            with pytest.raises(BusClosed, match="stopping") as caught:
                bus.subscribe(Ping, Sink(), name="too-late")
            self.refused = caught.value

    plugin = SubscribesWhenStopped()
    bus = EventBus(plugins=[plugin], shutdown_timeout=WAIT)

    @bus.subscribe(name="held")
    async def held(event: Ping) -> None:
        await gate.pass_through()

    async def run_bus() -> None:
        async with bus:
            await bus.publish(Ping(n=1))

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_bus)
            await gate.entered.wait()
            await anyio.wait_all_tasks_blocked()
            assert bus.state is BusState.DRAINING
            with pytest.raises(BusClosed, match="draining"):
                bus.subscribe(Ping, Sink(), name="late")
            gate.open()
    assert plugin.refused is not None
    assert set(bus.subscriptions) == {"held"}
    bus.subscribe(Ping, Sink(), name="next-run")  # a stopped bus takes subscriptions for its next run
