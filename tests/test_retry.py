"""Retry: the backoff schedule of `Retry` (exponential, capped, jittered) and
how a subscription with ``retry=`` calls a failing handler again, always a
finite number of times."""

from __future__ import annotations

import itertools

import anyio
import pytest
from structlog.testing import capture_logs

from eventbus import EventBus, Retry
from tests.policy_events import WAIT, Tick, assert_all_accounted, log_events

TINY = 0.001
"""A backoff small enough to keep bus tests fast."""


def test_delay_grows_exponentially_from_backoff_by_factor() -> None:
    policy = Retry(attempts=6, backoff=0.1, factor=3.0, max_backoff=100.0, jitter=0)
    assert [policy.delay(n) for n in range(1, 6)] == pytest.approx([0.1, 0.3, 0.9, 2.7, 8.1])


def test_delay_is_capped_by_max_backoff() -> None:
    policy = Retry(attempts=10, backoff=0.1, factor=2.0, max_backoff=0.5, jitter=0)
    assert [policy.delay(n) for n in range(1, 8)] == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5, 0.5, 0.5])


def test_jitter_spreads_each_delay_within_its_fraction_of_the_nominal_one() -> None:
    policy = Retry(attempts=5, backoff=1.0, factor=2.0, max_backoff=3.0, jitter=0.25)
    for failed, nominal in [(1, 1.0), (2, 2.0), (3, 3.0), (4, 3.0)]:
        delays = [policy.delay(failed) for _ in range(200)]
        assert all(0.75 * nominal <= delay <= 1.25 * nominal for delay in delays)
        assert len(set(delays)) > 1, "jitter did not vary the delay"
        assert min(delays) < nominal < max(delays)


def test_zero_backoff_means_no_wait() -> None:
    assert Retry(backoff=0).delay(1) == 0
    assert Retry(backoff=0).delay(5) == 0


def test_the_default_retry_is_finite_and_waits_a_little_longer_each_time() -> None:
    policy = Retry()
    assert 1 < policy.attempts < 10
    assert policy.jitter > 0
    assert policy.backoff > 0
    assert policy.factor > 1
    assert policy.max_backoff < float("inf")


async def test_a_handler_that_always_fails_is_called_attempts_times_then_dead_lettered() -> None:
    calls: list[int] = []
    async with EventBus() as bus:

        @bus.subscribe(name="hopeless", retry=Retry(backoff=TINY))
        async def hopeless(event: Tick) -> None:
            calls.append(event.n)
            raise RuntimeError("always")

        await bus.publish(Tick(n=1))
        await bus.drain(WAIT)
        stats = bus.stats()["hopeless"]
        letters = await bus.dead_letters.list()

    default_attempts = Retry().attempts
    assert calls == [1] * default_attempts
    assert [letter.attempts for letter in letters] == [default_attempts]
    assert (stats.retried, stats.failed, stats.dead_lettered, stats.delivered) == (
        default_attempts - 1,
        default_attempts,
        1,
        0,
    )


async def test_a_handler_that_recovers_is_delivered_and_the_retries_are_counted() -> None:
    attempts: dict[int, int] = {}
    async with EventBus() as bus:

        @bus.subscribe(name="flaky", retry=Retry(attempts=4, backoff=TINY))
        async def flaky(event: Tick) -> None:
            attempts[event.n] = attempts.get(event.n, 0) + 1
            if attempts[event.n] <= event.n:
                raise ConnectionError(f"try {attempts[event.n]}")

        await bus.publish_many([Tick(n=0), Tick(n=1), Tick(n=2)])
        await bus.drain(WAIT)
        stats = bus.stats()["flaky"]
        assert_all_accounted(bus)
        letters = await bus.dead_letters.list()

    assert attempts == {0: 1, 1: 2, 2: 3}
    assert letters == []
    assert (stats.delivered, stats.retried, stats.failed, stats.dead_lettered) == (3, 3, 3, 0)


async def test_a_sync_handler_is_retried_too() -> None:
    calls = 0
    async with EventBus() as bus:

        @bus.subscribe(name="sync_flaky", retry=Retry(attempts=3, backoff=0))
        def sync_flaky(event: Tick) -> None:
            nonlocal calls
            calls += 1
            if calls < 3:
                raise ValueError("not yet")

        await bus.publish(Tick(n=1))
        await bus.drain(WAIT)
        stats = bus.stats()["sync_flaky"]

    assert calls == 3
    assert (stats.delivered, stats.retried) == (1, 2)


async def test_retry_one_attempt_never_retries() -> None:
    calls = 0
    async with EventBus() as bus:

        @bus.subscribe(name="once", retry=Retry(attempts=1, backoff=TINY))
        async def once(event: Tick) -> None:
            nonlocal calls
            calls += 1
            raise ValueError("no")

        await bus.publish(Tick(n=1))
        await bus.drain(WAIT)
        stats = bus.stats()["once"]

    assert calls == 1
    assert (stats.retried, stats.dead_lettered) == (0, 1)


async def test_the_waits_between_attempts_follow_the_backoff_schedule() -> None:
    policy = Retry(attempts=4, backoff=0.01, factor=2.0, max_backoff=0.03, jitter=0)
    started: list[float] = []
    async with EventBus() as bus:

        @bus.subscribe(name="timed", retry=policy)
        async def timed(event: Tick) -> None:
            started.append(anyio.current_time())
            raise ValueError("again")

        await bus.publish(Tick(n=1))
        await bus.drain(WAIT)

    gaps = [later - earlier for earlier, later in itertools.pairwise(started)]
    assert len(gaps) == 3
    # the clock may overshoot a wait, never cut it short: 0.01, 0.02, then capped at 0.03
    for gap, nominal in zip(gaps, [0.01, 0.02, 0.03], strict=True):
        assert gap >= nominal * 0.99


async def test_while_one_event_waits_to_be_retried_the_others_wait_behind_it() -> None:
    order: list[tuple[int, int]] = []
    attempts: dict[int, int] = {}
    async with EventBus() as bus:

        @bus.subscribe(name="ordered", retry=Retry(attempts=3, backoff=TINY))
        async def ordered(event: Tick) -> None:
            attempts[event.n] = attempts.get(event.n, 0) + 1
            order.append((event.n, attempts[event.n]))
            if event.n == 1 and attempts[1] < 3:
                raise ValueError("retry me")

        await bus.publish_many([Tick(n=1), Tick(n=2)])
        await bus.drain(WAIT)

    assert order == [(1, 1), (1, 2), (1, 3), (2, 1)]


async def test_each_retry_is_logged_with_its_attempt_and_the_event() -> None:
    with capture_logs() as logs:
        async with EventBus() as bus:

            @bus.subscribe(name="logged", retry=Retry(attempts=3, backoff=TINY))
            async def logged(event: Tick) -> None:
                raise ValueError("boom")

            seq = await bus.publish(Tick(n=1))
            await bus.drain(WAIT)

    retries = log_events(logs, "handler failed, retrying")
    assert [entry["attempt"] for entry in retries] == [1, 2]
    assert all(entry["log_level"] == "warning" for entry in retries)
    assert all(
        (entry["subscription"], entry["seq"], entry["type"]) == ("logged", seq, "policy.tick") for entry in retries
    )
    assert all("boom" in entry["error"] for entry in retries)
    buried = log_events(logs, "delivery failed, dead-lettered")
    assert [(entry["log_level"], entry["attempts"]) for entry in buried] == [("error", 3)]
