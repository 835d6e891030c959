"""The bridge between two buses in one process, against the real NATS server:
what an event keeps across it, what becomes a dead letter, and its set-up."""

from __future__ import annotations

import json
from importlib.metadata import entry_points

import anyio
import pytest
from eventbus_nats import NatsBridge, PayloadTooLarge, subject_of
from nats.js.client import JetStreamContext
from nats_events import Note, OrderPlaced
from nats_helpers import NATS_URL, consumer_state, jetstream, publish_raw, stream_messages

from eventbus import Event, EventBus, PluginError, Record
from eventbus.bus import ORIGIN_HEADER

WAIT = 15.0  # seconds any one wait for the other side may take before the test fails


async def test_an_event_keeps_its_ids_headers_and_depth_and_gains_its_origin(stream: str) -> None:
    shop = EventBus(plugins=[NatsBridge(NATS_URL, stream=stream, service="shop", outbound=[OrderPlaced, Note])])
    # the audit service sends OrderPlaced too, and must not send back those it took in
    audit_bridge = NatsBridge(
        NATS_URL, stream=stream, service="audit", outbound=[OrderPlaced], inbound=[OrderPlaced, Note]
    )
    audit = EventBus(plugins=[audit_bridge])
    received: list[Record] = []
    both = anyio.Event()

    @shop.subscribe
    async def note_it(event: OrderPlaced) -> None:
        await shop.publish(Note(text=f"placed {event.order_id}"), headers={"step": "2"})

    @audit.subscribe(OrderPlaced | Note)
    def keep(event: Event, record: Record) -> None:
        received.append(record)
        if len(received) == 2:
            both.set()

    async with shop, audit:
        await shop.publish(OrderPlaced(order_id="A1"), headers={"tenant": "ácme", "trace": " spaced "})
        with anyio.fail_after(WAIT):
            await both.wait()
            await shop.drain()
            await audit.drain()
        sent = [record async for record in shop.replay()]

    by_id = {record.event_id: record for record in received}
    assert sorted(map(str, by_id)) == sorted(str(record.event_id) for record in sent)
    for original in sent:
        copy = by_id[original.event_id]
        assert copy.event == original.event
        assert (copy.correlation_id, copy.causation_id, copy.depth) == (
            original.correlation_id,
            original.causation_id,
            original.depth,
        )
        assert dict(copy.headers) == {**original.headers, ORIGIN_HEADER: "shop"}
    assert sent[1].causation_id == sent[0].event_id
    assert sent[1].depth == 1
    # what audit took in stayed in audit: the stream holds shop's two messages only
    messages = await stream_messages(stream)
    assert [(subject, headers["Nats-Msg-Id"]) for subject, headers in messages] == [
        (subject_of(stream, record.type), str(record.event_id)) for record in sent
    ]


async def test_messages_that_do_not_decode_or_are_too_big_become_dead_letters_and_the_bridge_goes_on(
    stream: str,
) -> None:
    bridge = NatsBridge(NATS_URL, stream=stream, service="billing", inbound=[OrderPlaced], max_payload=500)
    bus = EventBus(plugins=[bridge])
    taken: list[str] = []
    good_one = anyio.Event()

    @bus.subscribe
    def take(event: OrderPlaced) -> None:
        taken.append(event.order_id)
        good_one.set()

    subject = subject_of(stream, OrderPlaced.__event_type__)

    def headers(event_id: str, **more: str) -> dict[str, str]:
        return {
            "ce-specversion": "1.0",
            "ce-id": event_id,
            "ce-source": "shop",
            "ce-type": OrderPlaced.__event_type__,
            "ce-eventbusversion": "1",
            **more,
        }

    bad = {
        "00000000-0000-0000-0000-000000000001": (b"{not json", headers("00000000-0000-0000-0000-000000000001")),
        "00000000-0000-0000-0000-000000000002": (b'{"amount": 3}', headers("00000000-0000-0000-0000-000000000002")),
        "00000000-0000-0000-0000-000000000003": (
            b'{"order_id": "X"}',
            headers("00000000-0000-0000-0000-000000000003", **{"ce-eventbusversion": "7"}),
        ),
        "00000000-0000-0000-0000-000000000004": (
            json.dumps({"order_id": "x" * 600}).encode(),
            headers("00000000-0000-0000-0000-000000000004"),
        ),
        "00000000-0000-0000-0000-000000000005": (
            b'{"order_id": "Y"}',
            headers("00000000-0000-0000-0000-000000000005", **{"ce-eventbusdepth": "deep"}),
        ),
    }
    async with bus:
        for payload, message_headers in bad.values():
            await publish_raw(subject, payload, message_headers)
        await publish_raw(subject, b'{"order_id": "no headers"}')  # not a CloudEvent
        await publish_raw(subject, b'{"order_id": "A1"}', headers("00000000-0000-0000-0000-0000000000a1"))
        with anyio.fail_after(WAIT):
            await good_one.wait()
        letters = await bus.dead_letters.list(bridge.inbound_letters_name)

    assert taken == ["A1"]
    kinds = {str(letter.record.event_id): letter.error_type.rsplit(".", 1)[-1] for letter in letters}
    assert kinds == {
        "00000000-0000-0000-0000-000000000001": "EventDecodeError",
        "00000000-0000-0000-0000-000000000002": "EventDecodeError",
        "00000000-0000-0000-0000-000000000003": "EventDecodeError",  # a version nobody registered
        "00000000-0000-0000-0000-000000000004": "PayloadTooLarge",
        "00000000-0000-0000-0000-000000000005": "BadHeader",
        "00000000-0000-0000-0000-000000000000": "BadHeader",
    }
    too_big = next(letter for letter in letters if letter.error_type.endswith("PayloadTooLarge"))
    assert "max_payload of 500" in too_big.error_message
    assert too_big.record.data == json.dumps({"order_id": "x" * 600})  # kept whole, for whoever reads it
    assert all(letter.record.headers["Nats-Subject"] == subject for letter in letters)
    state = await consumer_state(stream, "billing")
    assert (state.pending, state.ack_pending, state.deliveries) == (0, 0, 7)  # each acknowledged at once


async def test_an_outbound_event_over_max_payload_becomes_a_dead_letter_and_the_next_goes_out(stream: str) -> None:
    bridge = NatsBridge(NATS_URL, stream=stream, service="notes", outbound=[Note], max_payload=200)
    bus = EventBus(plugins=[bridge])

    async with bus:
        big = await bus.publish(Note(text="x" * 300))
        small = await bus.publish(Note(text="short"))
        with anyio.fail_after(WAIT):
            await bus.drain()
        letters = await bus.dead_letters.list(bridge.forwarding_name)
        stats = bus.stats().subscriptions[bridge.forwarding_name]

    assert [(letter.record.seq, letter.error_type) for letter in letters] == [
        (big, f"{PayloadTooLarge.__module__}.PayloadTooLarge")
    ]
    assert "more than the NATS bridge's max_payload of 200" in letters[0].error_message
    assert (stats.delivered, stats.dead_lettered, stats.position) == (1, 1, small)
    assert [subject for subject, _ in await stream_messages(stream)] == [subject_of(stream, Note.__event_type__)]


async def test_a_bus_runs_its_bridge_again_after_it_stopped(stream: str) -> None:
    bus = EventBus(plugins=[NatsBridge(NATS_URL, stream=stream, service="notes", outbound=[Note])])
    for run in range(2):
        async with bus:
            await bus.publish(Note(text=f"run {run}"))
            with anyio.fail_after(WAIT):
                await bus.drain()
    assert len(await stream_messages(stream)) == 2


async def test_an_existing_stream_gets_the_bridge_subjects_added(stream: str) -> None:
    async def create(js: JetStreamContext) -> None:
        await js.add_stream(name=stream, subjects=[f"legacy_{stream}.>"])

    await jetstream(create)
    async with EventBus(plugins=[NatsBridge(NATS_URL, stream=stream, service="notes", outbound=[Note])]):
        pass

    async def subjects(js: JetStreamContext) -> list[str]:
        return list((await js.stream_info(stream)).config.subjects or [])

    assert await jetstream(subjects) == [f"legacy_{stream}.>", f"{stream}.>"]


async def test_an_unreachable_server_fails_the_start_with_plugin_error(stream: str) -> None:
    with anyio.fail_after(WAIT):
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        await listener.aclose()  # a port nobody listens on
        # a bridge keeps trying for START_TIMEOUT unless told to give up sooner
        bridge = NatsBridge(
            f"nats://127.0.0.1:{port}", stream=stream, service="x", max_reconnect_attempts=1, reconnect_time_wait=0.1
        )
        bus = EventBus(plugins=[bridge])
        with pytest.raises(PluginError, match=f"service 'x' could not set up stream '{stream}'"):
            async with bus:
                pass
    assert not bus.running


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"stream": "a.b"}, ValueError, "stream must be a non-empty string"),
        ({"stream": ""}, ValueError, "stream must be"),
        ({"service": "billing service"}, ValueError, "service must be"),
        ({"inbound": [Event]}, ValueError, "not Event itself"),
        ({"outbound": [str]}, TypeError, "outbound= takes Event classes"),
        ({"max_payload": 0}, ValueError, "max_payload must be an int >= 1"),
        ({"ack_wait": -1}, ValueError, "ack_wait must be a positive number"),
        ({"max_deliver": 0}, ValueError, "max_deliver must be an int >= 1"),
    ],
)
def test_bad_options_are_refused_naming_them(options: dict[str, object], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        NatsBridge(**{"service": "billing", **options})  # type: ignore[arg-type]


def test_the_bridge_is_registered_as_the_nats_plugin() -> None:
    (entry_point,) = [ep for ep in entry_points(group="eventbus.plugins") if ep.name == "nats"]
    assert entry_point.load() is NatsBridge
