"""A TCP proxy in front of the NATS server, which a test can cut off and bring back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.abc
from anyio.abc import SocketAttribute, SocketStream

_LINK_ERRORS = (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError)


class Proxy:
    """Forwards each connection on ``port`` to the server.

    `cut` drops every connection and stops listening, so the server looks
    gone (connections are refused); `restore` listens again on the same port.

    Attributes:
        port: where it listens, on 127.0.0.1.
    """

    def __init__(self, server_port: int, port: int, task_group: anyio.abc.TaskGroup) -> None:
        self.port = port
        self._server_port = server_port
        self._task_group = task_group
        self._serving = anyio.CancelScope()
        self._stopped = anyio.Event()
        self._connected = anyio.Event()

    async def start(self, listener: anyio.abc.SocketListener) -> None:
        """Serve ``listener`` until `cut`."""
        self._serving = anyio.CancelScope()
        self._stopped = anyio.Event()
        self._connected = anyio.Event()
        self._task_group.start_soon(self._serve, listener, self._serving, self._stopped)

    async def cut(self) -> None:
        """Drop every connection and stop listening; returns once the port is closed."""
        self._serving.cancel()
        await self._stopped.wait()

    async def restore(self) -> None:
        """Accept connections again."""
        await self.start(await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=self.port))

    async def connected(self) -> None:
        """Wait until a client has connected since the last start (or `restore`)."""
        await self._connected.wait()

    async def _serve(self, listener: anyio.abc.SocketListener, scope: anyio.CancelScope, stopped: anyio.Event) -> None:
        try:
            with scope:
                async with listener:
                    await listener.serve(self._link)
        finally:
            stopped.set()

    async def _link(self, client: SocketStream) -> None:
        self._connected.set()
        async with client:
            try:
                server = await anyio.connect_tcp("127.0.0.1", self._server_port)
                async with server, anyio.create_task_group() as pipes:
                    pipes.start_soon(_pipe, client, server, pipes.cancel_scope)
                    pipes.start_soon(_pipe, server, client, pipes.cancel_scope)
            except _LINK_ERRORS:
                pass


async def _pipe(source: SocketStream, sink: SocketStream, link: anyio.CancelScope) -> None:
    try:
        async for chunk in source:
            await sink.send(chunk)
    except _LINK_ERRORS:
        pass
    link.cancel()  # one side closed: close the other


@asynccontextmanager
async def proxy(server_port: int) -> AsyncIterator[Proxy]:
    """A running `Proxy` to ``server_port``, on a free port of 127.0.0.1."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    async with anyio.create_task_group() as task_group:
        running = Proxy(server_port, listener.extra(SocketAttribute.local_port), task_group)
        await running.start(listener)
        yield running
        task_group.cancel_scope.cancel()
