"""`eventbus.testing.TestBus`: the application's own bus, on a test store,
with what was published and dead-lettered at hand.

Most tests share the module-level `SHOP` bus, as an application keeps one
(a bus runs again after it stopped); tests that need other options build
their own with `_shop_bus`.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import anyio
import pytest
from core_events import WAIT
from eventbus_sqlite import SqliteStore

from eventbus import Event, EventBus, Handle, HandlerTimeout, Middleware, Plugin, Record, Retry, Subscription
from eventbus._testmode import failure_observer, retry_sleep
from eventbus.testing import Collector, TestBus


class OrderPlaced(Event, name="testbus.order_placed"):
    order_id: str
    amount: float


class PaymentCaptured(Event, name="testbus.payment_captured"):
    order_id: str
    amount: float


class ExpressPaymentCaptured(PaymentCaptured, name="testbus.express_payment_captured"):
    pass


class ReceiptSent(Event, name="testbus.receipt_sent"):
    order_id: str


class CardDeclined(Exception):
    pass


LONG_BACKOFF = Retry(attempts=3, backoff=3600, jitter=0)
"""A retry policy whose delays a test could never wait out."""


def _shop_bus(
    store: str | None = None, *, decline_over: float = 1_000, payment_middleware: Sequence[Middleware] = ()
) -> EventBus:
    """An application's bus: a payment step with retries that publishes in
    turn, a receipt step that publishes again, a declining card above ``decline_over``."""
    bus = EventBus(store=store)

    @bus.subscribe(retry=LONG_BACKOFF, name="payments", middleware=payment_middleware)
    async def capture(event: OrderPlaced) -> None:
        if event.amount > decline_over:
            raise CardDeclined(f"card declined for {event.order_id}")
        cls = ExpressPaymentCaptured if event.amount > 100 else PaymentCaptured
        await bus.publish(cls(order_id=event.order_id, amount=event.amount))

    @bus.subscribe(name="receipts")
    async def send_receipt(event: PaymentCaptured) -> None:
        await anyio.lowlevel.checkpoint()
        await bus.publish(ReceiptSent(order_id=event.order_id))

    return bus


SHOP = _shop_bus()
"""The shop's bus, made once at import as an application makes it."""


# -- what was published --------------------------------------------------------------


async def test_publish_waits_for_the_handlers_and_everything_they_publish() -> None:
    bus = SHOP
    async with TestBus(bus) as tb:
        seq = await tb.publish(OrderPlaced(order_id="A1", amount=5))

        assert seq == 1
        assert [(r.seq, type(r.event)) for r in tb.published] == [
            (1, OrderPlaced),
            (2, PaymentCaptured),
            (3, ReceiptSent),
        ]
        assert all(isinstance(record, Record) for record in tb.published)
        assert tb.published[2].causation_id == tb.published[1].event_id
        assert bus.stats()["receipts"].delivered == 1


async def test_published_events_of_a_type_include_its_subclasses_in_seq_order() -> None:
    async with TestBus(SHOP) as tb:
        await tb.publish(OrderPlaced(order_id="A1", amount=5))
        await tb.publish(OrderPlaced(order_id="A2", amount=500))

        payments = tb.published_events(PaymentCaptured)

    assert payments == [
        PaymentCaptured(order_id="A1", amount=5),
        ExpressPaymentCaptured(order_id="A2", amount=500),
    ]
    assert tb.published_events(ExpressPaymentCaptured) == [ExpressPaymentCaptured(order_id="A2", amount=500)]
    assert [event.order_id for event in tb.published_events(ReceiptSent)] == ["A1", "A2"]


async def test_assert_published_returns_the_first_match() -> None:
    async with TestBus(SHOP) as tb:
        await tb.publish(OrderPlaced(order_id="A1", amount=5))
        await tb.publish(OrderPlaced(order_id="A2", amount=500))

        found = tb.assert_published(PaymentCaptured, order_id="A2")
        anything = tb.assert_published(ReceiptSent)

    assert found == ExpressPaymentCaptured(order_id="A2", amount=500)
    assert anything == ReceiptSent(order_id="A1")


async def test_assert_published_fails_listing_what_was_published() -> None:
    async with TestBus(SHOP) as tb:
        await tb.publish(OrderPlaced(order_id="A1", amount=5))

        with pytest.raises(AssertionError) as failure:
            tb.assert_published(PaymentCaptured, order_id="A1", amount=6)

    message = str(failure.value)
    assert "no PaymentCaptured(order_id='A1', amount=6) was published" in message
    assert "published in this run (3):" in message
    assert "seq 1: OrderPlaced(order_id='A1', amount=5.0)" in message
    assert "seq 2: PaymentCaptured(order_id='A1', amount=5.0)" in message
    assert "seq 3: ReceiptSent(order_id='A1')" in message


async def test_assert_published_on_an_empty_run_says_nothing_was_published() -> None:
    async with TestBus(SHOP) as tb:
        with pytest.raises(AssertionError, match=r"no ReceiptSent\(\) was published; nothing was published"):
            tb.assert_published(ReceiptSent)


async def test_a_long_list_is_cut_short() -> None:
    async with TestBus(EventBus()) as tb:
        await tb.bus.publish_many(ReceiptSent(order_id=str(n)) for n in range(60))
        with pytest.raises(AssertionError) as failure:
            tb.assert_published(ReceiptSent, order_id="none")

    assert "seq 50: ReceiptSent(order_id='49')" in str(failure.value)
    assert "seq 51" not in str(failure.value)
    assert "... and 10 more" in str(failure.value)


async def test_assert_published_refuses_a_field_the_type_does_not_have() -> None:
    async with TestBus(SHOP) as tb:
        await tb.publish(OrderPlaced(order_id="A1", amount=5))
        with pytest.raises(ValueError, match=r"PaymentCaptured has no field\(s\) \['ordr_id'\]"):
            tb.assert_published(PaymentCaptured, ordr_id="A1")


async def test_published_is_a_snapshot() -> None:
    async with TestBus(SHOP) as tb:
        before = tb.published
        await tb.publish(OrderPlaced(order_id="A1", amount=5))
    assert before == []
    assert len(tb.published) == 3


# -- stores ----------------------------------------------------------------------------


async def test_the_production_store_is_never_touched(tmp_path: Path) -> None:
    production = tmp_path / "production.db"
    bus = _shop_bus(f"sqlite:///{production}")
    app_store = bus.store

    async with TestBus(bus) as tb:
        assert bus.store is not app_store
        await tb.publish(OrderPlaced(order_id="A1", amount=5))
        async for record in bus.replay(ReceiptSent):
            assert record.seq == 3

    assert bus.store is app_store
    assert not production.exists()
    assert not (tmp_path / "production.db-wal").exists()


async def test_a_store_of_the_tests_choice_keeps_its_history_out_of_published(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'given.db'}"
    async with EventBus(store=url) as earlier:
        await earlier.publish(OrderPlaced(order_id="old", amount=1))

    bus = _shop_bus()
    async with TestBus(bus, store=url) as tb:
        assert isinstance(tb.store, SqliteStore)
        await tb.publish(OrderPlaced(order_id="A1", amount=5))
        replayed = [record.event async for record in bus.replay(OrderPlaced)]

    assert replayed == [OrderPlaced(order_id="old", amount=1), OrderPlaced(order_id="A1", amount=5)]
    assert [record.seq for record in tb.published] == [2, 3, 4]


async def test_a_durable_subscription_of_a_bus_configured_with_a_shared_store(tmp_path: Path) -> None:
    bus = EventBus(store=f"sqlite:///{tmp_path / 'production.db'}", shutdown_timeout=0.1)
    seen: list[str] = []

    @bus.subscribe(durable=True, name="ledger")
    async def ledger(event: OrderPlaced) -> None:
        seen.append(event.order_id)

    async with TestBus(bus) as tb:
        with anyio.fail_after(WAIT):
            await tb.publish(OrderPlaced(order_id="A1", amount=5))

    assert seen == ["A1"]


# -- failures ------------------------------------------------------------------------


async def test_the_first_handler_error_is_raised_unchanged_after_its_retries() -> None:
    raised: list[BaseException] = []
    bus = _shop_bus(decline_over=100, payment_middleware=[_catching(raised)])

    async with TestBus(bus) as tb:
        with anyio.fail_after(WAIT), pytest.raises(CardDeclined) as failure:
            await tb.publish(OrderPlaced(order_id="A1", amount=500))

        assert len(raised) == 1
        assert raised[0] is failure.value  # the handler's own exception object, after its last attempt
        # the three attempts ran, without the hour-long backoff between them
        letters = {letter.subscription: letter for letter in tb.dead_letters}
        assert letters["payments"].attempts == 3
        assert letters["payments"].error_message == "card declined for A1"
        assert bus.stats()["payments"].retried == 2
        # the delivery still ended as a dead letter, and the bus goes on
        await tb.publish(OrderPlaced(order_id="A2", amount=5))
        tb.assert_published(ReceiptSent, order_id="A2")


def _catching(raised: list[BaseException]) -> Middleware:
    """A middleware that notes the exception each delivery of its subscription ends with."""

    def wrap(call_next: Handle, subscription: Subscription) -> Handle:
        async def handle(record: Record) -> None:
            try:
                await call_next(record)
            except Exception as exc:
                raised.append(exc)
                raise

        return handle

    return wrap


async def test_only_the_first_error_is_raised_and_the_next_publish_starts_clean() -> None:
    bus = EventBus()

    @bus.subscribe(name="first")
    async def first(event: OrderPlaced) -> None:
        raise CardDeclined("first")

    @bus.subscribe(name="second")
    async def second(event: OrderPlaced) -> None:
        await anyio.lowlevel.checkpoint()
        raise CardDeclined("second")

    async with TestBus(bus) as tb:
        with pytest.raises(CardDeclined, match="first"):
            await tb.publish(OrderPlaced(order_id="A1", amount=5))
        await tb.publish(ReceiptSent(order_id="A1"))

        assert sorted(letter.error_message for letter in tb.dead_letters) == ["first", "second"]


async def test_errors_of_threaded_and_concurrent_handlers_are_raised_too() -> None:
    bus = EventBus()
    raised: list[Exception] = []

    def in_a_thread(event: OrderPlaced) -> None:
        exc = CardDeclined(f"thread: {event.order_id}")
        raised.append(exc)
        raise exc

    bus.subscribe(OrderPlaced, in_a_thread, name="threaded", in_thread=True, concurrency=2, key=lambda e: e.order_id)

    async with TestBus(bus) as tb:
        with pytest.raises(CardDeclined) as failure:
            await tb.publish(OrderPlaced(order_id="A1", amount=5))

    assert raised == [failure.value]
    assert raised[0] is failure.value


async def test_an_error_of_a_publish_made_by_the_code_under_test_is_raised_by_drain() -> None:
    async with TestBus(_shop_bus(decline_over=10)) as tb:
        await tb.bus.publish(OrderPlaced(order_id="A1", amount=50))
        with pytest.raises(CardDeclined):
            await tb.drain(WAIT)
        await tb.drain(WAIT)


async def test_an_error_nobody_waited_for_is_raised_when_the_run_ends() -> None:
    bus = _shop_bus(decline_over=10)

    async def run() -> None:
        async with TestBus(bus) as tb:
            await tb.bus.publish(OrderPlaced(order_id="A1", amount=50))

    with pytest.raises(CardDeclined, match="card declined for A1"):
        await run()
    assert not bus.running


async def test_an_exception_leaving_the_block_wins_over_a_handler_error() -> None:
    async def run() -> None:
        async with TestBus(_shop_bus(decline_over=10)) as tb:
            await tb.bus.publish(OrderPlaced(order_id="A1", amount=50))
            raise KeyError("the test's own failure")

    with pytest.raises(KeyError):
        await run()


async def test_with_raise_errors_false_the_policies_decide_and_dead_letters_show_it() -> None:
    bus = _shop_bus(decline_over=100)

    @bus.subscribe(name="slow", timeout=0.05)
    async def slow(event: OrderPlaced) -> None:
        if event.order_id == "A2":
            await anyio.sleep_forever()

    async with TestBus(bus, raise_errors=False) as tb:
        with anyio.fail_after(WAIT):
            await tb.publish(OrderPlaced(order_id="A1", amount=5))
            await tb.publish(OrderPlaced(order_id="A2", amount=500))

        letters = sorted(tb.dead_letters, key=lambda letter: letter.subscription)
        assert [(letter.subscription, letter.record.seq, letter.attempts) for letter in letters] == [
            ("payments", 4, 3),
            ("slow", 4, 1),
        ]
        assert letters[0].error_type.endswith("CardDeclined")
        assert letters[1].error_type == f"{HandlerTimeout.__module__}.HandlerTimeout"
        assert [letter.id for letter in await bus.dead_letters.list()] == [letter.id for letter in tb.dead_letters]

        purged = await bus.dead_letters.purge([letters[1].id])
        assert purged == 1
        assert [letter.subscription for letter in tb.dead_letters] == ["payments"]


async def test_dead_letters_redriven_away_leave_the_list() -> None:
    bus = EventBus()
    broken = True

    @bus.subscribe(name="flaky")
    async def flaky(event: OrderPlaced) -> None:
        if broken:
            raise CardDeclined(event.order_id)

    async with TestBus(bus, raise_errors=False) as tb:
        await tb.publish(OrderPlaced(order_id="A1", amount=5))
        assert len(tb.dead_letters) == 1
        broken = False
        assert await bus.dead_letters.redrive() == 1
        assert tb.dead_letters == []


# -- the run -----------------------------------------------------------------------


async def test_the_test_mode_ends_with_the_run() -> None:
    production_sleep = retry_sleep.get()
    async with TestBus(EventBus()):
        assert retry_sleep.get() is not production_sleep
        assert failure_observer.get() is not None
    assert retry_sleep.get() is production_sleep is anyio.sleep
    assert failure_observer.get() is None

    async with TestBus(EventBus(), raise_errors=False):
        assert failure_observer.get() is None


async def test_a_bus_that_fails_to_start_gets_its_store_back() -> None:
    class Broken(Plugin):
        async def start(self, bus: EventBus) -> None:
            raise RuntimeError("plugin down")

    bus = EventBus(plugins=[Broken()])
    app_store = bus.store
    with pytest.raises(RuntimeError, match="plugin down"):
        async with TestBus(bus):
            pass
    assert bus.store is app_store
    assert retry_sleep.get() is anyio.sleep
    assert failure_observer.get() is None


async def test_a_testbus_runs_once() -> None:
    tb = TestBus(EventBus())
    async with tb:
        with pytest.raises(RuntimeError, match="a TestBus runs once"):
            await tb.__aenter__()
    with pytest.raises(RuntimeError, match="create one per run"):
        await tb.__aenter__()


async def test_a_bus_already_running_is_refused() -> None:
    async with EventBus() as bus:
        app_store = bus.store
        with pytest.raises(RuntimeError, match="TestBus needs a bus that is not running yet"):
            await TestBus(bus).__aenter__()
        assert bus.store is app_store


def test_testbus_needs_an_eventbus() -> None:
    with pytest.raises(TypeError, match="TestBus needs an EventBus, got str"):
        TestBus("sqlite:///events.db")


def test_pytest_does_not_collect_it() -> None:
    assert TestBus.__test__ is False


@pytest.fixture
async def shop() -> AsyncIterator[TestBus]:
    async with TestBus(_shop_bus(decline_over=10)) as tb:
        yield tb


async def test_a_fixture_can_run_the_bus(shop: TestBus) -> None:
    await shop.publish(OrderPlaced(order_id="A1", amount=5))
    shop.assert_published(ReceiptSent, order_id="A1")
    with pytest.raises(CardDeclined):
        await shop.publish(OrderPlaced(order_id="A2", amount=50))
    assert retry_sleep.get() is not anyio.sleep


def test_importing_eventbus_testing_does_not_need_pytest() -> None:
    code = (
        "import sys\n"
        "sys.modules['pytest'] = None\n"  # any `import pytest` now raises ImportError
        "from eventbus.testing import TestBus\n"
        "import eventbus.testing\n"
        "assert 'eventbus.testing.conformance' not in sys.modules\n"
        "print(TestBus.__name__, eventbus.testing.__all__)\n"
    )
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "TestBus ['Collector', 'RunDeadLetters', 'TestBus']"


# -- expecting what comes later, counting, and what must not come ----------------------


async def test_expect_waits_for_an_event_a_handler_publishes_later() -> None:
    gate = anyio.Event()
    bus = EventBus()

    @bus.subscribe(name="slow-payments")
    async def capture(event: OrderPlaced) -> None:
        await gate.wait()
        await bus.publish(PaymentCaptured(order_id=event.order_id, amount=event.amount))

    async with TestBus(bus) as tb:
        await bus.publish(OrderPlaced(order_id="A1", amount=5))

        async def open_the_gate() -> None:
            gate.set()

        async with anyio.create_task_group() as group:
            group.start_soon(open_the_gate)  # runs only once expect is waiting
            paid = await tb.expect(PaymentCaptured, order_id="A1", where=lambda event: event.amount == 5, timeout=WAIT)
        assert paid == PaymentCaptured(order_id="A1", amount=5)
        assert await tb.expect(OrderPlaced, timeout=0) == OrderPlaced(order_id="A1", amount=5)  # already there


async def test_expect_that_times_out_lists_what_was_published() -> None:
    async with TestBus(SHOP) as tb:
        await tb.publish(OrderPlaced(order_id="A1", amount=5))
        with pytest.raises(AssertionError, match=r"PaymentCaptured\(order_id='B2'\) was not published within 0.05s"):
            await tb.expect(PaymentCaptured, order_id="B2", timeout=0.05)
        with pytest.raises(ValueError, match="no field"):
            await tb.expect(PaymentCaptured, colour="red", timeout=0.05)


async def test_assert_published_counts_and_assert_not_published_names_the_seqs() -> None:
    async with TestBus(SHOP) as tb:
        for order_id in ("A1", "A2", "A1"):
            await tb.publish(OrderPlaced(order_id=order_id, amount=5))
        assert tb.assert_published(ReceiptSent, times=2, order_id="A1") == ReceiptSent(order_id="A1")
        with pytest.raises(AssertionError, match=r"published 2 time\(s\), not 1"):
            tb.assert_published(ReceiptSent, times=1, order_id="A1")
        with pytest.raises(ValueError, match="assert_not_published"):
            tb.assert_published(ReceiptSent, times=0)
        tb.assert_not_published(ReceiptSent, order_id="B9")
        tb.assert_not_published(PaymentCaptured, where=lambda event: event.amount > 100)
        with pytest.raises(AssertionError, match=r"at seq\(s\) \[3, 9\]"):
            tb.assert_not_published(ReceiptSent, order_id="A1")


async def test_dead_letters_answer_what_the_bus_dead_letters_answer() -> None:
    async with TestBus(_shop_bus(decline_over=10), raise_errors=False) as tb:
        await tb.publish(OrderPlaced(order_id="A9", amount=50))
        [letter] = tb.dead_letters
        assert [stored.id for stored in await tb.dead_letters.list("payments")] == [letter.id]
        assert await tb.dead_letters.purge([letter.id]) == 1
        assert tb.dead_letters == []
        assert await tb.bus.dead_letters.list() == []


async def test_a_collector_keeps_what_it_is_given_and_waits_for_a_count() -> None:
    seen = Collector(timeout=5)
    bus = EventBus()
    bus.subscribe(OrderPlaced, seen, name="seen")
    async with bus:
        with pytest.raises(TimeoutError):
            await seen.wait_for(1, timeout=0.01)  # nothing published yet
        await bus.publish(OrderPlaced(order_id="A1", amount=5))
        await seen.wait_for(1)
    assert [record.seq for record in seen.records] == [1]
    assert seen.events == [OrderPlaced(order_id="A1", amount=5)]
    assert repr(seen) == "<Collector of 1 records>"


async def test_calls_shows_what_each_handler_was_called_with() -> None:
    bus = _shop_bus(decline_over=50)
    async with TestBus(bus, raise_errors=False) as tb:
        await tb.publish(OrderPlaced(order_id="A1", amount=5))
        await tb.publish(OrderPlaced(order_id="A2", amount=500))  # declined, three attempts: one call
        assert tb.calls["payments"] == [OrderPlaced(order_id="A1", amount=5), OrderPlaced(order_id="A2", amount=500)]
        assert tb.calls["receipts"] == [PaymentCaptured(order_id="A1", amount=5)]
        await tb.dead_letters.redrive()  # a redrive calls the handler again
        assert tb.calls["payments"][-1] == OrderPlaced(order_id="A2", amount=500)
        assert len(tb.calls["payments"]) == 3
    assert bus.middleware == ()  # the run's recording step is gone with the run


async def test_calls_lists_a_subscription_never_called() -> None:
    async with TestBus(_shop_bus()) as tb:
        assert dict(tb.calls) == {"payments": [], "receipts": []}
