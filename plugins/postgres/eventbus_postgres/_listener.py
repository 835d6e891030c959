"""`AppendListener`: waiting for appends by any process, through LISTEN/NOTIFY.

Every append notifies the schema's channel with the new head inside its own
transaction, so PostgreSQL delivers the notification exactly when the rows
become visible. One dedicated connection (not a pooled one, which would drop
its LISTEN when returned) listens for the whole store; any number of waiters
share it. Connecting, it reads the head once after LISTEN is in force, so an
append committed before that is not missed either.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

__all__ = ["AppendListener"]

Connect = Callable[[], Awaitable["asyncpg.Connection[Any]"]]


class AppendListener:
    """Knows the newest head any process has committed, and wakes waiters when it grows.

    Lives on the asyncio loop that owns the store's connections. If the
    listening connection is lost, waiters return early (the contract allows
    it); the next wait connects again.
    """

    def __init__(self, connect: Connect, channel: str, head_query: str) -> None:
        self._connect = connect
        self._channel = channel
        self._head_query = head_query
        self._conn: asyncpg.Connection[Any] | None = None
        self._connecting: asyncio.Future[None] | None = None
        """The task connecting and listening, while there is one (see `_listen_once`)."""
        self._latest = 0
        self._changed = asyncio.Event()

    async def wait(self, after_seq: int) -> None:
        """Return once a seq greater than ``after_seq`` is committed, or the connection is lost."""
        if self._conn is None:
            await self._listen_once()
        while True:
            changed = self._changed
            if self._latest > after_seq or self._conn is None:
                return
            await changed.wait()

    async def close(self) -> None:
        """Stop listening and wake every waiter; a connection being made is
        waited for (``connect_timeout`` bounds it) and closed."""
        connecting, self._connecting = self._connecting, None
        if connecting is not None:
            await asyncio.gather(connecting, return_exceptions=True)
        conn, self._conn = self._conn, None
        self._wake()
        if conn is not None:
            await conn.close()

    async def _listen_once(self) -> None:
        """Connect and listen, in a task of its own that every waiter shares:
        a waiter cancelled meanwhile (the bus stopping) leaves it be, because
        asyncpg cancelled halfway through connecting leaves a future whose
        error nobody retrieves."""
        connecting = self._connecting
        if connecting is None or connecting.done():
            connecting = self._connecting = asyncio.ensure_future(self._listen())
            connecting.add_done_callback(_retrieved)
        await asyncio.shield(connecting)

    async def _listen(self) -> None:
        if self._conn is None:
            conn = await self._connect()
            try:
                await conn.add_listener(self._channel, self._on_notify)
                head = await conn.fetchval(self._head_query)
            except BaseException:
                conn.terminate()
                raise
            conn.add_termination_listener(self._on_terminated)
            self._conn = conn
            self._advance(int(head))

    def _on_notify(self, conn: object, pid: int, channel: str, payload: object) -> None:
        self._advance(int(str(payload)))

    def _on_terminated(self, conn: object) -> None:
        if conn is self._conn:
            self._conn = None
            self._wake()

    def _advance(self, head: int) -> None:
        if head > self._latest:
            self._latest = head
            self._wake()

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()


def _retrieved(task: asyncio.Future[None]) -> None:
    """Mark a connecting task's error as seen: the waiters that shared it got it, or are gone."""
    if not task.cancelled():
        task.exception()
