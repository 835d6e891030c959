"""Failure containment: one subscription's trouble never stops the bus.

A store error in a catch-up read, a checkpoint load or save, or a tail wait
is logged and retried with capped backoff inside that subscription, which
then goes on from where it was; a handler's foreign cancellation is a failure
like any other; ``KeyboardInterrupt`` and ``SystemExit`` propagate at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path

import anyio
import pytest
from eventbus_sqlite import SqliteStore
from structlog.testing import capture_logs

from eventbus import EventBus, MemoryStore, Record, Retry, StoreError
from eventbus.store import LeaseFence
from tests.policy_events import WAIT, Hold, Seen, Tick, log_events, publish_ticks


class FlakyStore(MemoryStore):
    """A real `MemoryStore` whose named calls fail with `StoreError` the first
    ``failures[name]`` times, like a network store whose connection resets."""

    def __init__(self, **failures: int) -> None:
        super().__init__()
        self.failures = dict(failures)
        self.failed: dict[str, int] = {}

    def _maybe_fail(self, name: str) -> None:
        if self.failures.get(name, 0) > 0:
            self.failures[name] -= 1
            self.failed[name] = self.failed.get(name, 0) + 1
            raise StoreError(f"connection reset during {name}")

    async def read(self, from_seq: int = 1, **options: object) -> Sequence[Record]:  # type: ignore[override]
        self._maybe_fail("read")
        return await super().read(from_seq, **options)  # type: ignore[arg-type]

    async def load_checkpoint(self, name: str) -> int | None:
        self._maybe_fail("load_checkpoint")
        return await super().load_checkpoint(name)

    async def save_checkpoints(self, positions: Mapping[str, int], *, fence: LeaseFence | None = None) -> None:
        self._maybe_fail("save_checkpoints")
        await super().save_checkpoints(positions, fence=fence)


class FlakyTailStore(SqliteStore):
    """A real SQLite store whose ``wait_for_append`` fails the first ``failures`` times."""

    def __init__(self, path: Path, failures: int) -> None:
        super().__init__(path)
        self.failures = failures

    async def wait_for_append(self, after_seq: int) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise StoreError("connection reset while waiting for appends")
        await super().wait_for_append(after_seq)


async def test_a_store_error_in_a_catch_up_read_is_retried_and_the_bus_goes_on() -> None:
    store = FlakyStore(read=3)
    seen = Seen()
    other = Seen()
    bus = EventBus(store)
    bus.subscribe(Tick, lambda event: seen.add(event), name="history", from_seq=1)
    bus.subscribe(Tick, lambda event: other.add(event), name="live")
    with capture_logs() as logs, anyio.fail_after(WAIT):
        async with bus:
            await publish_ticks(bus, range(1, 6))
            await bus.drain()
            assert bus.running
    assert seen.ns == [1, 2, 3, 4, 5]
    assert other.ns == [1, 2, 3, 4, 5]
    assert store.failed == {"read": 3}
    retries = log_events(logs, "catch-up read failed, retrying")
    assert len(retries) == 3
    assert retries[0]["subscription"] == "history"
    assert "connection reset" in retries[0]["error"]
    assert [entry["retry_in"] for entry in retries] == [0.05, 0.1, 0.2]


async def test_a_store_error_loading_a_checkpoint_is_retried() -> None:
    store = FlakyStore(load_checkpoint=2)
    await store.save_checkpoints({"ledger": 2})
    seen = Seen()
    bus = EventBus(store)
    with anyio.fail_after(WAIT):
        async with EventBus(store) as writer:
            await publish_ticks(writer, range(1, 5))
        bus.subscribe(Tick, lambda event: seen.add(event), name="ledger", durable=True)
        with capture_logs() as logs:
            async with bus:
                await bus.drain()
    assert seen.ns == [3, 4], "resumed after the checkpoint once the load succeeded"
    assert len(log_events(logs, "checkpoint load failed, retrying")) == 2


async def test_a_failed_checkpoint_save_is_logged_and_saved_later() -> None:
    store = FlakyStore(save_checkpoints=2)
    seen = Seen()
    bus = EventBus(store)
    bus.subscribe(Tick, lambda event: seen.add(event), name="ledger", durable=True)
    with capture_logs() as logs, anyio.fail_after(WAIT):
        async with bus:
            await publish_ticks(bus, range(1, 4))
            await bus.drain()
    assert seen.ns == [1, 2, 3]
    assert await store.load_checkpoint("ledger") == 3
    assert log_events(logs, "could not save checkpoint, retrying")


async def test_a_store_error_while_tailing_is_retried(tmp_path: Path) -> None:
    store = FlakyTailStore(tmp_path / "events.db", failures=2)
    seen = Seen(until=3)
    bus = EventBus(store)
    bus.subscribe(Tick, lambda event: seen.add(event), name="tail", from_seq=1)
    with capture_logs() as logs, anyio.fail_after(WAIT):
        async with bus:
            await publish_ticks(bus, [1])
            await bus.drain()
            await publish_ticks(bus, [2, 3])
            await seen.reached.wait()
    assert seen.ns == [1, 2, 3]
    assert len(log_events(logs, "waiting for appends failed, retrying")) == 2


async def test_a_foreign_cancellation_in_a_handler_is_a_failure_that_is_retried_and_dead_lettered() -> None:
    calls = 0

    async def cancelled_elsewhere() -> None:
        if anyio.get_cancelled_exc_class() is asyncio.CancelledError:
            future = asyncio.get_running_loop().create_future()
            future.cancel()  # someone else cancelled the future this handler awaits
            await future
        raise asyncio.CancelledError  # on trio, a foreign library's cancellation

    async with EventBus(shutdown_timeout=None) as bus:

        @bus.subscribe(name="victim", retry=Retry(attempts=2, backoff=0))
        async def victim(event: Tick) -> None:
            nonlocal calls
            calls += 1
            await cancelled_elsewhere()

        seen = Seen()
        bus.subscribe(Tick, lambda event: seen.add(event), name="bystander")
        with anyio.fail_after(WAIT):
            await publish_ticks(bus, [1, 2])
            await bus.drain()
        [first, second] = await bus.dead_letters.list("victim")
    assert calls == 4
    assert first.error_type == "asyncio.exceptions.CancelledError"
    assert (first.attempts, second.attempts) == (2, 2)
    assert seen.ns == [1, 2]


async def test_system_exit_in_a_handler_propagates_out_of_async_with_at_once() -> None:
    bus = EventBus(shutdown_timeout=None)

    @bus.subscribe(name="exits")
    async def exits(event: Tick) -> None:
        raise SystemExit(3)

    async def body() -> None:
        async with bus:
            await bus.publish(Tick(n=1))
            await anyio.sleep_forever()

    with anyio.fail_after(WAIT), pytest.raises(SystemExit) as raised:
        await body()
    assert raised.value.code == 3
    assert not bus.running


async def test_an_exception_that_is_raised_twice_counts_the_attempts_of_each_delivery() -> None:
    shared = RuntimeError("the same instance every time")

    async with EventBus() as bus:

        @bus.subscribe(name="plain")
        async def plain(event: Tick) -> None:
            raise shared

        @bus.subscribe(name="retried", retry=Retry(attempts=2, backoff=0))
        async def retried(event: Tick) -> None:
            raise shared

        with anyio.fail_after(WAIT):
            await publish_ticks(bus, [1, 2])
            await bus.drain()
        plain_letters = await bus.dead_letters.list("plain")
        retried_letters = await bus.dead_letters.list("retried")
    assert [letter.attempts for letter in plain_letters] == [1, 1]
    assert [letter.attempts for letter in retried_letters] == [2, 2]


async def test_a_where_failure_on_a_record_that_is_then_dropped_leaves_nothing_behind() -> None:
    hold = Hold()

    def explodes(event: Tick) -> bool:
        raise ValueError(f"where= cannot judge {event.n}")

    async with EventBus() as bus:

        @bus.subscribe(Tick, name="held", where=lambda event: event.n == 0 or explodes(event))
        async def held(event: Tick) -> None:
            await hold.wait()

        dropping = bus.subscribe(
            Tick, lambda event: None, name="dropping", where=explodes, max_pending=1, backpressure="drop_newest"
        )
        with anyio.fail_after(WAIT):
            await publish_ticks(bus, [0])
            await hold.entered.wait()
            await publish_ticks(bus, range(1, 50))
            assert dropping.run is not None
            assert len(dropping.run.inbox.rejections) <= 1, "only the queued record's rejection is kept"
            hold.release()
            await bus.drain()
        stats = bus.stats()["dropping"]
        assert dropping.run.inbox.rejections == {}
        assert stats.dropped + stats.dead_lettered == 50
