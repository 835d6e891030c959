"""CloudEvents 1.0 on the bridge, against the real NATS server: what a bridge
sends is a CloudEvent in the binary content mode, and a bus takes in the
CloudEvents of other producers (binary and structured mode), refusing, as
dead letters, those that lack a required attribute, while the rest go on."""

from __future__ import annotations

import json
from datetime import datetime
from uuid import UUID, uuid4, uuid5

import anyio
from eventbus_nats import CE_ID_NAMESPACE, BadHeader, NatsBridge, subject_of
from eventbus_nats._wire import outgoing
from nats_events import OrderPlaced, PaymentCaptured
from nats_helpers import NATS_URL, consumer_state, publish_raw, stream_messages

from eventbus import EventBus, Record
from eventbus.bus import ORIGIN_HEADER
from eventbus.testing.conformance import new_record

WAIT = 15.0  # seconds any one wait for the other side may take before the test fails


def receiving(bus: EventBus, count: int) -> tuple[list[Record], anyio.Event]:
    """The `OrderPlaced` records ``bus`` handles, and an event set once there are ``count``."""
    received: list[Record] = []
    enough = anyio.Event()

    @bus.subscribe(name="take")
    def take(event: OrderPlaced, record: Record) -> None:
        received.append(record)
        if len(received) == count:
            enough.set()

    return received, enough


async def test_a_bridge_sends_cloudevents_in_binary_mode_and_another_bus_takes_them_in(stream: str) -> None:
    source = "https://shop.example.com/orders"
    shop = EventBus(
        plugins=[NatsBridge(NATS_URL, stream=stream, service="shop", source=source, outbound=[OrderPlaced])]
    )
    billing = EventBus(plugins=[NatsBridge(NATS_URL, stream=stream, service="billing", inbound=[OrderPlaced])])
    received, both = receiving(billing, 2)

    async with shop, billing:
        await shop.publish(OrderPlaced(order_id="A1"), headers={"tenant": "ácme"})
        await shop.publish(OrderPlaced(order_id="A2"))
        with anyio.fail_after(WAIT):
            await both.wait()
        sent = [record async for record in shop.replay()]

    messages = await stream_messages(stream)
    assert len(messages) == 2
    for (subject, headers), record in zip(messages, sent, strict=True):
        assert subject == subject_of(stream, OrderPlaced.__event_type__)
        assert headers["ce-specversion"] == "1.0"
        assert headers["ce-id"] == headers["Nats-Msg-Id"] == str(record.event_id)
        assert headers["ce-source"] == source
        assert headers["ce-type"] == OrderPlaced.__event_type__
        assert datetime.fromisoformat(headers["ce-time"]) == record.recorded_at
        assert headers["content-type"] == "application/json"
        assert "ce-correlationid" not in headers  # a root event's correlation id is its own id
        assert headers["ce-eventbusversion"] == "1"
    assert json.loads(messages[0][1]["ce-eventbusheaders"]) == {"tenant": "ácme"}
    assert "ce-eventbusheaders" not in messages[1][1]
    assert [(copy.event_id, copy.event) for copy in received] == [(record.event_id, record.event) for record in sent]
    assert dict(received[0].headers) == {"tenant": "ácme", ORIGIN_HEADER: source}
    assert dict(received[1].headers) == {ORIGIN_HEADER: source}


async def test_a_bus_takes_in_the_cloudevents_of_another_producer_once_each(stream: str) -> None:
    bus = EventBus(plugins=[NatsBridge(NATS_URL, stream=stream, service="billing", inbound=[OrderPlaced])])
    received, three = receiving(bus, 3)
    subject = subject_of(stream, OrderPlaced.__event_type__)
    binary = {
        "Ce-Specversion": "1.0",  # header names in any case
        "Ce-Id": "order-17",  # any string, not a UUID
        "Ce-Source": "/legacy/shop",
        "Ce-Type": OrderPlaced.__event_type__,
        "Ce-Time": "2026-01-02T03:04:05Z",
        "Ce-Subject": "orders/17",
        "Ce-Partitionkey": "eu",
        "Content-Type": "application/json; charset=utf-8",
    }
    with_uuid = {**binary, "Ce-Id": "6c3e1e44-5f1a-4b0e-9d8e-8f7b5a3c2d10"}
    structured = {
        "specversion": "1.0",
        "id": "order-18",
        "source": "/legacy/shop",
        "type": OrderPlaced.__event_type__,
        "datacontenttype": "application/json",
        "correlationid": "0e8e8b63-3f7e-4c38-b1c4-0c3f0f0b9a51",
        "data": {"order_id": "A18"},
    }

    async with bus:
        await publish_raw(subject, b'{"order_id": "A17"}', binary)
        await publish_raw(subject, b'{"order_id": "A17"}', binary)  # the producer sent it twice: ingested once
        await publish_raw(subject, b'{"order_id": "U1"}', with_uuid)
        await publish_raw(
            subject, json.dumps(structured).encode(), {"content-type": "application/cloudevents+json; charset=utf-8"}
        )
        with anyio.fail_after(WAIT):
            await three.wait()
            await bus.drain()
        stored = [record async for record in bus.replay()]
        letters = await bus.dead_letters.list()

    assert letters == []
    assert [record.event for record in stored] == [
        OrderPlaced(order_id="A17"),
        OrderPlaced(order_id="U1"),
        OrderPlaced(order_id="A18"),
    ]
    first, second, third = received
    assert first.event_id == uuid5(CE_ID_NAMESPACE, "/legacy/shop\norder-17")
    assert dict(first.headers) == {
        "ce-id": "order-17",
        "ce-subject": "orders/17",
        "ce-partitionkey": "eu",
        ORIGIN_HEADER: "/legacy/shop",
    }
    assert second.event_id == UUID("6c3e1e44-5f1a-4b0e-9d8e-8f7b5a3c2d10")
    assert "ce-id" not in second.headers
    assert third.event_id == uuid5(CE_ID_NAMESPACE, "/legacy/shop\norder-18")
    assert third.correlation_id == UUID("0e8e8b63-3f7e-4c38-b1c4-0c3f0f0b9a51")
    state = await consumer_state(stream, "billing")
    assert (state.pending, state.ack_pending) == (0, 0)


async def test_cloudevents_without_their_required_attributes_become_dead_letters_and_the_rest_arrive(
    stream: str,
) -> None:
    bridge = NatsBridge(NATS_URL, stream=stream, service="billing", inbound=[OrderPlaced])
    bus = EventBus(plugins=[bridge])
    received, good = receiving(bus, 1)
    subject = subject_of(stream, OrderPlaced.__event_type__)
    complete = {
        "ce-specversion": "1.0",
        "ce-id": "good",
        "ce-source": "/shop",
        "ce-type": OrderPlaced.__event_type__,
    }
    missing = ["ce-specversion", "ce-id", "ce-source", "ce-type"]
    wrong = {
        "ce-type": PaymentCaptured.__event_type__,
        "content-type": "application/xml",
    }

    async with bus:
        for name in missing:
            without = {key: value for key, value in {**complete, "ce-id": f"missing {name}"}.items() if key != name}
            await publish_raw(subject, b'{"order_id": "X"}', without)
        for name, value in wrong.items():
            await publish_raw(subject, b'{"order_id": "X"}', {**complete, "ce-id": f"wrong {name}", name: value})
        await publish_raw(subject, b'{"order_id": "X"}', {"content-type": "application/cloudevents+json"})
        await publish_raw(subject, b'{"order_id": "A1"}', complete)
        with anyio.fail_after(WAIT):
            await good.wait()
        letters = await bus.dead_letters.list(bridge.inbound_letters_name)

    assert [record.event for record in received] == [OrderPlaced(order_id="A1")]
    by_seq = {int(letter.record.headers["Nats-Stream-Seq"]): letter for letter in letters}
    assert sorted(by_seq) == list(range(1, len(missing) + len(wrong) + 2))
    assert all(letter.error_type == f"{BadHeader.__module__}.BadHeader" for letter in letters)
    messages = [by_seq[seq].error_message for seq in sorted(by_seq)]
    for message, name in zip(messages, missing, strict=False):
        assert message.startswith(f"the message has no {name} header"), message
    assert messages[4].startswith(f"the message's ce-type header is {PaymentCaptured.__event_type__!r}; expected")
    assert "the type of the subject it came on" in messages[4]
    assert messages[5].startswith("the message's content-type header is 'application/xml'")
    assert messages[6].startswith("the message has no ce-specversion header")  # an empty structured envelope
    state = await consumer_state(stream, "billing")
    assert (state.pending, state.ack_pending) == (0, 0)


def test_the_ids_go_out_as_their_text_whether_the_record_holds_ints_or_uuids() -> None:
    event_id, cause, other = uuid4(), uuid4(), uuid4()
    for held_id in (event_id, event_id.int):  # a record this process made holds ints, one read back UUIDs
        root = new_record(OrderPlaced(order_id="A1"), event_id=held_id)
        headers = outgoing(root, "s.orders", "shop").headers
        assert headers["ce-id"] == headers["Nats-Msg-Id"] == str(event_id)
        assert "ce-correlationid" not in headers
        assert "ce-causationid" not in headers
        # a correlation id stored although it is the event's own goes out as the root's does: not at all
        same = new_record(OrderPlaced(order_id="A1"), event_id=held_id, correlation_id=event_id)
        assert "ce-correlationid" not in outgoing(same, "s.orders", "shop").headers
        child = new_record(OrderPlaced(order_id="A1"), event_id=held_id, correlation_id=other, causation_id=cause)
        headers = outgoing(child, "s.orders", "shop").headers
        assert (headers["ce-correlationid"], headers["ce-causationid"]) == (str(other), str(cause))
    for edge in (UUID(int=0), UUID(int=2**128 - 1)):
        assert outgoing(new_record(OrderPlaced(order_id="A1"), event_id=edge.int), "s", "shop").headers["ce-id"] == str(
            edge
        )
