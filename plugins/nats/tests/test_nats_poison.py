"""Inbound messages that cannot be ingested, sent with nats-py straight to the
stream of the real NATS server: each ends as a dead letter on its first
delivery, or, when the store fails, is delivered again a bounded number of
times and then dead-lettered or terminated with one error line. None comes
back without bound, and the messages after it still arrive."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import anyio
from eventbus_nats import INT_HEADER_MAX, REDELIVERY_DELAY, BadHeader, NatsBridge, subject_of
from eventbus_sqlite import SqliteStore
from nats_events import OrderPlaced, PaymentCaptured
from nats_helpers import NATS_URL, consumer_state, publish_raw, watching_logs

from eventbus import DeadLetter, EventBus, MemoryStore, Record, StoreError

WAIT = 15.0  # seconds any one wait for the bridge may take before the test fails
GOOD_ID = "00000000-0000-0000-0000-0000000000a1"
BAD_ID = "00000000-0000-0000-0000-0000000000b1"
TERMINATED = (
    "a NATS message could not be stored, not even as a dead letter; terminated, JetStream will not deliver it again"
)
REDELIVERED = "a NATS message could not be stored; it and the rest of its batch come again"

MALFORMED: dict[str, tuple[str, str]] = {
    "a version of 5000 digits": ("ce-eventbusversion", "9" * 5000),
    "a depth of 5000 digits": ("ce-eventbusdepth", "9" * 5000),
    "a version past 63 bits": ("ce-eventbusversion", str(2**70)),
    "a version past the stores' integer columns": ("ce-eventbusversion", str(INT_HEADER_MAX + 1)),
    "a depth past 63 bits": ("ce-eventbusdepth", str(2**70)),
    "a version of 0": ("ce-eventbusversion", "0"),
    "a negative depth": ("ce-eventbusdepth", "-1"),
    "digits that are not ASCII": ("ce-eventbusversion", "\u0661"),
    "another CloudEvents version": ("ce-specversion", "0.3"),
    "a correlation id that is not a UUID": ("ce-correlationid", "x" * 5000),
    "a causation id that is not a UUID": ("ce-causationid", "not-a-uuid"),
    "headers nested 20 000 deep": ("ce-eventbusheaders", "[" * 20_000),
    "headers holding NUL": ("ce-eventbusheaders", '{"tenant": "a\\u0000b"}'),
    "headers that are not strings": ("ce-eventbusheaders", '{"n": 1}'),
    "the type of another subject": ("ce-type", PaymentCaptured.__event_type__),
    "a body that is not JSON": ("content-type", "text/plain"),
}
"""Each bad header and value, by what is wrong with it."""


def order_headers(event_id: str, **more: str) -> dict[str, str]:
    """The headers a bridge sends with an `OrderPlaced`, with ``more`` on top."""
    return {
        "Nats-Msg-Id": event_id,
        "ce-specversion": "1.0",
        "ce-id": event_id,
        "ce-source": "shop",
        "ce-type": OrderPlaced.__event_type__,
        **more,
    }


def taking_orders(bus: EventBus) -> anyio.Event:
    """An event set once ``bus`` has handled the `OrderPlaced` with the id `GOOD_ID`."""
    arrived = anyio.Event()

    @bus.subscribe(name="take")
    def take(event: OrderPlaced, record: Record) -> None:
        if str(record.event_id) == GOOD_ID:
            arrived.set()

    return arrived


class RefusingLetters(MemoryStore):
    """A real `MemoryStore` whose dead-letter table is full: every letter is refused."""

    async def add_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        raise StoreError("the dead-letter table is full")


class FailingAppends(MemoryStore):
    """A real `MemoryStore` whose first ``failures`` appends fail, like a database that is away."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def append(self, records: Sequence[Record]) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise StoreError("the database is away")
        await super().append(records)


async def test_a_message_with_a_malformed_header_becomes_a_dead_letter_on_its_first_delivery(
    stream: str, tmp_path: Path
) -> None:
    bridge = NatsBridge(NATS_URL, stream=stream, service="billing", inbound=[OrderPlaced])
    # SQLite: a version or depth that reached the store would not fit its integer column
    bus = EventBus(SqliteStore(tmp_path / "billing.db"), plugins=[bridge])
    arrived = taking_orders(bus)
    subject = subject_of(stream, OrderPlaced.__event_type__)

    with watching_logs() as logs:
        async with bus:
            for number, (header, value) in enumerate(MALFORMED.values(), start=1):
                event_id = f"00000000-0000-0000-0000-{number:012}"
                await publish_raw(subject, b'{"order_id": "X"}', order_headers(event_id, **{header: value}))
            await publish_raw(subject, b'{"order_id": "A1"}', order_headers(GOOD_ID))
            with anyio.fail_after(WAIT):
                await arrived.wait()
            letters = await bus.dead_letters.list(bridge.inbound_letters_name)

    by_seq = {int(letter.record.headers["Nats-Stream-Seq"]): letter for letter in letters}
    assert sorted(by_seq) == list(range(1, len(MALFORMED) + 1))
    for seq, (header, value) in enumerate(MALFORMED.values(), start=1):
        letter = by_seq[seq]
        assert letter.error_type == f"{BadHeader.__module__}.BadHeader"
        assert f"{header} header is {value[:64]!r}" in letter.error_message
        assert len(letter.error_message) < 300  # the value is quoted cut short
        assert letter.attempts == 1
    assert str(by_seq[1].record.event_id) == "00000000-0000-0000-0000-000000000001"
    assert by_seq[1].record.version == 0  # what did not parse is not kept in the record's own fields
    deep = list(MALFORMED).index("headers nested 20 000 deep") + 1
    assert by_seq[deep].record.headers["ce-eventbusheaders"] == "[" * 20_000  # the header is kept whole
    # each was delivered once and settled: nothing comes back, and nothing is left to come
    state = await consumer_state(stream, "billing")
    assert (state.deliveries, state.ack_pending, state.pending) == (len(MALFORMED) + 1, 0, 0)
    assert logs.named(REDELIVERED) == logs.named("could not store dead letter") == []


async def test_a_message_whose_dead_letter_cannot_be_stored_is_terminated_on_its_last_delivery(stream: str) -> None:
    bridge = NatsBridge(NATS_URL, stream=stream, service="billing", inbound=[OrderPlaced], max_deliver=2)
    bus = EventBus(RefusingLetters(), plugins=[bridge])
    arrived = taking_orders(bus)
    subject = subject_of(stream, OrderPlaced.__event_type__)

    with watching_logs() as logs:
        terminated = logs.seen(TERMINATED)
        async with bus:
            await publish_raw(
                subject, b'{"order_id": "X"}', order_headers(BAD_ID, **{"ce-eventbusversion": "9" * 5000})
            )
            with anyio.fail_after(WAIT):
                await terminated.wait()
            await publish_raw(subject, b'{"order_id": "A1"}', order_headers(GOOD_ID))
            with anyio.fail_after(WAIT):
                await arrived.wait()

    (line,) = logs.named(TERMINATED)
    assert line["level"] == "error"
    assert (line["stream_seq"], line["subject"], line["event_id"], line["deliveries"]) == (1, subject, BAD_ID, 2)
    assert "could not be stored" in line["problem"]
    (again,) = logs.named(REDELIVERED)  # its first delivery, handed back once
    assert (again["stream_seq"], again["delivery"], again["delay"]) == (1, 1, REDELIVERY_DELAY)
    assert len(logs.named("could not store dead letter")) == 2  # one try per delivery, no more
    # two deliveries of the bad message, one of the good one; the bad one is not pending any more
    state = await consumer_state(stream, "billing")
    assert (state.deliveries, state.ack_pending, state.pending) == (3, 0, 0)


async def test_a_message_the_store_fails_to_ingest_comes_again_and_is_ingested(stream: str) -> None:
    bridge = NatsBridge(NATS_URL, stream=stream, service="billing", inbound=[OrderPlaced], max_deliver=3)
    store = FailingAppends(failures=1)
    bus = EventBus(store, plugins=[bridge])
    arrived = taking_orders(bus)

    with watching_logs() as logs:
        async with bus:
            await publish_raw(
                subject_of(stream, OrderPlaced.__event_type__), b'{"order_id": "A1"}', order_headers(GOOD_ID)
            )
            with anyio.fail_after(WAIT):
                await arrived.wait()
            letters = await bus.dead_letters.list()

    assert letters == []
    (again,) = logs.named(REDELIVERED)
    assert again["event_id"] == GOOD_ID
    assert "the database is away" in again["problem"]
    state = await consumer_state(stream, "billing")
    assert (state.deliveries, state.ack_pending, state.pending) == (2, 0, 0)


async def test_a_message_the_store_keeps_failing_to_ingest_becomes_a_dead_letter_on_its_last_delivery(
    stream: str,
) -> None:
    bridge = NatsBridge(NATS_URL, stream=stream, service="billing", inbound=[OrderPlaced], max_deliver=2)
    bus = EventBus(FailingAppends(failures=2), plugins=[bridge])
    subject = subject_of(stream, OrderPlaced.__event_type__)
    arrived = taking_orders(bus)

    with watching_logs() as logs:
        buried = logs.seen("delivery failed, dead-lettered")
        async with bus:
            await publish_raw(subject, b'{"order_id": "X"}', order_headers(BAD_ID))
            with anyio.fail_after(WAIT):
                await buried.wait()
            await publish_raw(subject, b'{"order_id": "A1"}', order_headers(GOOD_ID))
            with anyio.fail_after(WAIT):
                await arrived.wait()
            (letter,) = await bus.dead_letters.list(bridge.inbound_letters_name)

    assert str(letter.record.event_id) == BAD_ID
    assert letter.error_type == f"{StoreError.__module__}.StoreError"
    assert "the database is away" in letter.error_message
    assert logs.named(TERMINATED) == []
    state = await consumer_state(stream, "billing")
    assert (state.deliveries, state.ack_pending, state.pending) == (3, 0, 0)
