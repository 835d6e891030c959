"""Talking to the test NATS server directly (nats-py on a private asyncio loop,
so the tests can do it from asyncio and trio alike), and reading a service's store."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any, TypeVar

import anyio
import nats
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


async def consumer_pending(stream: str, consumer: str) -> tuple[int, int]:
    """(messages not yet delivered, messages delivered and not acknowledged) of a consumer."""

    async def info(js: JetStreamContext) -> tuple[int, int]:
        found = await js.consumer_info(stream, consumer)
        return found.num_pending or 0, found.num_ack_pending or 0

    return await jetstream(info)


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
