"""The inbound side: the service's durable pull consumer, drained into the local store.

The bridge's `run` task (`Plugin.run`: it lives while the bus runs) fetches
up to `FETCH_BATCH` messages at a time, decodes them, and hands the batch to
`EventBus.ingest_many`, which stores them in one append under new local seqs
and routes them to the subscriptions of their types. A batch holding a
message that cannot be ingested is taken one message at a time with
`EventBus.ingest` instead, so that the message at fault alone ends as below.
The messages of a batch are answered once all of them are settled, and
every message ends one of three ways, so none can come back without bound:

- **stored, then acknowledged**: as an event, or, if it does not decode,
  has a bad header (`BadHeader`), is over ``max_payload`` or is refused by
  ``ingest`` (too deep a causation chain), at once as a dead letter of the
  subscription name `Receiver.letters` (they are for reading and purging:
  ``redrive`` leaves them, there is no subscription to deliver them to);
- **delivered again later**, when it could not be stored, as an event or as
  a dead letter (the store failed, or a publish timeout ran out): it is
  handed back (``nak``) with a delay that doubles with each delivery, from
  `REDELIVERY_DELAY` up to `MAX_REDELIVERY_DELAY`, with the rest of its batch,
  and the bridge pauses before it fetches again;
- **given up on its last delivery** (the bridge's ``max_deliver``,
  `DEFAULT_MAX_DELIVER`): a message that still cannot be ingested becomes a
  dead letter naming the last error; if even that letter cannot be stored,
  the message is terminated (``term``: JetStream never delivers it again)
  and logged once, at error level, with its stream seq, subject and event id.

A message of a type the service does not take in (a server before 2.10
ignores a consumer's several filter subjects) is acknowledged and skipped.
Messages the bus can no longer take (it is stopping) are handed back at once,
to another replica if one is running.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anyio
from nats.aio.msg import Msg

from eventbus import BusClosed, CausationLoopError, Event, EventBus, Record
from eventbus.asyncio_runner import Runner
from eventbus.bus import ORIGIN_HEADER
from eventbus.deadletters import bury
from eventbus.plugins import logger

from ._errors import PayloadTooLarge
from ._jetstream import JetStream, Messages, Settlement
from ._outbound import FIRST_BACKOFF, MAX_BACKOFF
from ._wire import event_id_of, incoming, letter_record

__all__ = [
    "DEFAULT_MAX_DELIVER",
    "FETCH_BATCH",
    "FETCH_WAIT",
    "MAX_REDELIVERY_DELAY",
    "REDELIVERY_DELAY",
    "Receiver",
    "redelivery_delay",
]

FETCH_BATCH = 256
"""The most messages fetched at once; after a crash, at most this many were
ingested and not yet acknowledged, and come again (see the guide's delivery guarantees)."""
FETCH_WAIT = 1.0
"""Seconds one fetch waits for a first message before asking again."""
DEFAULT_MAX_DELIVER = 10
"""How many deliveries of an inbound message the bridge tries to store it in
before it gives up on it (dead letter, or ``term``)."""
REDELIVERY_DELAY = 1.0
"""Seconds before a message that could not be stored is delivered again the
first time; each later redelivery waits twice as long as the one before."""
MAX_REDELIVERY_DELAY = 30.0
"""The longest wait before a message that could not be stored is delivered again."""
_SETTLE_WAIT = 5.0  # seconds a stopping bridge gives its last answers to JetStream


def redelivery_delay(deliveries: int) -> float:
    """Seconds before a message that failed on its ``deliveries``-th delivery comes again."""
    return min(REDELIVERY_DELAY * 2.0 ** min(deliveries - 1, 32), MAX_REDELIVERY_DELAY)


class Receiver:
    """Feeds the messages of the service's consumer to ``bus.ingest_many`` (or ``bus.ingest``).

    Args:
        bus: the bus events are ingested into.
        runner: where nats-py runs.
        jetstream: the connection, bound to the consumer.
        subjects: the subjects of the types this service takes in, and their types.
        max_payload: the largest message body, in bytes, it ingests.
        max_deliver: the delivery on which it gives up on a message it cannot store.
        letters: the subscription name of its dead letters.
    """

    def __init__(
        self,
        bus: EventBus,
        runner: Runner,
        jetstream: JetStream,
        subjects: Mapping[str, type[Event]],
        *,
        max_payload: int,
        max_deliver: int,
        letters: str,
    ) -> None:
        self._bus = bus
        self._runner = runner
        self._jetstream = jetstream
        self._subjects = subjects
        self._max_payload = max_payload
        self._max_deliver = max_deliver
        self.letters = letters

    async def run(self) -> None:
        """Fetch and ingest until cancelled (the bus stopping); the batch in
        hand is settled first. After a failed fetch, or a message that could
        not be stored, it pauses before fetching again, twice as long each
        time in a row, up to `MAX_BACKOFF`."""
        pause = FIRST_BACKOFF
        while True:
            if await self._fetch_and_take():
                pause = FIRST_BACKOFF
            else:
                await anyio.sleep(pause)
                pause = min(pause * 2, MAX_BACKOFF)

    async def _fetch_and_take(self) -> bool:
        """One fetch, its messages taken in; False when the fetch or a message's storing failed."""
        try:
            messages = await self._runner.call(self._jetstream.fetch, FETCH_BATCH, FETCH_WAIT)
        except Exception as exc:
            logger.warning("fetching from NATS failed, retrying", error=repr(exc))
            return False
        if not messages:
            return True
        with anyio.CancelScope(shield=True):
            stored = await self._take(messages)
        return stored

    async def _take(self, messages: Messages) -> bool:
        """Store the messages, then settle them all; False if one could not be stored.

        When every message reads as an event of this service and none is on
        its last delivery, the batch is stored in one append
        (`EventBus.ingest_many`). Otherwise, or when that append is refused
        for one record's sake (too deep a chain), they are taken one at a
        time (`_take_each`), which dead-letters the ones at fault.
        """
        records = self._read_all(messages)
        if records is not None:
            try:
                await self._bus.ingest_many(records)
            except BusClosed:
                return await self._settle(Settlement(naks=[(message, None) for message in messages]), stored=True)
            except (CausationLoopError, TypeError, ValueError):
                pass
            except Exception as exc:  # the store, or room in a subscription: it may work on a later delivery
                settlement = Settlement()
                self._hand_back(settlement, messages, f"ingesting it failed: {exc!r}")
                return await self._settle(settlement, stored=False)
            else:
                return await self._settle(Settlement(acks=list(messages)), stored=True)
        return await self._take_each(messages)

    def _read_all(self, messages: Messages) -> list[Record] | None:
        """The records of ``messages``, their events decoded, if every one is
        an event of this service within ``max_payload``, before its last delivery; else None."""
        records: list[Record] = []
        for message in messages:
            of = self._subjects.get(message.subject)
            if (
                of is None
                or len(message.data) > self._max_payload
                or message.metadata.num_delivered >= self._max_deliver
            ):
                return None
            try:
                record = incoming(message.headers or {}, message.data, of)
                record.event  # noqa: B018  # decoded here, so that a bad one is found before the append
            except Exception:
                return None
            records.append(record)
        return records

    async def _take_each(self, messages: Messages) -> bool:
        """Store each message, in order, then settle them all; False if one could not be stored."""
        settlement = Settlement()
        stored_all = True
        for index, message in enumerate(messages):
            deliveries = message.metadata.num_delivered
            last = deliveries >= self._max_deliver
            try:
                problem = await self._take_one(message, last=last)
            except BusClosed:
                settlement.naks.extend((rest, None) for rest in messages[index:])
                break
            if problem is None:
                settlement.acks.append(message)
                continue
            stored_all = False
            if last:
                settlement.terms.append(message)
                logger.error(
                    "a NATS message could not be stored, not even as a dead letter; terminated, "
                    "JetStream will not deliver it again",
                    deliveries=deliveries,
                    problem=problem,
                    **_naming(message),
                )
                continue
            self._hand_back(settlement, messages[index:], problem)
            break
        return await self._settle(settlement, stored=stored_all)

    def _hand_back(self, settlement: Settlement, messages: Messages, problem: str) -> None:
        """Hand ``messages`` back for redelivery: the first could not be stored
        (``problem``), and the rest of its batch comes again with it."""
        first = messages[0]
        deliveries = first.metadata.num_delivered
        delay = redelivery_delay(deliveries)
        settlement.naks.extend((message, delay) for message in messages)
        logger.warning(
            "a NATS message could not be stored; it and the rest of its batch come again",
            delay=delay,
            delivery=deliveries,
            max_deliver=self._max_deliver,
            problem=problem,
            **_naming(first),
        )

    async def _settle(self, settlement: Settlement, *, stored: bool) -> bool:
        """Send ``settlement``'s answers (a stopping bridge waits for them a bounded time); returns ``stored``."""
        with anyio.move_on_after(_SETTLE_WAIT):
            await self._runner.call(self._jetstream.settle, settlement)
        return stored

    async def _take_one(self, message: Msg, *, last: bool) -> str | None:
        """Store ``message`` as an event or a dead letter; None once it is
        stored, else what kept it from being stored. A failure to ingest it
        is worth another delivery, unless this is its ``last``: then it
        becomes a dead letter."""
        of = self._subjects.get(message.subject)
        if of is None:
            return None
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
            record = incoming(message.headers or {}, data, of)
            event = record.event
        except Exception as exc:  # whatever reading it raises (BadHeader, EventDecodeError, ...) is the message's own
            return await self._bury(message, exc)
        try:
            await self._bus.ingest(
                event,
                event_id=record.event_id,
                origin=record.headers[ORIGIN_HEADER],
                correlation_id=record.correlation_id,
                causation_id=record.causation_id,
                headers=record.headers,
                depth=record.depth,
            )
        except BusClosed:
            raise
        except (CausationLoopError, TypeError, ValueError) as exc:
            return await self._bury(message, exc)
        except Exception as exc:  # the store, or room in a subscription: it may work on a later delivery
            return await self._bury(message, exc) if last else f"ingesting it failed: {exc!r}"
        return None

    async def _bury(self, message: Msg, exc: Exception) -> str | None:
        """Store ``message`` as a dead letter failing with ``exc``; None once stored."""
        record = letter_record(message.subject, message.headers or {}, message.data, message.metadata.sequence.stream)
        if await bury(self._bus.store, self.letters, record, exc):
            return None
        return f"its dead letter ({type(exc).__name__}) could not be stored"


def _naming(message: Msg) -> dict[str, Any]:
    """The fields that name ``message`` in a log line."""
    event_id = event_id_of(message.headers or {})
    return {
        "stream_seq": message.metadata.sequence.stream,
        "subject": message.subject,
        "event_id": None if event_id is None else str(event_id),
    }
