"""The inbound side: the service's durable pull consumer, drained into the local store.

The bridge's `run` task (`Plugin.run`: it lives while the bus runs) fetches
up to `FETCH_BATCH` messages at a time and, for each in turn, decodes it and
hands it to `EventBus.ingest`, which stores it under a new local seq and routes it to the subscriptions of its type. The
messages of a batch are acknowledged once all of them are settled, so a
message is only acknowledged once it is stored: as an event, or, if it does
not decode, is over ``max_payload`` or is refused by ``ingest`` (too deep a
causation chain, bad headers), as a dead letter of the subscription name
`Receiver.letters` (they are for reading and purging: ``redrive`` leaves
them, there is no subscription to deliver them to).

A message of a type the service does not take in (a server before 2.10
ignores a consumer's several filter subjects) is acknowledged and skipped.
Messages the bus can no longer take (it is stopping) are handed back to
JetStream (``nak``), which delivers them again at once, to another replica
if one is running.
"""

from __future__ import annotations

from collections.abc import Set

import anyio
from nats.aio.msg import Msg

from eventbus import BusClosed, CausationLoopError, EventBus, EventDecodeError
from eventbus.asyncio_runner import Runner
from eventbus.deadletters import bury
from eventbus.plugins import logger

from ._errors import BadMessage, PayloadTooLarge
from ._jetstream import JetStream, Messages
from ._outbound import FIRST_BACKOFF, MAX_BACKOFF
from ._wire import incoming, letter_record

__all__ = ["FETCH_BATCH", "FETCH_WAIT", "Receiver"]

FETCH_BATCH = 256
"""The most messages fetched at once; after a crash, at most this many were
ingested and not yet acknowledged, and come again (see the guide's delivery guarantees)."""
FETCH_WAIT = 1.0
"""Seconds one fetch waits for a first message before asking again."""
_SETTLE_WAIT = 5.0  # seconds a stopping bridge gives its last acknowledgements


class Receiver:
    """Feeds the messages of the service's consumer to ``bus.ingest``.

    Args:
        bus: the bus events are ingested into.
        runner: where nats-py runs.
        jetstream: the connection, bound to the consumer.
        subjects: the subjects of the types this service takes in.
        origin: the origin given to ``ingest`` for a message that names none.
        max_payload: the largest message body, in bytes, it ingests.
        letters: the subscription name of its dead letters.
    """

    def __init__(
        self,
        bus: EventBus,
        runner: Runner,
        jetstream: JetStream,
        subjects: Set[str],
        *,
        origin: str,
        max_payload: int,
        letters: str,
    ) -> None:
        self._bus = bus
        self._runner = runner
        self._jetstream = jetstream
        self._subjects = subjects
        self._origin = origin
        self._max_payload = max_payload
        self.letters = letters

    async def run(self) -> None:
        """Fetch and ingest until cancelled (the bus stopping); the batch in
        hand is settled first. A failed fetch is logged and tried again after
        a pause that doubles up to `MAX_BACKOFF`."""
        delay = FIRST_BACKOFF
        while True:
            try:
                messages = await self._runner.call(self._jetstream.fetch, FETCH_BATCH, FETCH_WAIT)
            except Exception as exc:
                logger.warning("fetching from NATS failed, retrying", error=repr(exc), retry_in=delay)
                await anyio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)
                continue
            delay = FIRST_BACKOFF
            if messages:
                with anyio.CancelScope(shield=True):
                    await self._take(messages)

    async def _take(self, messages: Messages) -> None:
        """Ingest or dead-letter each message, in order, then settle them all."""
        acks: list[Msg] = []
        naks: list[Msg] = []
        for index, message in enumerate(messages):
            try:
                stored = await self._take_one(message)
            except BusClosed:
                naks.extend(messages[index:])
                break
            except Exception as exc:
                logger.error("ingesting a NATS message failed; it will come again", error=repr(exc))
                naks.extend(messages[index:])
                break
            (acks if stored else naks).append(message)
        with anyio.move_on_after(_SETTLE_WAIT):
            await self._runner.call(self._jetstream.settle, acks, naks)

    async def _take_one(self, message: Msg) -> bool:
        """Store ``message`` as an event or a dead letter; False if neither could be stored."""
        if message.subject not in self._subjects:
            return True
        headers = message.headers or {}
        data = message.data
        if len(data) > self._max_payload:
            return await self._bury(
                message,
                PayloadTooLarge(
                    f"the message on {message.subject!r} has a body of {len(data)} bytes, more than the "
                    f"NATS bridge's max_payload of {self._max_payload}; it was not ingested",
                    size=len(data),
                    limit=self._max_payload,
                ),
            )
        try:
            carried = incoming(headers, data)
            event = carried.record.event
        except (BadMessage, EventDecodeError) as exc:
            return await self._bury(message, exc)
        record = carried.record
        try:
            await self._bus.ingest(
                event,
                event_id=record.event_id,
                origin=carried.origin or self._origin,
                correlation_id=record.correlation_id,
                causation_id=record.causation_id,
                headers=record.headers,
                depth=record.depth,
            )
        except (CausationLoopError, TypeError, ValueError) as exc:
            return await self._bury(message, exc)
        return True

    async def _bury(self, message: Msg, exc: Exception) -> bool:
        record = letter_record(message.subject, message.headers or {}, message.data)
        return await bury(self._bus.store, self.letters, record, exc)
