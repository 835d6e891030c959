"""A TCP proxy in front of PostgreSQL that can lose the server's answers.

Told to `AnswerLosingProxy.lose_an_answer`, it drops the first connection
on which the server next answers a query, without passing the answer on
(`AnswerLosingProxy.lose_a_commit_answer`: the next connection to send a
``COMMIT``, when the server answers it):
the server has run (and, for an autocommit statement, committed) what the
client sent, and the client sees its connection reset. That is the fault
behind an ambiguous commit, made on purpose: PostgreSQL writes a
statement's results and its ``ReadyForQuery`` only once the statement's
implicit transaction has committed. Connections still being set up (TLS
negotiation, start-up, authentication) keep their answers, so a client
always gets connected again.

Told to `AnswerLosingProxy.hold_server_closes`, it keeps a connection open
to the client after the server closed it, until
`AnswerLosingProxy.let_closes_through` (or the client sends anything more):
what a client sees when the server ends an idle session and the end of the
stream reaches it late, after the server's last message.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.abc
from anyio.abc import SocketAttribute, SocketStream

_LINK_ERRORS = (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError)
_SET_UP_AFTER = 3
"""Answers a connection gets before it counts as set up: the reply to the TLS
request, authentication, and the parameters with ``ReadyForQuery``."""


class AnswerLosingProxy:
    """Forwards each connection on ``port`` to the server at ``server_port``.

    Attributes:
        port: where it listens, on 127.0.0.1.
        lost: answers lost so far.
        server_closes: connections the server has closed so far.
    """

    def __init__(self, server_port: int, port: int) -> None:
        self.port = port
        self.lost = 0
        self._server_port = server_port
        self._to_lose = 0
        self._commits_to_lose = 0
        self._holding = False
        self._let_through = anyio.Event()
        self.server_closes = 0
        self._closed = anyio.Event()

    def lose_an_answer(self) -> None:
        """Drop the first set-up connection on which the server answers next, and the answer with it.

        One at a time: arming it again before the armed loss struck does
        nothing, so faults never pile up faster than a loaded machine
        answers (piled up, they would take every answer, settling's too).
        """
        self._to_lose = 1

    def lose_a_commit_answer(self) -> None:
        """Drop the next connection that sends a ``COMMIT`` when the server
        answers it (committed), and the answer with it; one at a time."""
        self._commits_to_lose = 1

    def hold_server_closes(self) -> None:
        """From now on, keep each connection the server closes open to the client, until `let_closes_through`."""
        self._holding = True

    def let_closes_through(self) -> None:
        """Close to the client every connection held open, and hold no more."""
        self._holding = False
        self._let_through.set()

    async def wait_server_closes(self, count: int) -> None:
        """Wait until the server has closed ``count`` connections since this proxy started."""
        while self.server_closes < count:
            await self._closed.wait()

    def _server_closed(self) -> None:
        self.server_closes += 1
        self._closed.set()
        self._closed = anyio.Event()

    async def serve(self, listener: anyio.abc.SocketListener) -> None:
        """Forward connections until cancelled."""
        async with listener:
            await listener.serve(self._link)

    async def _link(self, client: SocketStream) -> None:
        async with client:
            try:
                server = await anyio.connect_tcp("127.0.0.1", self._server_port)
                committing = anyio.Event()  # this link sent a COMMIT whose answer is to be lost
                server_gone = anyio.Event()  # the server closed this link, which is held open
                async with server, anyio.create_task_group() as pipes:
                    pipes.start_soon(self._forward, client, server, pipes.cancel_scope, False, committing, server_gone)
                    pipes.start_soon(self._forward, server, client, pipes.cancel_scope, True, committing, server_gone)
            except _LINK_ERRORS:
                pass

    async def _forward(
        self,
        source: SocketStream,
        sink: SocketStream,
        link: anyio.CancelScope,
        answers: bool,
        committing: anyio.Event,
        server_gone: anyio.Event,
    ) -> None:
        forwarded = 0
        try:
            async for chunk in source:
                if server_gone.is_set():
                    break  # the client sent more to a server that has gone: it learns now
                if not answers and self._commits_to_lose and b"COMMIT" in chunk:
                    self._commits_to_lose = 0
                    committing.set()
                lose = committing.is_set() or (self._to_lose and forwarded >= _SET_UP_AFTER)
                if answers and lose:
                    if not committing.is_set():
                        self._to_lose -= 1
                    self.lost += 1
                    break  # the answer goes nowhere, and the connection with it
                await sink.send(chunk)
                forwarded += 1
            else:
                if answers:  # the server closed the link
                    self._server_closed()
                    if self._holding:
                        server_gone.set()
                        await self._let_through.wait()
        except _LINK_ERRORS:
            pass
        link.cancel()  # one side closed or lost: close both


@asynccontextmanager
async def answer_losing_proxy(server_port: int) -> AsyncIterator[AnswerLosingProxy]:
    """A running `AnswerLosingProxy` to ``server_port``, on a free port of 127.0.0.1."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    running = AnswerLosingProxy(server_port, listener.extra(SocketAttribute.local_port))
    async with anyio.create_task_group() as task_group:
        task_group.start_soon(running.serve, listener)
        yield running
        task_group.cancel_scope.cancel()
