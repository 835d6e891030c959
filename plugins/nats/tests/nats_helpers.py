"""Talking to the test NATS server directly (nats-py on a private asyncio loop,
so the tests can do it from asyncio and trio alike), reading a service's store,
and watching what the library logs."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable, Coroutine, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio
import nats
import structlog
from eventbus_sqlite import SqliteStore
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext

from eventbus import Record

NATS_URL = os.environ.get("EVENTBUS_NATS_URL", "nats://127.0.0.1:4222")
"""The server the tests use (JetStream enabled); ``EVENTBUS_NATS_URL`` overrides it."""

T = TypeVar("T")


def new_stream_name() -> str:
    """A stream name no other test uses."""
    return f"test_{uuid.uuid4().hex[:12]}"


def run_jetstream(fn: Callable[[JetStreamContext], Coroutine[Any, Any, T]]) -> T:
    """``fn(js)`` on a connection of its own, in a fresh asyncio loop (blocking)."""

    async def main() -> T:
        client = await nats.connect(NATS_URL, allow_reconnect=False, connect_timeout=2)
        try:
            return await fn(client.jetstream())
        finally:
            await client.close()

    return asyncio.run(main())


async def jetstream(fn: Callable[[JetStreamContext], Coroutine[Any, Any, T]]) -> T:
    """`run_jetstream` from async code, on asyncio or trio (in a worker thread)."""
    return await anyio.to_thread.run_sync(run_jetstream, fn)


async def publish_raw(subject: str, payload: bytes, headers: Mapping[str, str] | None = None) -> None:
    """Publish a message to JetStream as any producer could, eventbus or not."""

    async def publish(js: JetStreamContext) -> None:
        await js.publish(subject, payload, headers=dict(headers) if headers is not None else None)

    await jetstream(publish)


async def stream_messages(stream: str) -> list[tuple[str, dict[str, str]]]:
    """Every message in ``stream``, in stream order: its subject and headers."""

    async def read(js: JetStreamContext) -> list[tuple[str, dict[str, str]]]:
        count = (await js.stream_info(stream)).state.messages
        if not count:
            return []
        config = ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
        subscription = await js.pull_subscribe(f"{stream}.>", stream=stream, config=config)
        found: list[tuple[str, dict[str, str]]] = []
        while len(found) < count:
            for message in await subscription.fetch(min(count - len(found), 1000), timeout=5):
                found.append((message.subject, dict(message.headers or {})))
                await message.ack()
        await subscription.unsubscribe()
        return found

    return await jetstream(read)


@dataclass(frozen=True)
class ConsumerState:
    """What the server says of a consumer.

    Attributes:
        pending: messages not yet delivered.
        ack_pending: messages delivered and neither acknowledged nor terminated.
        deliveries: deliveries so far, redeliveries included (its last consumer sequence).
    """

    pending: int
    ack_pending: int
    deliveries: int


async def consumer_state(stream: str, consumer: str) -> ConsumerState:
    """The server's view of ``consumer`` on ``stream`` now."""

    async def info(js: JetStreamContext) -> ConsumerState:
        found = await js.consumer_info(stream, consumer)
        delivered = found.delivered.consumer_seq if found.delivered is not None else 0
        return ConsumerState(found.num_pending or 0, found.num_ack_pending or 0, delivered or 0)

    return await jetstream(info)


class LogWatch:
    """The library's log lines while `watching_logs` is active.

    Attributes:
        lines: every line, as structlog's event dict plus its ``level``.
    """

    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []
        self._waited: dict[str, anyio.Event] = {}

    def seen(self, event: str) -> anyio.Event:
        """An event set once a line named ``event`` is logged; only for lines
        logged in the bus's own tasks (the bridge's nats-py side logs from
        another thread under trio)."""
        return self._waited.setdefault(event, anyio.Event())

    def named(self, event: str) -> list[dict[str, Any]]:
        """The lines named ``event``."""
        return [line for line in self.lines if line["event"] == event]

    def _keep(self, _: Any, level: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        self.lines.append({**event_dict, "level": level})
        waited = self._waited.get(event_dict["event"])
        if waited is not None:
            waited.set()
        raise structlog.DropEvent


@contextmanager
def watching_logs() -> Iterator[LogWatch]:
    """A `LogWatch` of what the library logs meanwhile (the application's
    structlog configuration is put back afterwards)."""
    watch = LogWatch()
    saved = structlog.get_config()
    structlog.configure(processors=[watch._keep])
    try:
        yield watch
    finally:
        structlog.configure(**saved)


async def stored_records(path: Path) -> list[Record]:
    """Every record of the SQLite store at ``path`` (another process may be writing it)."""
    store = SqliteStore(path)
    await store.open()
    try:
        records: list[Record] = []
        while page := await store.read(records[-1].seq + 1 if records else 1):
            records.extend(page)
        return records
    finally:
        await store.close()
