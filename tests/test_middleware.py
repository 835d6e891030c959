"""Delivery middleware (per bus, per subscription, from plugins) and publish
middleware: the documented wrapping order, one call per delivery around
retry and timeout, and dead-lettering as the outermost step."""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import pytest
from core_events import WAIT, Ping, Pong, Sink, stored

from eventbus import (
    DeliveryContext,
    EventBus,
    Handle,
    HandlerTimeout,
    Middleware,
    Plugin,
    PublishMiddleware,
    Record,
    Retry,
)
from eventbus.middleware import Commit

NO_WAIT = Retry(attempts=3, backoff=0, jitter=0)


def recording(label: str, calls: list[str]) -> Middleware:
    """A middleware that notes entering and leaving each delivery, and the outcome."""

    def wrap(call_next: Handle, context: DeliveryContext) -> Handle:
        async def handle(record: Record) -> None:
            calls.append(f"{label} in {record.seq}")
            try:
                await call_next(record)
            except Exception as exc:
                calls.append(f"{label} saw {type(exc).__name__}")
                raise
            calls.append(f"{label} out {record.seq}")

        return handle

    return wrap


def recording_publish(label: str, calls: list[str]) -> PublishMiddleware:
    """A publish middleware that notes each batch's size and the seqs it got."""

    def wrap(call_next: Commit) -> Commit:
        async def commit(records: Sequence[Record]) -> None:
            calls.append(f"{label} in {len(records)} seqs={[r.seq for r in records]}")
            await call_next(records)
            calls.append(f"{label} out seqs={[r.seq for r in records]}")

        return commit

    return wrap


async def test_bus_middleware_wraps_subscription_middleware_wraps_the_handler_in_order() -> None:
    calls: list[str] = []
    bus = EventBus(middleware=[recording("bus1", calls), recording("bus2", calls)])

    @bus.subscribe(middleware=[recording("sub1", calls), recording("sub2", calls)])
    async def handler(event: Ping) -> None:
        calls.append("handler")

    async with bus:
        await bus.publish(Ping(n=1))
        await bus.drain(WAIT)

    assert calls == [
        "bus1 in 1",
        "bus2 in 1",
        "sub1 in 1",
        "sub2 in 1",
        "handler",
        "sub2 out 1",
        "sub1 out 1",
        "bus2 out 1",
        "bus1 out 1",
    ]


async def test_plugin_middleware_runs_after_the_bus_middleware() -> None:
    calls: list[str] = []

    class Tracing(Plugin):
        name = "tracing"
        middleware = (recording("plugin", calls),)
        publish_middleware = (recording_publish("plugin-publish", calls),)

    bus = EventBus(
        middleware=[recording("bus", calls)],
        publish_middleware=[recording_publish("bus-publish", calls)],
        plugins=[Tracing()],
    )

    @bus.subscribe(middleware=[recording("sub", calls)])
    def handler(event: Ping) -> None:
        calls.append("handler")

    async with bus:
        await bus.publish(Ping(n=1))
        await bus.drain(WAIT)

    assert calls == [
        "bus-publish in 1 seqs=[0]",
        "plugin-publish in 1 seqs=[0]",
        "plugin-publish out seqs=[1]",
        "bus-publish out seqs=[1]",
        "bus in 1",
        "plugin in 1",
        "sub in 1",
        "handler",
        "sub out 1",
        "plugin out 1",
        "bus out 1",
    ]


async def test_subscription_middleware_applies_to_its_subscription_only() -> None:
    calls: list[str] = []
    plain = Sink()
    async with EventBus() as bus:
        bus.subscribe(Ping, Sink(), name="wrapped", middleware=[recording("only", calls)])
        bus.subscribe(Ping, plain, name="plain")
        await bus.publish(Ping(n=1))
        await bus.drain(WAIT)
    assert calls == ["only in 1", "only out 1"]
    assert plain.seqs == [1]


async def test_a_middleware_is_built_once_per_subscription_with_that_subscription() -> None:
    built: list[str] = []

    def counting(call_next: Handle, context: DeliveryContext) -> Handle:
        built.append(context.name)
        return call_next

    async with EventBus(middleware=[counting]) as bus:
        first = bus.subscribe(Ping, Sink(), name="first")
        second = bus.subscribe(Pong, Sink(), name="second")
        for n in range(10):
            await bus.publish(Ping(n=n))
            await bus.publish(Pong(n=n))
        await bus.drain(WAIT)
    assert built == [first.name, second.name]


async def test_middleware_sees_one_call_per_delivery_around_all_retries() -> None:
    calls: list[str] = []
    attempts: list[int] = []
    bus = EventBus(middleware=[recording("mw", calls)])

    @bus.subscribe(retry=NO_WAIT)
    async def flaky(event: Ping) -> None:
        attempts.append(event.n)
        if len(attempts) < 3:
            raise RuntimeError("not yet")

    async with bus:
        await bus.publish(Ping(n=1))
        await bus.drain(WAIT)

    assert attempts == [1, 1, 1]
    assert calls == ["mw in 1", "mw out 1"]


async def test_middleware_sees_the_final_failure_after_the_last_retry() -> None:
    calls: list[str] = []
    attempts = 0
    bus = EventBus(middleware=[recording("mw", calls)])

    @bus.subscribe(name="hopeless", retry=NO_WAIT)
    async def hopeless(event: Ping) -> None:
        nonlocal attempts
        attempts += 1
        raise RuntimeError("never")

    async with bus:
        await bus.publish(Ping(n=1))
        await bus.drain(WAIT)
        [letter] = await bus.dead_letters.list()

    assert attempts == 3
    assert calls == ["mw in 1", "mw saw RuntimeError"]
    assert letter.attempts == 3


async def test_retry_wraps_timeout_so_each_attempt_has_its_own_limit() -> None:
    calls: list[str] = []
    attempts = 0
    never = anyio.Event()
    bus = EventBus(middleware=[recording("mw", calls)])

    @bus.subscribe(retry=NO_WAIT, timeout=0.05)
    async def hangs_once(event: Ping) -> None:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            await never.wait()

    async with bus:
        await bus.publish(Ping(n=1))
        await bus.drain(WAIT)
        assert await bus.dead_letters.list() == []

    assert attempts == 2
    assert calls == ["mw in 1", "mw out 1"]


async def test_a_timeout_on_every_attempt_ends_as_a_handler_timeout_dead_letter() -> None:
    never = anyio.Event()
    async with EventBus() as bus:

        @bus.subscribe(name="hangs", retry=Retry(attempts=2, backoff=0, jitter=0), timeout=0.02)
        async def hangs(event: Ping) -> None:
            await never.wait()

        await bus.publish(Ping(n=1))
        await bus.drain(WAIT)
        [letter] = await bus.dead_letters.list()

    assert letter.error_type == f"{HandlerTimeout.__module__}.HandlerTimeout"
    assert letter.attempts == 2
    assert "'hangs'" in letter.error_message


async def test_a_failing_middleware_becomes_a_dead_letter_not_a_dead_worker() -> None:
    handled: list[int] = []

    def picky(call_next: Handle, context: DeliveryContext) -> Handle:
        async def handle(record: Record) -> None:
            if record.seq == 2:
                raise LookupError("middleware refused seq 2")
            await call_next(record)

        return handle

    async with EventBus(middleware=[picky]) as bus:

        @bus.subscribe(name="after-picky")
        async def handler(event: Ping) -> None:
            handled.append(event.n)

        for n in range(1, 5):
            await bus.publish(Ping(n=n))
        await bus.drain(WAIT)
        [letter] = await bus.dead_letters.list()

    assert handled == [1, 3, 4]
    assert letter.record.seq == 2
    assert letter.error_type == "builtins.LookupError"


async def test_middleware_can_read_the_record_being_delivered() -> None:
    headers_seen: list[dict[str, str]] = []

    def capture(call_next: Handle, context: DeliveryContext) -> Handle:
        async def handle(record: Record) -> None:
            headers_seen.append(dict(record.headers))
            await call_next(record)

        return handle

    async with EventBus(middleware=[capture]) as bus:
        bus.subscribe(Ping, Sink(), name="sink")
        await bus.publish(Ping(n=1), headers={"trace": "abc"})
        await bus.drain(WAIT)
    assert headers_seen == [{"trace": "abc"}]


async def test_publish_middleware_wraps_each_batch_outermost_first() -> None:
    calls: list[str] = []
    bus = EventBus(publish_middleware=[recording_publish("outer", calls), recording_publish("inner", calls)])
    async with bus:
        await bus.publish(Ping(n=1))
        await bus.publish_many([Ping(n=2), Pong(n=3)])

    assert calls == [
        "outer in 1 seqs=[0]",
        "inner in 1 seqs=[0]",
        "inner out seqs=[1]",
        "outer out seqs=[1]",
        "outer in 2 seqs=[0, 0]",
        "inner in 2 seqs=[0, 0]",
        "inner out seqs=[2, 3]",
        "outer out seqs=[2, 3]",
    ]


async def test_a_publish_middleware_that_raises_stores_nothing_and_reaches_the_publisher() -> None:
    def refuse_pongs(call_next: Commit) -> Commit:
        async def commit(records: Sequence[Record]) -> None:
            if any(isinstance(record.event, Pong) for record in records):
                raise PermissionError("no pongs")
            await call_next(records)

        return commit

    async with EventBus(publish_middleware=[refuse_pongs]) as bus:
        assert await bus.publish(Ping(n=1)) == 1
        with pytest.raises(PermissionError, match="no pongs"):
            await bus.publish(Pong(n=2))
        assert await bus.publish(Ping(n=3)) == 2
        assert [record.event for record in await stored(bus.store)] == [Ping(n=1), Ping(n=3)]
