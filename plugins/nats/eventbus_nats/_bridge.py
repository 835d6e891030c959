"""`NatsBridge`: a bus plugin that carries events between services over NATS JetStream."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import anyio

from eventbus import Event, EventBus, Plugin, PluginError, Subscription
from eventbus.asyncio_runner import Runner, start_runner
from eventbus.store.codec import storable_text

from ._inbound import DEFAULT_MAX_DELIVER, Receiver
from ._jetstream import JetStream
from ._outbound import PUBLISH_WINDOW, Forwarder
from ._subjects import check_name, stream_subjects, subject_of

__all__ = [
    "DEFAULT_ACK_WAIT",
    "DEFAULT_MAX_PAYLOAD",
    "DEFAULT_PUBLISH_TIMEOUT",
    "NatsBridge",
    "START_TIMEOUT",
    "STOP_TIMEOUT",
]

DEFAULT_MAX_PAYLOAD = 1_000_000
"""The largest event JSON, in bytes, a bridge sends or takes in by default
(NATS servers take 1 MiB per message by default, headers included)."""
DEFAULT_ACK_WAIT = 30.0
"""Seconds JetStream waits for a replica to acknowledge a message before it
delivers it again (to any replica of the service)."""
DEFAULT_PUBLISH_TIMEOUT = 2.0
"""Seconds one outbound publish waits for JetStream's acknowledgement before it is tried again."""
START_TIMEOUT = 10.0
"""Seconds `NatsBridge.start` may take to connect and set up the stream and
consumer before ``async with bus`` fails with `PluginError`."""
STOP_TIMEOUT = 5.0
"""Seconds a stopping bridge waits at most to flush its last answers to
JetStream and close the connection (with NATS gone, it gives up then)."""


class NatsBridge(Plugin):
    """Carries events between services through one NATS JetStream stream.

    ```python
    bus = EventBus(
        store="sqlite:///billing.db",
        plugins=[NatsBridge(service="billing", outbound=[PaymentCaptured], inbound=[OrderPlaced])],
    )
    ```

    Messages are CloudEvents 1.0 in the binary content mode (``ce-*``
    headers, the event's JSON as the body), so other CloudEvents producers
    and consumers can take part (see the guide's *CloudEvents* section).
    Outbound events (published on this bus, subclasses included) go to the
    stream under a subject derived from their type name, with their event
    id as ``Nats-Msg-Id`` and ``ce-id``; they stay in the local store until
    JetStream has acknowledged them, forwarded in seq order by a durable
    subscription, up to `PUBLISH_WINDOW` in flight at once. Inbound events
    come from the service's durable consumer, are appended to the local
    store with `EventBus.ingest_many`, one append per fetched batch (keeping
    their ids, headers and causation depth, plus an ``origin`` header: the
    sender's ``ce-source``), then acknowledged. Replicas with the same ``service`` share the consumer.
    No inbound message is redelivered without bound: each is ingested,
    becomes a dead letter (``inbound_letters_name``), or, when not even its
    dead letter can be stored by its ``max_deliver``-th delivery, is
    terminated and logged. A stream or consumer deleted while the bus runs
    is created again. With NATS gone, stopping the bus waits for the bridge
    at most one ``publish_timeout`` and `STOP_TIMEOUT`, not ``shutdown_timeout``.

    Args:
        servers: the NATS server URL, or a list of them.
        stream: the JetStream stream, created if missing; its subjects are
            ``<stream>.>``. Letters, digits, ``-`` and ``_``.
        service: this service's name: its durable consumer's name, and the
            default ``source``. Letters, digits, ``-`` and ``_``.
        source: the ``ce-source`` of what it sends (a URI-reference, such as
            ``https://shop.example.com/billing``; ``service`` when None); the
            receiving services keep it as the event's ``origin`` header.
        outbound: the event classes this service sends.
        inbound: the event classes this service takes in.
        max_payload: the largest event JSON, in bytes, sent or taken in;
            larger events become dead letters.
        ack_wait: seconds before JetStream delivers a message that a replica
            took and did not acknowledge (it died) again.
        publish_timeout: seconds one outbound publish waits for JetStream's
            acknowledgement before it is tried again (with the same event id).
        max_deliver: the delivery of an inbound message on which the bridge
            gives up storing it as an event (the store failed each time):
            it becomes a dead letter, or is terminated if that fails too.
            Until then it is delivered again after a pause that doubles from
            `~eventbus_nats.REDELIVERY_DELAY` (1 s) up to 30 s.
        **connect_options: passed to ``nats.connect`` (``user_credentials``,
            ``tls``, ``reconnect_time_wait``, ...). The bridge reconnects for
            as long as its bus runs unless ``max_reconnect_attempts`` says otherwise.
    """

    name = "nats"

    def __init__(
        self,
        servers: str | list[str] = "nats://127.0.0.1:4222",
        *,
        stream: str = "eventbus",
        service: str,
        source: str | None = None,
        outbound: Iterable[type[Event]] = (),
        inbound: Iterable[type[Event]] = (),
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        ack_wait: float = DEFAULT_ACK_WAIT,
        publish_timeout: float = DEFAULT_PUBLISH_TIMEOUT,
        max_deliver: int = DEFAULT_MAX_DELIVER,
        **connect_options: Any,
    ) -> None:
        self.servers = servers
        self.stream = check_name("stream", stream)
        self.service = check_name("service", service)
        if source is not None and not (isinstance(source, str) and source and storable_text(source) == source):
            raise ValueError(f"source must be a non-empty string (a URI-reference) or None, got {source!r}")
        self.source = self.service if source is None else source
        self.outbound: tuple[type[Event], ...] = _event_classes("outbound", outbound)
        self.inbound: tuple[type[Event], ...] = _event_classes("inbound", inbound)
        if Event in self.inbound:
            raise ValueError("inbound= takes the concrete event classes to receive, not Event itself")
        if isinstance(max_payload, bool) or not isinstance(max_payload, int) or max_payload < 1:
            raise ValueError(f"max_payload must be an int >= 1 (bytes), got {max_payload!r}")
        self.max_payload = max_payload
        if isinstance(max_deliver, bool) or not isinstance(max_deliver, int) or max_deliver < 1:
            raise ValueError(f"max_deliver must be an int >= 1 (deliveries), got {max_deliver!r}")
        self.max_deliver = max_deliver
        self.ack_wait = _seconds("ack_wait", ack_wait)
        self.publish_timeout = _seconds("publish_timeout", publish_timeout)
        self.connect_options = connect_options
        self._runner: Runner | None = None
        self._jetstream: JetStream | None = None
        self._forwarder: Forwarder | None = None
        self._forwarding: Subscription | None = None
        self._receiver: Receiver | None = None

    def __repr__(self) -> str:
        return f"<NatsBridge service={self.service!r} stream={self.stream!r}>"

    @property
    def forwarding_name(self) -> str:
        """The name of the durable subscription that forwards outbound events
        (and of its dead letters): ``nats:<stream>:outbound``."""
        return f"nats:{self.stream}:outbound"

    @property
    def inbound_letters_name(self) -> str:
        """The subscription name of the dead letters of inbound messages: ``nats:<stream>:inbound``."""
        return f"nats:{self.stream}:inbound"

    async def start(self, bus: EventBus, /) -> None:
        """Connect, make sure the stream and the service's consumer exist, and
        subscribe the forwarding subscription (`run` takes events in)."""
        runner = self._runner = start_runner(f"the NATS bridge of service {self.service!r}")
        try:
            with anyio.fail_after(START_TIMEOUT):
                jetstream = self._jetstream = JetStream()
                await runner.call(jetstream.connect, self.servers, f"eventbus:{self.service}", self.connect_options)
                await runner.call(jetstream.ensure_stream, self.stream, stream_subjects(self.stream))
                if self.inbound:
                    subjects = {subject_of(self.stream, cls.__event_type__): cls for cls in self.inbound}
                    await runner.call(jetstream.bind_consumer, self.service, list(subjects), self.ack_wait)
        except Exception as exc:
            await self._close()
            problem = f"no answer within {START_TIMEOUT} s" if isinstance(exc, TimeoutError) else repr(exc)
            raise PluginError(
                f"the NATS bridge of service {self.service!r} could not set up stream {self.stream!r} "
                f"on {self.servers!r}: {problem}"
            ) from exc
        if self.outbound:
            forwarder = self._forwarder = Forwarder(
                runner,
                jetstream,
                self.stream,
                source=self.source,
                max_payload=self.max_payload,
                publish_timeout=self.publish_timeout,
                give_up=self._end_forwarding,
            )
            self._forwarding = bus.subscribe(
                self.outbound,
                forwarder.forward,
                name=self.forwarding_name,
                durable=True,
                backpressure="spill",
                concurrency=PUBLISH_WINDOW,
            )
        if self.inbound:
            self._receiver = Receiver(
                bus,
                runner,
                jetstream,
                subjects,
                max_payload=self.max_payload,
                max_deliver=self.max_deliver,
                letters=self.inbound_letters_name,
            )

    async def run(self, bus: EventBus, /) -> None:
        """Take in events from the service's consumer while the bus runs; when
        the bus begins to stop (this is cancelled), tell the forwarder."""
        try:
            if self._receiver is not None:
                await self._receiver.run()
            else:
                await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            if self._forwarder is not None:
                self._forwarder.bus_stopping()
            raise

    async def stop(self, bus: EventBus, /) -> None:
        """Remove the forwarding subscription and close the connection."""
        self._receiver = None
        self._forwarder = None
        self._end_forwarding()
        self._forwarding = None
        await self._close()

    def _end_forwarding(self) -> None:
        if self._forwarding is not None:
            self._forwarding.close()

    async def _close(self) -> None:
        runner, self._runner = self._runner, None
        jetstream, self._jetstream = self._jetstream, None
        if runner is None:
            return
        try:
            if jetstream is not None:
                with anyio.move_on_after(STOP_TIMEOUT):
                    await runner.call(jetstream.close)
        finally:
            await runner.close()


def _event_classes(what: str, classes: Iterable[type[Event]]) -> tuple[type[Event], ...]:
    found = tuple(classes)
    for cls in found:
        if not (isinstance(cls, type) and issubclass(cls, Event)):
            raise TypeError(f"{what}= takes Event classes, got {cls!r}")
    return found


def _seconds(what: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ValueError(f"{what} must be a positive number of seconds, got {value!r}")
    return float(value)
