"""Fault injection: 20 000 events through a subscription where 10% of the
deliveries raise, 1% hang past the timeout and some fail once then recover.
Every delivery must end handled or dead-lettered, the stats must add up
exactly, and the dead-letter store must hold exactly the failed events."""

from __future__ import annotations

import anyio

from eventbus import EventBus, HandlerTimeout, Record, Retry
from tests.policy_events import WAIT, Tick, accounted

TOTAL = 20_000
BATCH = 1_000
ATTEMPTS = 2
TIMEOUT = 0.01
WORKERS = 16
"""Enough workers that the hanging deliveries wait out their timeouts side by side."""


def raises(seq: int) -> bool:
    """10% of the events fail on every attempt."""
    return seq % 10 == 3


def hangs(seq: int) -> bool:
    """1% of the events hang on every attempt, past the timeout."""
    return seq % 100 == 7


def flaky(seq: int) -> bool:
    """5% of the events fail on their first attempt only."""
    return seq % 20 == 9


class Injected(Exception):
    """The failure this test injects."""


async def test_every_delivery_is_accounted_for_and_exactly_the_failed_ones_are_dead_lettered() -> None:
    never = anyio.Event()
    handled: list[int] = []
    attempts: dict[int, int] = {}
    observed: list[int] = []

    async with EventBus() as bus:

        @bus.subscribe(
            Tick,
            name="faulty",
            concurrency=WORKERS,
            timeout=TIMEOUT,
            retry=Retry(attempts=ATTEMPTS, backoff=0),
        )
        async def faulty(event: Tick, record: Record) -> None:
            seq = record.seq
            if hangs(seq):
                await never.wait()
            if raises(seq):
                raise Injected(f"injected failure at seq {seq}")
            if flaky(seq) and seq not in attempts:
                attempts[seq] = 1
                raise Injected(f"first attempt at seq {seq}")
            handled.append(seq)

        @bus.subscribe(name="observer")
        async def observer(event: Tick) -> None:
            observed.append(event.n)

        with anyio.fail_after(WAIT * 3):
            for start in range(1, TOTAL + 1, BATCH):
                await bus.publish_many([Tick(n=n) for n in range(start, start + BATCH)])
            await bus.drain()
        stats = bus.stats()
        letters = await bus.dead_letters.list("faulty")

    failed_for_good = {seq for seq in range(1, TOTAL + 1) if raises(seq) or hangs(seq)}
    recovered = {seq for seq in range(1, TOTAL + 1) if flaky(seq)}
    assert len(failed_for_good) == 2_000 + 200
    assert recovered.isdisjoint(failed_for_good)

    faulty_stats = stats["faulty"]
    assert accounted(faulty_stats)
    assert accounted(stats["observer"])
    assert faulty_stats.routed == TOTAL
    assert faulty_stats.pending == 0
    assert faulty_stats.dropped == 0
    assert faulty_stats.dead_lettered == len(failed_for_good)
    assert faulty_stats.delivered == TOTAL - len(failed_for_good)
    assert faulty_stats.retried == len(failed_for_good) * (ATTEMPTS - 1) + len(recovered)
    assert faulty_stats.failed == faulty_stats.retried + faulty_stats.dead_lettered
    assert faulty_stats.position == TOTAL

    assert sorted(handled) == sorted(set(range(1, TOTAL + 1)) - failed_for_good)
    assert {letter.record.seq for letter in letters} == failed_for_good
    assert len(letters) == len(failed_for_good), "a failed delivery was dead-lettered twice"
    assert all(letter.attempts == ATTEMPTS for letter in letters)
    timed_out = {letter.record.seq for letter in letters if letter.error_type == _qualified(HandlerTimeout)}
    raised = {letter.record.seq for letter in letters if letter.error_type == _qualified(Injected)}
    assert timed_out == {seq for seq in failed_for_good if hangs(seq)}
    assert raised == {seq for seq in failed_for_good if not hangs(seq)}

    assert observed == list(range(1, TOTAL + 1)), "the faults leaked into another subscription"
    assert stats.published == TOTAL


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
