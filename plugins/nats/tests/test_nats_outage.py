"""The connection to NATS is cut mid-run (through a TCP proxy): local publishing
goes on, and once the connection is back every event is forwarded, in order."""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import anyio
import structlog
from eventbus_nats import NatsBridge
from nats_events import Note
from nats_helpers import NATS_URL, stream_messages
from nats_proxy import proxy

from eventbus import EventBus

BEFORE, DURING, AFTER = 100, 300, 100
"""Events published before the cut, during it, and after the connection is back."""


@contextmanager
def forwarding_retried() -> Iterator[anyio.Event]:
    """An event set when the bridge logs that a forward failed and is tried again
    (the application's structlog configuration is put back afterwards)."""
    retried = anyio.Event()
    saved = structlog.get_config()

    def watch(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        if event_dict.get("event") == "forwarding to NATS failed, retrying":
            retried.set()
        raise structlog.DropEvent

    structlog.configure(processors=[watch])
    try:
        yield retried
    finally:
        structlog.configure(**saved)


async def test_events_published_while_nats_is_unreachable_are_forwarded_in_order_once_it_is_back(
    stream: str,
) -> None:
    server_port = urlsplit(NATS_URL).port or 4222
    with anyio.fail_after(20), forwarding_retried() as retried:
        async with proxy(server_port) as cuttable:
            bridge = NatsBridge(
                f"nats://127.0.0.1:{cuttable.port}",
                stream=stream,
                service="notes",
                outbound=[Note],
                publish_timeout=0.2,
                reconnect_time_wait=0.1,
            )
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
