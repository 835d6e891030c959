"""Dead letters: what a failed delivery leaves in the store, and
``bus.dead_letters`` listing, redriving and purging them; events that cannot
be decoded go straight to dead letters without retries."""

from __future__ import annotations

import time
import uuid
from datetime import UTC

import anyio

from eventbus import Event, EventBus, MemoryStore, Record, Retry
from tests.policy_events import WAIT, Seen, Tick, assert_all_accounted, n_of

TINY = 0.001


class Refused(Exception):
    """What the failing handlers of these tests raise."""


def stored_record(data: bytes, type_name: str = "policy.tick") -> Record:
    """A record as a durable store would hand it back: JSON, decoded on first use."""
    return Record.from_stored(
        seq=0, type=type_name, version=1, data=data, event_id=uuid.uuid4(), recorded_at=time.time_ns()
    )


async def test_a_dead_letter_keeps_everything_about_the_failure() -> None:
    async with EventBus() as bus:

        @bus.subscribe(name="refuser", retry=Retry(attempts=3, backoff=0.01, jitter=0))
        async def refuser(event: Tick) -> None:
            raise Refused(f"cannot take {event.n}")

        seq = await bus.publish(Tick(n=7), headers={"tenant": "t1"})
        await bus.drain(WAIT)
        [letter] = await bus.dead_letters.list()

    assert isinstance(letter.id, uuid.UUID)
    assert letter.subscription == "refuser"
    assert letter.record.seq == seq
    assert letter.record.event == Tick(n=7)
    assert letter.record.headers == {"tenant": "t1"}
    assert letter.error_type == f"{__name__}.Refused"
    assert letter.error_message == "cannot take 7"
    assert "Traceback" in letter.traceback
    assert "refuser" in letter.traceback
    assert "Refused: cannot take 7" in letter.traceback
    assert letter.attempts == 3
    assert letter.first_failed_at.tzinfo is UTC
    assert letter.last_failed_at.tzinfo is UTC
    # two waits of at least 0.01 s and 0.02 s lie between the first and the last failure
    assert (letter.last_failed_at - letter.first_failed_at).total_seconds() >= 0.029


async def test_a_failure_without_retry_is_one_attempt() -> None:
    async with EventBus() as bus:

        @bus.subscribe(name="no_retry")
        def no_retry(event: Tick) -> None:
            raise Refused("once")

        await bus.publish(Tick(n=1))
        await bus.drain(WAIT)
        [letter] = await bus.dead_letters.list()

    assert letter.attempts == 1
    assert letter.first_failed_at == letter.last_failed_at


async def test_list_filters_by_subscription() -> None:
    async with EventBus() as bus:

        @bus.subscribe(name="odd_fails")
        async def odd_fails(event: Tick) -> None:
            if event.n % 2:
                raise Refused("odd")

        @bus.subscribe(name="all_fail")
        async def all_fail(event: Tick) -> None:
            raise Refused("all")

        await bus.publish_many([Tick(n=n) for n in range(1, 5)])
        await bus.drain(WAIT)
        odd = await bus.dead_letters.list(subscription="odd_fails")
        every = await bus.dead_letters.list(subscription="all_fail")
        nobody = await bus.dead_letters.list(subscription="no_such_subscription")
        everything = await bus.dead_letters.list()

    assert sorted(n_of(letter.record) for letter in odd) == [1, 3]
    assert sorted(n_of(letter.record) for letter in every) == [1, 2, 3, 4]
    assert nobody == []
    assert len(everything) == 6


async def test_redrive_delivers_to_that_subscription_only_and_removes_the_letter_on_success() -> None:
    healthy = Seen()
    broken = True
    fixed = Seen()
    async with EventBus() as bus:

        @bus.subscribe(name="healthy")
        async def healthy_handler(event: Tick) -> None:
            healthy.add(event)

        @bus.subscribe(name="fragile")
        async def fragile(event: Tick) -> None:
            if broken:
                raise Refused("still broken")
            fixed.add(event)

        await bus.publish(Tick(n=1))
        await bus.drain(WAIT)
        [letter] = await bus.dead_letters.list()

        broken = False
        assert await bus.dead_letters.redrive() == 1
        remaining = await bus.dead_letters.list()
        stats = bus.stats()

    assert letter.subscription == "fragile"
    assert fixed.ns == [1]
    assert healthy.ns == [1], "redrive must not deliver to the other subscriptions"
    assert remaining == []
    assert (stats["fragile"].dead_lettered, stats["healthy"].delivered) == (1, 1)


async def test_redrive_while_still_failing_keeps_the_letter_then_fixing_the_handler_removes_it() -> None:
    broken = True
    calls = 0
    async with EventBus() as bus:

        @bus.subscribe(name="stubborn", retry=Retry(attempts=2, backoff=TINY))
        async def stubborn(event: Tick) -> None:
            nonlocal calls
            calls += 1
            if broken:
                raise Refused(f"call {calls}")

        seq = await bus.publish(Tick(n=1))
        await bus.drain(WAIT)
        [first] = await bus.dead_letters.list("stubborn")

        assert await bus.dead_letters.redrive() == 0
        [second] = await bus.dead_letters.list("stubborn")

        broken = False
        assert await bus.dead_letters.redrive([second.id]) == 1
        after_fix = await bus.dead_letters.list()

    assert first.attempts == 2
    assert second.record.seq == seq
    assert second.attempts == 4, "the letter counts every attempt, redrives included"
    assert second.first_failed_at == first.first_failed_at
    assert second.last_failed_at > first.last_failed_at
    assert second.error_message == "call 4"
    assert calls == 5
    assert after_fix == []


async def test_redrive_by_ids_touches_only_those_letters() -> None:
    seen = Seen()
    broken = True
    async with EventBus() as bus:

        @bus.subscribe(name="picky")
        async def picky(event: Tick) -> None:
            if broken:
                raise Refused("no")
            seen.add(event)

        await bus.publish_many([Tick(n=n) for n in range(1, 4)])
        await bus.drain(WAIT)
        letters = {n_of(letter.record): letter for letter in await bus.dead_letters.list()}
        broken = False
        assert await bus.dead_letters.redrive([letters[2].id]) == 1
        left = await bus.dead_letters.list()
        assert await bus.dead_letters.redrive([uuid.uuid4()]) == 0

    assert seen.ns == [2]
    assert sorted(letter.id for letter in left) == sorted([letters[1].id, letters[3].id])


async def test_purge_by_ids_and_purge_all_return_how_many_were_deleted() -> None:
    async with EventBus() as bus:

        @bus.subscribe(name="doomed")
        async def doomed(event: Tick) -> None:
            raise Refused("no")

        await bus.publish_many([Tick(n=n) for n in range(1, 6)])
        await bus.drain(WAIT)
        letters = await bus.dead_letters.list()
        some = [letters[0].id, letters[1].id]

        assert await bus.dead_letters.purge(some) == 2
        assert await bus.dead_letters.purge(some) == 0, "already gone"
        assert {letter.id for letter in await bus.dead_letters.list()} == {letter.id for letter in letters[2:]}
        assert await bus.dead_letters.purge() == 3
        assert await bus.dead_letters.list() == []
        assert await bus.dead_letters.purge() == 0
        assert bus.stats()["doomed"].dead_lettered == 5, "purging does not rewrite history"


async def test_an_event_that_fails_to_decode_is_dead_lettered_at_once_and_catch_up_goes_on() -> None:
    store = MemoryStore()
    await store.append(
        [
            stored_record(b'{"n": 1}'),
            stored_record(b'{"n": "not a number"}'),
            stored_record(b'{"n": 3}'),
        ]
    )
    calls: list[int] = []
    async with EventBus(store) as bus:

        @bus.subscribe(name="history", from_seq=1, retry=Retry(attempts=5, backoff=TINY))
        async def history(event: Tick) -> None:
            calls.append(event.n)

        await bus.publish(Tick(n=4))
        await bus.drain(WAIT)
        stats = bus.stats()["history"]
        [letter] = await bus.dead_letters.list("history")
        assert_all_accounted(bus)

    assert calls == [1, 3, 4]
    assert letter.record.seq == 2
    assert letter.error_type == "eventbus.exceptions.EventDecodeError"
    assert "policy.tick" in letter.error_message
    assert letter.attempts == 1
    assert (stats.retried, stats.failed, stats.dead_lettered, stats.delivered) == (0, 1, 1, 3)


async def test_an_event_of_an_unknown_type_is_dead_lettered_for_a_catch_all_subscription() -> None:
    store = MemoryStore()
    await store.append([stored_record(b"{}", type_name="policy.never_registered"), stored_record(b'{"n": 2}')])
    received: list[str] = []
    async with EventBus(store) as bus:

        @bus.subscribe(Event, name="everything", from_seq=1, retry=Retry(attempts=3, backoff=TINY))
        async def everything(event: Event) -> None:
            received.append(type(event).__event_type__)

        with anyio.fail_after(WAIT):
            await bus.drain()
        [letter] = await bus.dead_letters.list()
        stats = bus.stats()["everything"]

    assert received == ["policy.tick"]
    assert letter.error_type == "eventbus.exceptions.UnknownEventType"
    assert "policy.never_registered" in letter.error_message
    assert (letter.attempts, stats.retried) == (1, 0)
