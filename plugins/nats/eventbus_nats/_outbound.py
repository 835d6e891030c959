"""The outbound side: the handler of the bridge's durable forwarding subscription.

It publishes each event to JetStream and returns only once JetStream has
acknowledged it, so the subscription's checkpoint never moves past an event
the stream does not hold. While the server cannot be reached it keeps trying
the same event, with a pause that doubles up to `MAX_BACKOFF`, and the
events behind it wait in the local store: they are forwarded in order once
the server is back. Retries carry the same ``Nats-Msg-Id`` (the event id),
so a publish that reached the stream before its acknowledgement was lost is
dropped by JetStream as a duplicate.

When no stream answers a publish (it was deleted), the connection creates
the stream again and publishes once more (`JetStream.publish`).

When the bus stops while NATS cannot be reached (the forwarder is retrying,
or the publish in flight fails), forwarding ends there: the bridge closes
its subscription, whose position stays at the last event JetStream holds,
and the events after it wait in the local store for the next start. So a
shutdown with NATS gone waits for one publish at most (``publish_timeout``),
not for the bus's ``shutdown_timeout``.

An event whose JSON exceeds ``max_payload`` (the bridge's, or the server's,
counting the headers) is refused with `PayloadTooLarge`, which makes it a
dead letter of the forwarding subscription; the events after it go on.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
from nats.errors import MaxPayloadError

from eventbus import Event, Record
from eventbus.asyncio_runner import Runner
from eventbus.bus import ORIGIN_HEADER
from eventbus.plugins import logger

from ._errors import PayloadTooLarge
from ._jetstream import JetStream
from ._subjects import subject_of
from ._wire import Outgoing, outgoing

__all__ = ["FIRST_BACKOFF", "Forwarder", "MAX_BACKOFF"]

FIRST_BACKOFF = 0.05
"""Seconds before the first retry of a publish that failed; each further retry waits twice as long."""
MAX_BACKOFF = 2.0
"""The longest pause between two tries of one publish."""
_LOG_EVERY = 10  # a long outage logs its first failure and every tenth after it


class Forwarder:
    """Publishes the events of the forwarding subscription, one at a time, in seq order.

    Args:
        runner: where nats-py runs.
        jetstream: the bridge's connection.
        stream: the stream (and subject prefix) events go to.
        source: sent as each message's ``ce-source``.
        max_payload: the largest event JSON, in bytes, it publishes.
        publish_timeout: seconds one publish waits for JetStream's
            acknowledgement before it is tried again.
        give_up: ends the forwarding (closes its subscription, cancelling
            the delivery in hand); called once NATS fails while the bus stops.
    """

    def __init__(
        self,
        runner: Runner,
        jetstream: JetStream,
        stream: str,
        *,
        source: str,
        max_payload: int,
        publish_timeout: float,
        give_up: Callable[[], None],
    ) -> None:
        self._runner = runner
        self._jetstream = jetstream
        self._stream = stream
        self._source = source
        self._max_payload = max_payload
        self._publish_timeout = publish_timeout
        self._give_up = give_up
        self._stopping = False
        self._failing = False

    def bus_stopping(self) -> None:
        """The bus begins to stop: if a forward is failing now, or one fails from now on, forwarding ends."""
        self._stopping = True
        if self._failing:
            self._end()

    def _end(self) -> None:
        logger.warning(
            "NATS cannot be reached while the bus stops: forwarding ends here; "
            "the events not yet forwarded stay in the local store and go out after the next start"
        )
        self._give_up()

    async def forward(self, event: Event, record: Record) -> None:
        """Publish ``record`` and return once JetStream holds it.

        Events that came in through ``ingest`` (they carry an ``origin``
        header) are not sent back: each event enters the stream from the
        service where it was first published.
        """
        if ORIGIN_HEADER in record.headers:
            return
        message = outgoing(record, subject_of(self._stream, record.type), self._source)
        size = len(message.payload)
        if size > self._max_payload:
            raise PayloadTooLarge(
                f"event {record.event_id} ({record.type}, seq {record.seq}) is {size} bytes of JSON, "
                f"more than the NATS bridge's max_payload of {self._max_payload}; it was not forwarded",
                size=size,
                limit=self._max_payload,
            )
        try:
            await self._publish(message, record, size)
        finally:
            self._failing = False

    async def _publish(self, message: Outgoing, record: Record, size: int) -> None:
        """Publish ``message`` (of ``record``, ``size`` bytes of JSON), trying until JetStream holds it."""
        failures = 0
        delay = FIRST_BACKOFF
        while True:
            try:
                await self._runner.call(self._jetstream.publish, message, self._publish_timeout)
            except MaxPayloadError:
                limit = self._jetstream.max_payload
                raise PayloadTooLarge(
                    f"event {record.event_id} ({record.type}, seq {record.seq}) with its headers is more than "
                    f"the NATS server's max_payload of {limit} bytes; it was not forwarded",
                    size=size,
                    limit=limit,
                ) from None
            except Exception as exc:
                self._failing = True
                if self._stopping:
                    self._end()  # closes the subscription: this delivery is cancelled at the sleep below
                elif failures % _LOG_EVERY == 0:
                    logger.warning(
                        "forwarding to NATS failed, retrying",
                        seq=record.seq,
                        type=record.type,
                        attempts=failures + 1,
                        error=repr(exc),
                    )
                failures += 1
                await anyio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)
            else:
                if failures:
                    logger.info("forwarded to NATS after retrying", seq=record.seq, attempts=failures + 1)
                return
