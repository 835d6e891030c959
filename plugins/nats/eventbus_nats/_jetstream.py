"""The NATS connection and everything the bridge asks of JetStream.

Every method runs on the asyncio loop that owns the connection (through a
`~eventbus.asyncio_runner.Runner`); nothing here knows about the bus.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from eventbus.plugins import logger

from ._wire import Outgoing

__all__ = ["JetStream", "Messages"]

Messages = Sequence[Msg]


_TOP_UP_WAIT = 0.01  # seconds a fetch waits for more than the messages already there

_CONNECT_DEFAULTS: Mapping[str, Any] = {
    # a bridge keeps reconnecting for as long as its bus runs: events wait in the local store meanwhile
    "max_reconnect_attempts": -1,
    "reconnect_time_wait": 1,
}


class JetStream:
    """One connection to NATS and its JetStream context."""

    def __init__(self) -> None:
        self._client: Client | None = None
        self._js: JetStreamContext | None = None
        self._subscription: JetStreamContext.PullSubscription | None = None
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
        try:
            info = await self._context.stream_info(stream)
        except NotFoundError:
            await self._context.add_stream(name=stream, subjects=[subjects])
            return
        config = info.config
        if subjects not in (config.subjects or []):
            config.subjects = [*(config.subjects or []), subjects]
            await self._context.update_stream(config)

    async def bind_consumer(self, stream: str, durable: str, subjects: Sequence[str], ack_wait: float) -> None:
        """Create (or update) the durable pull consumer and subscribe to it.

        One subject is the consumer's ``filter_subject``; several are its
        ``filter_subjects``, which servers before 2.10 ignore (they deliver
        the whole stream, and the bridge acknowledges and skips the rest).
        """
        config = ConsumerConfig(
            durable_name=durable,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=ack_wait,
            max_deliver=-1,
            filter_subject=subjects[0] if len(subjects) == 1 else None,
            filter_subjects=list(subjects) if len(subjects) > 1 else None,
        )
        await self._context.add_consumer(stream, config)
        self._subscription = await self._context.pull_subscribe_bind(durable=durable, stream=stream)

    async def publish(self, message: Outgoing, stream: str, timeout: float) -> None:
        """Publish ``message`` and return once JetStream has acknowledged it (or it was a duplicate)."""
        await self._context.publish(
            message.subject, message.payload, timeout=timeout, stream=stream, headers=dict(message.headers)
        )

    async def fetch(self, batch: int, wait: float) -> Messages:
        """Up to ``batch`` messages of the consumer, waiting up to ``wait`` seconds for the first.

        A pull for several messages lingers until it has them all or it
        expires, so the first message is pulled alone, and the rest of the
        batch with a short expiry: what is there already comes at once.
        """
        assert self._subscription is not None
        try:
            first = await self._subscription.fetch(1, timeout=wait)
        except TimeoutError:  # nats-py raises its own subclass, or on some paths the builtin itself
            return ()
        try:
            more = await self._subscription.fetch(batch - 1, timeout=_TOP_UP_WAIT)
        except Exception:  # the message in hand must not be lost (until ack_wait) for a failed top-up
            return first
        return [*first, *more]

    async def settle(self, acks: Messages, naks: Messages) -> None:
        """Acknowledge ``acks``; ask for ``naks`` to be delivered again (to any replica)."""
        for message in acks:
            await message.ack()
        for message in naks:
            await message.nak()

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
