"""The outbound side: the handler of the bridge's durable forwarding subscription.

The subscription runs `PUBLISH_WINDOW` deliveries at once (``concurrency=``),
and the forwarder publishes their events pipelined: many messages in flight
to JetStream, their acknowledgements gathered, instead of one round trip per
event. Each delivery returns only once JetStream has acknowledged its event,
and a concurrent subscription's position only moves past a seq once every
delivery up to it has returned, so the checkpoint never moves past an event
the stream does not hold.

**Order.** The workers take records in seq order, and each delivery hands
its message over (`Forwarder.forward`) before its first wait: the bridge's
subscription has no retry or timeout around the handler, and the lease
guard of a shared store waits, if ever, in the order it was entered. Handed
over messages wait in one queue, in that order. One delivery at a time
sends (it *leads*): it takes what is queued, up to `PUBLISH_WINDOW`,
publishes it in order on the one connection (`JetStream.publish_all`), and
settles each message by its outcome; then it wakes the first message still
queued, whose delivery leads next. JetStream stores what one connection
sends in the order sent, so the stream holds the events in seq order.

**Failures.** When a message of a round fails (the server cannot be
reached, an acknowledgement does not come within ``publish_timeout``), it
and every message after it that was not acknowledged go back to the front
of the queue, in order, and the leader pauses before the next round, a
pause that doubles from `FIRST_BACKOFF` up to `MAX_BACKOFF`; until a round
succeeds again, a round sends one message only. What reached the stream
before its acknowledgement was lost is dropped by JetStream as a duplicate
(the same ``Nats-Msg-Id``), so the stream keeps each event once, in order.
While the server cannot be reached the events behind wait in the local
store, and are forwarded in order once it is back.

When no stream answers a round (it was deleted), the connection creates the
stream again before the round returns (`JetStream.publish_all`), and the
next round sends the messages again.

When the bus stops while NATS cannot be reached (a round is failing, or one
fails from then on), forwarding ends there: the bridge closes its
subscription, whose position stays below the first event JetStream has not
acknowledged, and the events from there wait in the local store for the
next start. So a shutdown with NATS gone waits for one round at most
(``publish_timeout``), not for the bus's ``shutdown_timeout``.

An event whose JSON exceeds ``max_payload`` (the bridge's, or the server's,
counting the headers) is refused with `PayloadTooLarge`, which makes it a
dead letter of the forwarding subscription; the events after it go on.
"""

from __future__ import annotations

import contextlib
from collections import deque
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

__all__ = ["FIRST_BACKOFF", "Forwarder", "MAX_BACKOFF", "PUBLISH_WINDOW"]

PUBLISH_WINDOW = 128
"""The most outbound events in flight to JetStream at once: the forwarding
subscription's ``concurrency``, and the most one round publishes. Wider
rounds did not forward faster here (64 to 1 024 all measured within the
noise of a shared machine), and each worker of a durable subscription saves
its checkpoint when the subscription goes idle: with 512, a service on
SQLite spent its time in those writes."""
FIRST_BACKOFF = 0.05
"""Seconds before the first retry of a publish that failed; each further retry waits twice as long."""
MAX_BACKOFF = 2.0
"""The longest pause between two tries of one publish."""
_LOG_EVERY = 10  # a long outage logs its first failure and every tenth after it


class _Pending:
    """A message handed over and not yet settled, and the delivery waiting for it."""

    __slots__ = ("error", "message", "record", "settled", "size", "woken")

    def __init__(self, message: Outgoing, record: Record, size: int) -> None:
        self.message = message
        self.record = record
        self.size = size
        self.settled = False
        self.error: Exception | None = None
        self.woken = anyio.Event()

    def settle(self, error: Exception | None = None) -> None:
        """Acknowledged (``error`` None) or given up on: its delivery returns, or raises ``error``."""
        self.settled = True
        self.error = error
        self.woken.set()

    def wake(self) -> None:
        """Ask its delivery to lead the next round."""
        self.woken.set()

    async def wait(self) -> None:
        """Until it is settled or its delivery is asked to lead."""
        if self.woken.is_set():  # woken to lead before, and another delivery led first
            self.woken = anyio.Event()
        await self.woken.wait()


class Forwarder:
    """Publishes the events of the forwarding subscription, pipelined, in seq order.

    Args:
        runner: where nats-py runs.
        jetstream: the bridge's connection.
        stream: the stream (and subject prefix) events go to.
        source: sent as each message's ``ce-source``.
        max_payload: the largest event JSON, in bytes, it publishes.
        publish_timeout: seconds a round waits for JetStream's
            acknowledgements before what is missing is sent again.
        give_up: ends the forwarding (closes its subscription, cancelling
            the deliveries in hand); called once NATS fails while the bus stops.
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
        self._subjects: dict[str, str] = {}
        """Each type name's subject, as `subject_of` gave it."""
        self._queue: deque[_Pending] = deque()
        """Messages handed over and not sent, or sent and to be sent again, in seq order."""
        self._leading = False
        self._failures = 0
        self._delay = FIRST_BACKOFF
        self._stopping = False

    def bus_stopping(self) -> None:
        """The bus begins to stop: if a round is failing now, or one fails from now on, forwarding ends."""
        self._stopping = True
        if self._failures:
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
        subject = self._subjects.get(record.type)
        if subject is None:
            subject = self._subjects[record.type] = subject_of(self._stream, record.type)
        message = outgoing(record, subject, self._source)
        size = len(message.payload)
        if size > self._max_payload:
            raise PayloadTooLarge(
                f"event {record.event_id} ({record.type}, seq {record.seq}) is {size} bytes of JSON, "
                f"more than the NATS bridge's max_payload of {self._max_payload}; it was not forwarded",
                size=size,
                limit=self._max_payload,
            )
        pending = _Pending(message, record, size)
        self._queue.append(pending)
        try:
            while not pending.settled:
                if self._leading:
                    await pending.wait()
                else:
                    await self._lead()
        finally:
            if not pending.settled:  # cancelled: the delivery is made again after a restart
                with contextlib.suppress(ValueError):  # unless it is in the round under way
                    self._queue.remove(pending)
        if pending.error is not None:
            raise pending.error

    async def _lead(self) -> None:
        """One round: publish what is queued and settle it; then the first message still queued leads."""
        self._leading = True
        try:
            # the workers woken by the last round hand their next messages over first
            await anyio.lowlevel.checkpoint()
            queue = self._queue
            batch = [queue.popleft() for _ in range(min(len(queue), 1 if self._failures else PUBLISH_WINDOW))]
            outcomes: list[Exception | None]
            try:
                outcomes = await self._runner.call(
                    self._jetstream.publish_all, [pending.message for pending in batch], self._publish_timeout
                )
            except Exception as exc:  # nothing is known of this round: it failed at its first message
                outcomes = [exc]
            except BaseException:
                queue.extendleft(reversed(batch))
                raise
            failure = self._settle(batch, outcomes)
            if failure is not None:
                await self._pause(failure)
            elif self._failures:
                logger.info("forwarded to NATS after retrying", seq=batch[0].record.seq, attempts=self._failures + 1)
                self._failures = 0
                self._delay = FIRST_BACKOFF
        finally:
            self._leading = False
            if self._queue:
                self._queue[0].wake()

    def _settle(self, batch: list[_Pending], outcomes: list[Exception | None]) -> tuple[_Pending, Exception] | None:
        """Settle the messages of a round by their outcomes; put back, in order,
        those to send again. Returns the first failure, if any."""
        again: list[_Pending] = []
        failure: tuple[_Pending, Exception] | None = None
        for index, pending in enumerate(batch):
            if index >= len(outcomes):  # not sent: a message before it could not be
                again.append(pending)
                continue
            outcome = outcomes[index]
            if outcome is None:
                pending.settle()
            elif isinstance(outcome, MaxPayloadError):
                limit = self._jetstream.max_payload
                record = pending.record
                pending.settle(
                    PayloadTooLarge(
                        f"event {record.event_id} ({record.type}, seq {record.seq}) with its headers is more than "
                        f"the NATS server's max_payload of {limit} bytes; it was not forwarded",
                        size=pending.size,
                        limit=limit,
                    )
                )
            else:
                again.append(pending)
                if failure is None:
                    failure = pending, outcome
        self._queue.extendleft(reversed(again))
        return failure

    async def _pause(self, failure: tuple[_Pending, Exception]) -> None:
        """A round failed: log it (the first time and every tenth), end the
        forwarding if the bus is stopping, else wait before the next round."""
        pending, error = failure
        if self._stopping:
            self._end()  # closes the subscription: this delivery is cancelled at the sleep below
        elif self._failures % _LOG_EVERY == 0:
            logger.warning(
                "forwarding to NATS failed, retrying",
                seq=pending.record.seq,
                type=pending.record.type,
                attempts=self._failures + 1,
                error=repr(error),
            )
        self._failures += 1
        await anyio.sleep(self._delay)
        self._delay = min(self._delay * 2, MAX_BACKOFF)
