"""Per-attempt timeouts (``timeout=``) and sync handlers run in a worker
thread (``in_thread=True``) so that they do not block the event loop."""

from __future__ import annotations

import threading

import anyio
import anyio.from_thread
import anyio.lowlevel
import pytest

from eventbus import EventBus, HandlerTimeout, Record, Retry
from tests.policy_events import WAIT, Seen, Tick, assert_all_accounted

TIMEOUT = 0.02
THREAD_TIMEOUT = 0.25
"""Long enough for a worker thread to start and finish a quick call on a busy machine."""


async def test_a_hanging_handler_is_cancelled_at_its_timeout_and_counted_as_a_failure() -> None:
    never = anyio.Event()
    cancelled = anyio.Event()
    seen = Seen()
    async with EventBus() as bus:

        @bus.subscribe(name="hangs", timeout=TIMEOUT)
        async def hangs(event: Tick) -> None:
            if event.n == 1:
                try:
                    await never.wait()
                except anyio.get_cancelled_exc_class():
                    cancelled.set()
                    raise
            seen.add(event)

        await bus.publish_many([Tick(n=1), Tick(n=2)])
        await bus.drain(WAIT)
        stats = bus.stats()["hangs"]
        letters = await bus.dead_letters.list("hangs")
        assert_all_accounted(bus)

    assert cancelled.is_set(), "the hanging call was not cancelled"
    assert seen.ns == [2], "the worker must go on with the next event"
    assert (stats.failed, stats.dead_lettered, stats.delivered) == (1, 1, 1)
    assert [(letter.record.seq, letter.error_type, letter.attempts) for letter in letters] == [
        (1, "eventbus.exceptions.HandlerTimeout", 1)
    ]
    assert "hangs" in letters[0].error_message
    assert str(TIMEOUT) in letters[0].error_message


async def test_a_handler_within_its_timeout_is_not_disturbed() -> None:
    seen = Seen()
    async with EventBus() as bus:

        @bus.subscribe(name="quick", timeout=WAIT)
        async def quick(event: Tick) -> None:
            await anyio.lowlevel.checkpoint()
            seen.add(event)

        await bus.publish_many([Tick(n=n) for n in range(5)])
        await bus.drain(WAIT)
        stats = bus.stats()["quick"]

    assert seen.ns == list(range(5))
    assert (stats.delivered, stats.failed) == (5, 0)


async def test_the_timeout_is_per_attempt_so_a_retry_after_a_hang_can_succeed() -> None:
    never = anyio.Event()
    attempts = 0
    async with EventBus() as bus:

        @bus.subscribe(name="second_try", timeout=TIMEOUT, retry=Retry(attempts=3, backoff=0))
        async def second_try(event: Tick) -> None:
            nonlocal attempts
            attempts += 1
            if attempts == 1:
                await never.wait()

        await bus.publish(Tick(n=1))
        await bus.drain(WAIT)
        stats = bus.stats()["second_try"]

    assert attempts == 2
    assert (stats.delivered, stats.retried, stats.failed, stats.dead_lettered) == (1, 1, 1, 0)


def test_handler_timeout_is_a_timeout_error() -> None:
    assert issubclass(HandlerTimeout, TimeoutError)


async def test_a_sync_handler_in_a_thread_does_not_block_the_event_loop() -> None:
    release = threading.Event()
    entered = anyio.Event()
    seen_by_thread: list[int] = []
    others = Seen(until=3)
    async with EventBus() as bus:

        @bus.subscribe(name="blocking", in_thread=True)
        def blocking(event: Tick) -> None:
            assert threading.current_thread() is not threading.main_thread()
            anyio.from_thread.run_sync(entered.set)
            release.wait(WAIT)
            seen_by_thread.append(event.n)

        @bus.subscribe(name="others")
        async def others_handler(event: Tick) -> None:
            others.add(event)

        with anyio.fail_after(WAIT):
            await bus.publish(Tick(n=1))
            await entered.wait()
            # the thread is blocked: the loop still publishes and delivers to others
            await bus.publish_many([Tick(n=2), Tick(n=3)])
            await others.reached.wait()
        assert seen_by_thread == []
        assert bus.stats()["blocking"].pending == 3
        release.set()
        await bus.drain(WAIT)

    assert others.ns == [1, 2, 3]
    assert seen_by_thread == [1, 2, 3]


async def test_a_threaded_sync_handler_gets_the_record_when_it_asks() -> None:
    seqs: list[int] = []
    async with EventBus() as bus:

        @bus.subscribe(Tick, name="threaded_record", in_thread=True)
        def threaded_record(event: Tick, record: Record) -> None:
            seqs.append(record.seq)

        await bus.publish_many([Tick(n=1), Tick(n=2)])
        await bus.drain(WAIT)

    assert seqs == [1, 2]


async def test_a_threaded_handler_past_its_timeout_fails_and_the_worker_moves_on() -> None:
    release = threading.Event()
    seen: list[int] = []
    try:
        async with EventBus() as bus:

            @bus.subscribe(name="slow_thread", in_thread=True, timeout=THREAD_TIMEOUT)
            def slow_thread(event: Tick) -> None:
                if event.n == 1:
                    release.wait(WAIT)
                    return
                seen.append(event.n)

            await bus.publish_many([Tick(n=1), Tick(n=2)])
            await bus.drain(WAIT)
            stats = bus.stats()["slow_thread"]
            letters = await bus.dead_letters.list()
    finally:
        release.set()  # let the abandoned thread end

    assert seen == [2]
    assert (stats.dead_lettered, stats.delivered) == (1, 1)
    assert [letter.error_type for letter in letters] == ["eventbus.exceptions.HandlerTimeout"]


async def test_in_thread_is_refused_for_an_async_handler() -> None:
    bus = EventBus()

    async def handler(event: Tick) -> None:
        pass

    with pytest.raises(ValueError, match="in_thread"):
        bus.subscribe(Tick, handler, in_thread=True)
