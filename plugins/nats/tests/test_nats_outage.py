"""NATS goes away mid-run. The connection is cut (through a TCP proxy): local
publishing goes on, once the connection is back every event is forwarded, in
order, and a bus stopped meanwhile does not wait out its shutdown_timeout. The
stream or the consumer is deleted: the bridge creates it again, and the events
published meanwhile arrive."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

import anyio
from eventbus_nats import STOP_TIMEOUT, NatsBridge, subject_of
from nats.js.client import JetStreamContext
from nats_events import Note, OrderPlaced
from nats_helpers import NATS_URL, jetstream, stream_messages, watching_logs
from nats_proxy import Proxy, proxy

from eventbus import Event, EventBus, Record

BEFORE, DURING, AFTER = 100, 300, 100
"""Events published before the cut, during it, and after the connection is back."""
WAIT = 15.0  # seconds any one wait for the other side may take before the test fails
SERVER_PORT = urlsplit(NATS_URL).port or 4222
FORWARDING_ENDS = (
    "NATS cannot be reached while the bus stops: forwarding ends here; "
    "the events not yet forwarded stay in the local store and go out after the next start"
)


class Arrivals:
    """The texts of the `Note` events a bus handles, and a wait for each one."""

    def __init__(self, bus: EventBus) -> None:
        self.texts: list[str] = []
        self._waits: dict[str, anyio.Event] = {}
        bus.subscribe(Note, self._keep, name="arrivals")

    def _keep(self, event: Note, record: Record) -> None:
        self.texts.append(event.text)
        self._waits.setdefault(event.text, anyio.Event()).set()

    async def wait_for(self, text: str) -> None:
        """Return once a note with ``text`` has arrived (the test fails after `WAIT` seconds)."""
        with anyio.fail_after(WAIT):
            await self._waits.setdefault(text, anyio.Event()).wait()


def _through(cuttable: Proxy, stream: str, publish_timeout: float, inbound: Sequence[type[Event]] = ()) -> NatsBridge:
    """A bridge forwarding `Note` events to ``stream`` through the ``cuttable``
    proxy, reconnecting soon after the proxy is restored."""
    return NatsBridge(
        f"nats://127.0.0.1:{cuttable.port}",
        stream=stream,
        service="notes",
        outbound=[Note],
        inbound=inbound,
        publish_timeout=publish_timeout,
        reconnect_time_wait=0.1,
    )


async def test_events_published_while_nats_is_unreachable_are_forwarded_in_order_once_it_is_back(
    stream: str,
) -> None:
    with anyio.fail_after(20), watching_logs() as logs:
        retried = logs.seen("forwarding to NATS failed, retrying")
        async with proxy(SERVER_PORT) as cuttable:
            bridge = _through(cuttable, stream, publish_timeout=0.2)
            bus = EventBus(plugins=[bridge])
            async with bus:
                for n in range(BEFORE):
                    await bus.publish(Note(text=str(n)))
                await bus.drain()
                forwarding = bus.subscriptions[bridge.forwarding_name]

                await cuttable.cut()
                seqs = [await bus.publish(Note(text=str(n))) for n in range(BEFORE, BEFORE + DURING)]
                assert seqs[-1] == BEFORE + DURING  # stored locally while NATS is out of reach
                await retried.wait()  # the bridge tried to forward seq BEFORE + 1, and failed
                assert forwarding.stats().position == BEFORE

                await cuttable.restore()
                await cuttable.connected()  # the bridge lost its connection, and has made a new one
                for n in range(BEFORE + DURING, BEFORE + DURING + AFTER):
                    await bus.publish(Note(text=str(n)))
                await bus.drain()
                published = [str(record.event_id) async for record in bus.replay(Note)]

    forwarded = [headers["Nats-Msg-Id"] for _, headers in await stream_messages(stream)]
    assert forwarded == published  # every event once, in the order it was published


async def test_a_cut_while_many_events_are_in_flight_leaves_the_stream_in_order_with_each_once(stream: str) -> None:
    streamed, after = 3_000, 100
    with anyio.fail_after(60), watching_logs() as logs:
        retried = logs.seen("forwarding to NATS failed, retrying")
        async with proxy(SERVER_PORT) as cuttable:
            bridge = _through(cuttable, stream, publish_timeout=0.5)
            bus = EventBus(plugins=[bridge])
            async with bus:
                await bus.publish_many(Note(text=str(n)) for n in range(streamed))
                await cuttable.cut()  # wherever the forwarding is: rounds in flight, acknowledgements on their way
                await bus.publish_many(Note(text=str(n)) for n in range(streamed, streamed + after))
                await retried.wait()
                await cuttable.restore()
                await bus.drain()
                published = [str(record.event_id) async for record in bus.replay(Note)]
                position = bus.subscriptions[bridge.forwarding_name].stats().position

    assert position == streamed + after
    forwarded = [headers["Nats-Msg-Id"] for _, headers in await stream_messages(stream)]
    assert forwarded == published  # every event once, in the order it was published


async def test_a_bus_stopped_while_nats_is_unreachable_waits_for_the_bridge_not_for_shutdown_timeout(
    stream: str,
) -> None:
    publish_timeout = 0.5
    with anyio.fail_after(30), watching_logs() as logs:
        retried = logs.seen("forwarding to NATS failed, retrying")
        async with proxy(SERVER_PORT) as cuttable:
            bridge = _through(cuttable, stream, publish_timeout, inbound=[OrderPlaced])  # the inbound side runs too
            bus = EventBus(plugins=[bridge], shutdown_timeout=60)
            async with bus:
                await bus.publish(Note(text="sent"))
                await bus.drain()
                await cuttable.cut()
                await bus.publish(Note(text="kept"))
                await retried.wait()  # the bridge is retrying "kept"
                stopping = anyio.current_time()
            took = anyio.current_time() - stopping
            assert took < publish_timeout + STOP_TIMEOUT

            # "kept" waited in the local store, and goes out with the next start
            await cuttable.restore()
            async with bus:
                await bus.drain()
                published = [str(record.event_id) async for record in bus.replay(Note)]

    assert len(logs.named(FORWARDING_ENDS)) == 1
    assert len(published) == 2
    assert [headers["Nats-Msg-Id"] for _, headers in await stream_messages(stream)] == published


async def test_a_stream_deleted_while_services_run_is_created_again_and_what_is_published_then_arrives(
    stream: str,
) -> None:
    shop = EventBus(plugins=[NatsBridge(NATS_URL, stream=stream, service="shop", outbound=[Note])])
    audit = EventBus(plugins=[NatsBridge(NATS_URL, stream=stream, service="audit", inbound=[Note])])
    arrivals = Arrivals(audit)

    async def delete(js: JetStreamContext) -> None:
        await js.delete_stream(stream)

    async with shop, audit:
        await shop.publish(Note(text="before"))
        await arrivals.wait_for("before")
        await jetstream(delete)
        await shop.publish(Note(text="after"))
        await arrivals.wait_for("after")
        with anyio.fail_after(WAIT):
            await shop.drain()
            await audit.drain()

    assert arrivals.texts == ["before", "after"]
    # the new stream has the bridge's subjects, and holds what was published after the deletion
    assert [subject for subject, _ in await stream_messages(stream)] == [subject_of(stream, Note.__event_type__)]


async def test_a_consumer_deleted_while_its_service_runs_is_created_again_and_goes_on(stream: str) -> None:
    shop = EventBus(plugins=[NatsBridge(NATS_URL, stream=stream, service="shop", outbound=[Note])])
    audit = EventBus(plugins=[NatsBridge(NATS_URL, stream=stream, service="audit", inbound=[Note])])
    arrivals = Arrivals(audit)

    async def delete(js: JetStreamContext) -> None:
        await js.delete_consumer(stream, "audit")

    async with shop, audit:
        await shop.publish(Note(text="before"))
        await arrivals.wait_for("before")
        await jetstream(delete)
        await shop.publish(Note(text="after"))
        await arrivals.wait_for("after")

    assert arrivals.texts == ["before", "after"]
