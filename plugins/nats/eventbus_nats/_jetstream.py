"""The NATS connection and everything the bridge asks of JetStream.

Every method runs on the asyncio loop that owns the connection (through a
`~eventbus.asyncio_runner.Runner`); nothing here knows about the bus.

The connection remembers the stream and the consumer it set up, and sets
them up again when they disappear (the stream was deleted, or the consumer
was): a publish that no stream answers makes it look, and so does a fetch
that finds nothing. A stream comes back with the configuration it had when
last seen. A consumer comes back after its acknowledgement floor when last
seen if its stream is the same one, or at the start of a stream created
anew (so what was published there meanwhile is delivered).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, PubAck, StreamConfig
from nats.js.client import JetStreamContext
from nats.js.errors import NoStreamResponseError, NotFoundError

from eventbus.plugins import logger

from ._wire import Outgoing

__all__ = ["JetStream", "Messages", "Settlement"]

Messages = Sequence[Msg]


_TOP_UP_WAIT = 0.01  # seconds a fetch waits for more than the messages already there

_CONNECT_DEFAULTS: Mapping[str, Any] = {
    # a bridge keeps reconnecting for as long as its bus runs: events wait in the local store meanwhile
    "max_reconnect_attempts": -1,
    "reconnect_time_wait": 1,
}


@dataclass
class Settlement:
    """The answers to a fetched batch: messages acknowledged, handed back
    for redelivery (after a delay in seconds, or at once), or terminated
    (JetStream never delivers them again)."""

    acks: list[Msg] = field(default_factory=list)
    naks: list[tuple[Msg, float | None]] = field(default_factory=list)
    terms: list[Msg] = field(default_factory=list)


class JetStream:
    """One connection to NATS and its JetStream context, with the stream and
    the consumer it set up (see the module docstring)."""

    def __init__(self) -> None:
        self._client: Client | None = None
        self._js: JetStreamContext | None = None
        self._subscription: JetStreamContext.PullSubscription | None = None
        self._stream_name = ""
        self._subjects = ""
        self._stream: StreamConfig | None = None  # as last seen; None until it was set up
        self._stream_created: datetime | None = None
        self._durable = ""
        self._consumer: ConsumerConfig | None = None
        self._consumer_stream_created: datetime | None = None  # the stream the consumer lives in
        self._ack_floor = 0  # the consumer's acknowledgement floor (a stream seq) when last seen
        self._setting_up = asyncio.Lock()
        self._closing = False
        self._log: Any = logger

    async def connect(self, servers: str | list[str], name: str, options: Mapping[str, Any]) -> None:
        """Connect (retrying until it succeeds, unless ``options`` say otherwise)."""
        self._log = logger.bind(nats_connection=name)
        callbacks = {
            "error_cb": self._on_error,
            "disconnected_cb": self._on_disconnect,
            "reconnected_cb": self._on_reconnect,
        }
        # made here, on the loop that will own the connection
        self._client = Client()
        await self._client.connect(servers, name=name, **{**_CONNECT_DEFAULTS, **callbacks, **options})
        self._js = self._client.jetstream()

    @property
    def max_payload(self) -> int:
        """The largest message the server takes, headers included."""
        return 0 if self._client is None else self._client.max_payload

    @property
    def _context(self) -> JetStreamContext:
        assert self._js is not None, "connect() first"
        return self._js

    async def ensure_stream(self, stream: str, subjects: str) -> None:
        """Create ``stream`` holding ``subjects``, or add ``subjects`` to it if it lacks them."""
        self._stream_name, self._subjects = stream, subjects
        await self._ensure_stream()

    async def _ensure_stream(self) -> None:
        """The stream as `ensure_stream` set it up, created again (as last seen) if it is gone."""
        async with self._setting_up:
            try:
                info = await self._context.stream_info(self._stream_name)
            except NotFoundError:
                gone = self._stream
                first = StreamConfig(name=self._stream_name, subjects=[self._subjects])
                info = await self._context.add_stream(gone or first)
                if gone is not None:
                    self._log.warning("the JetStream stream was gone; created it again", stream=self._stream_name)
            else:
                present = info.config.subjects or []
                if self._subjects not in present:
                    info = await self._context.update_stream(info.config.evolve(subjects=[*present, self._subjects]))
            self._stream = info.config
            self._stream_created = info.created

    async def bind_consumer(self, durable: str, subjects: Sequence[str], ack_wait: float) -> None:
        """Create (or update) the durable pull consumer on the stream and subscribe to it.

        One subject is the consumer's ``filter_subject``; several are its
        ``filter_subjects``, which servers before 2.10 ignore (they deliver
        the whole stream, and the bridge acknowledges and skips the rest).
        Redeliveries are not limited here (``max_deliver=-1``): the bridge
        settles every message itself, within its own ``max_deliver``.
        """
        self._durable = durable
        self._consumer = ConsumerConfig(
            durable_name=durable,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=ack_wait,
            max_deliver=-1,
            filter_subject=subjects[0] if len(subjects) == 1 else None,
            filter_subjects=list(subjects) if len(subjects) > 1 else None,
        )
        await self._put_consumer(start=1)
        self._subscription = await self._context.pull_subscribe_bind(durable=durable, stream=self._stream_name)

    async def _put_consumer(self, *, start: int) -> None:
        """Create the consumer, its first message the stream's seq ``start``,
        or update the one there (where a consumer starts cannot change)."""
        assert self._consumer is not None, "bind_consumer() first"
        try:
            current = (await self._context.consumer_info(self._stream_name, self._durable)).config
        except NotFoundError:
            config = self._consumer.evolve(
                deliver_policy=DeliverPolicy.ALL if start <= 1 else DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=None if start <= 1 else start,
            )
        else:
            config = self._consumer.evolve(deliver_policy=current.deliver_policy, opt_start_seq=current.opt_start_seq)
        await self._context.add_consumer(self._stream_name, config)
        self._consumer_stream_created = self._stream_created

    async def _check_consumer(self) -> None:
        """Note the consumer's acknowledgement floor, or set it up again if it is gone."""
        try:
            info = await self._context.consumer_info(self._stream_name, self._durable)
        except NotFoundError:
            await self._ensure_stream()
            same_stream = self._stream_created is not None and self._stream_created == self._consumer_stream_created
            start = self._ack_floor + 1 if same_stream else 1
            await self._put_consumer(start=start)
            self._ack_floor = start - 1
            self._log.warning(
                "the JetStream consumer was gone; created it again",
                stream=self._stream_name,
                consumer=self._durable,
                from_stream_seq=start,
            )
        else:
            self._ack_floor = info.ack_floor.stream_seq if info.ack_floor is not None else 0

    async def publish_all(self, messages: Sequence[Outgoing], timeout: float) -> list[Exception | None]:
        """Publish ``messages`` in order, all in flight at once, and gather
        JetStream's acknowledgements for up to ``timeout`` seconds.

        One outcome per message sent, in order: None once acknowledged (or
        dropped as a duplicate), else what went wrong (a `TimeoutError` for
        an acknowledgement that did not come). Sending stops at the first
        message that cannot be sent, whose error is the last outcome: the
        messages after it were not sent. No acknowledgement is left waiting
        (that would hold one of nats-py's places for pending publishes).
        When no stream answered (it was deleted, or lost the bridge's
        subjects), the stream is set up again before this returns.
        """
        context = self._context
        acks: list[asyncio.Future[PubAck]] = []
        unsent: Exception | None = None
        try:
            for message in messages:
                try:
                    ack = await context.publish_async(
                        message.subject, message.payload, stream=self._stream_name, headers=dict(message.headers)
                    )
                except Exception as exc:
                    unsent = exc
                    break
                acks.append(ack)
            if acks:
                await asyncio.wait(acks, timeout=timeout)
        finally:
            for ack in acks:
                ack.cancel()  # nothing, once it is done
        outcomes: list[Exception | None] = []
        for ack in acks:
            if ack.cancelled():
                outcomes.append(TimeoutError(f"JetStream did not acknowledge within {timeout} s"))
            else:
                error = ack.exception()
                outcomes.append(error if error is None or isinstance(error, Exception) else RuntimeError(error))
        if unsent is not None:
            outcomes.append(unsent)
        if any(isinstance(outcome, NoStreamResponseError) for outcome in outcomes):
            await self._ensure_stream()  # for the messages' next round
        return outcomes

    async def fetch(self, batch: int, wait: float) -> Messages:
        """Up to ``batch`` messages of the consumer, waiting up to ``wait`` seconds for the first.

        A pull for several messages lingers until it has them all or it
        expires, so the batch is first pulled with a short expiry (what is
        there already comes at once, in one request while messages wait);
        when that finds nothing, the first message is pulled alone, waiting,
        and the rest of the batch with the short expiry again. A pull that
        finds nothing checks that the consumer still exists (a deleted
        consumer looks just like an idle one).
        """
        assert self._subscription is not None
        try:
            return await self._subscription.fetch(batch, timeout=_TOP_UP_WAIT)
        except TimeoutError:  # nothing there now (nats-py raises its own subclass, or the builtin itself)
            pass
        try:
            first = await self._subscription.fetch(1, timeout=wait)
        except TimeoutError:
            await self._check_consumer()
            return ()
        try:
            more = await self._subscription.fetch(batch - 1, timeout=_TOP_UP_WAIT)
        except Exception:  # the message in hand must not be lost (until ack_wait) for a failed top-up
            return first
        return [*first, *more]

    async def settle(self, settlement: Settlement) -> None:
        """Send the answers of ``settlement``."""
        for message in settlement.acks:
            await message.ack()
        for message, delay in settlement.naks:
            await message.nak(delay)
        for message in settlement.terms:
            await message.term()

    async def close(self) -> None:
        """Flush what is buffered (acknowledgements) and close the connection."""
        self._closing = True
        if self._client is None:
            return
        try:
            if self._client.is_connected:
                await self._client.flush()  # the last acknowledgements reach the server before we go
                if self._subscription is not None:
                    await self._subscription.unsubscribe()
            await self._client.close()
        except Exception as exc:  # the connection was lost meanwhile: nothing is left to flush
            self._log.warning("closing the NATS connection failed", error=repr(exc))

    async def _on_error(self, error: Exception) -> None:
        self._log.warning("NATS connection error", error=repr(error))

    async def _on_disconnect(self) -> None:
        if not self._closing:
            self._log.warning("disconnected from NATS; reconnecting")

    async def _on_reconnect(self) -> None:
        self._log.info("reconnected to NATS")
