"""`EventBus.publish_threadsafe`: synchronous code in another thread (a sync
web view, a worker thread) publishes onto the running bus and gets the
stored seq back; from the loop's own thread it is a clear error, not a
deadlock."""

from __future__ import annotations

import threading
from uuid import uuid4

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
import pytest

from eventbus import BusClosed, EventBus, Record
from tests.policy_events import WAIT, Tick


async def test_a_worker_thread_publishes_and_gets_the_seq() -> None:
    handled: list[Record] = []
    async with EventBus() as bus:
        bus.subscribe(Tick, lambda event, record: handled.append(record), name="seen")
        await bus.publish(Tick(n=0))
        with anyio.fail_after(WAIT):
            seq = await anyio.to_thread.run_sync(lambda: bus.publish_threadsafe(Tick(n=1), {"from": "thread"}))
            await bus.drain()
    assert seq == 2
    assert [record.event for record in handled] == [Tick(n=0), Tick(n=1)]
    assert dict(handled[1].headers) == {"from": "thread"}


async def test_a_plain_thread_publishes_with_its_own_event_id_once() -> None:
    event_id = uuid4()
    seqs: list[int] = []
    errors: list[BaseException] = []
    done = anyio.Event()

    def sync_view(bus: EventBus, token: anyio.lowlevel.EventLoopToken) -> None:
        try:
            seqs.extend(bus.publish_threadsafe(Tick(n=n), event_id=event_id) for n in range(2))
        except BaseException as exc:  # reported to the test below
            errors.append(exc)
        finally:
            anyio.from_thread.run_sync(done.set, token=token)

    async with EventBus() as bus:
        thread = threading.Thread(target=sync_view, args=(bus, anyio.lowlevel.current_token()))
        thread.start()
        with anyio.fail_after(WAIT):
            await done.wait()
        thread.join()
        assert len(list(await bus.store.read())) == 1
    assert errors == []
    assert seqs == [1, 1]


async def test_from_the_loops_own_thread_it_is_a_clear_error() -> None:
    async with EventBus() as bus:
        with pytest.raises(RuntimeError, match=r"await bus\.publish"):
            bus.publish_threadsafe(Tick(n=1))
        assert await bus.store.head() == 0


async def test_what_publish_refuses_is_raised_in_the_calling_thread() -> None:
    async with EventBus() as bus:
        with pytest.raises(TypeError, match="Event"):
            await anyio.to_thread.run_sync(lambda: bus.publish_threadsafe({"n": 1}))  # type: ignore[arg-type]


async def test_on_a_bus_that_is_not_running_it_is_bus_closed() -> None:
    bus = EventBus()
    with pytest.raises(BusClosed, match="stopped"):
        await anyio.to_thread.run_sync(lambda: bus.publish_threadsafe(Tick(n=1)))
    async with bus:
        pass
    with pytest.raises(BusClosed):
        await anyio.to_thread.run_sync(lambda: bus.publish_threadsafe(Tick(n=1)))
