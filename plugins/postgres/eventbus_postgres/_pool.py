"""Lending the store's pooled connections, and taking them back.

Two things about a connection decide how it is lent and taken back:

- **Whether it ran the application's statements.** asyncpg resets every
  connection given back to a pool: it rolls back a transaction left open and
  drops its listeners, on the client, then sends ``pg_advisory_unlock_all();
  CLOSE ALL; UNLISTEN *; RESET ALL`` and waits for the answer. The store's
  own statements change nothing that query undoes, so for them it is a second
  round trip per statement, each of which, on a busy machine, waits for the
  scheduler to wake the server's process and this one again. Only a
  connection lent to a projection's delivery runs the application's
  statements, which may (``SET``, ``LISTEN``, advisory locks); `PoolResets`
  remembers those and resets them fully.
- **Whether asyncpg refused the statement before sending any of it**
  (`unsent`). A server that ends an idle session (``pg_terminate_backend``,
  a restart, ``idle_session_timeout``) sends a ``FATAL`` error and then closes
  the socket. asyncpg does not expect a message while idle, reads it as a
  protocol error and waits for the end of it; until it has read the close too,
  the connection looks open, the pool lends it, and its next statement is
  refused on the client (asyncpg closes the connection then). Nothing
  reached the server, so `retried_unsent` runs the work again on another
  connection. (SQLAlchemy treats the same error as a disconnect:
  sqlalchemy/sqlalchemy#13241.)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any, TypeVar

import asyncpg

__all__ = [
    "DRIVER_ERRORS",
    "RELEASE_TIMEOUT",
    "PoolResets",
    "definite",
    "give_back",
    "pooled",
    "retried_unsent",
    "unsent",
]

T = TypeVar("T")

DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError)
"""What asyncpg raises for server errors, broken connections, its own confusion
after one (``InternalClientError``) and network failures (``TimeoutError`` is
an ``OSError``); the store reports them as `StoreError`, the driver's chained."""

RELEASE_TIMEOUT = 10.0
"""Seconds giving a connection back to the pool may take (its reset); past
that the pool closes the connection."""


def definite(exc: BaseException) -> bool:
    """Whether ``exc`` from a statement says for sure that it committed nothing:
    the server refused it with an error of severity ``ERROR``, after which
    the session goes on. Anything else (the connection lost, a ``FATAL``
    ending the session, which may come after a commit, the client confused)
    leaves the outcome to be found out."""
    if not isinstance(exc, asyncpg.PostgresError):
        return False
    severity = exc.severity_en or exc.severity
    return isinstance(severity, str) and severity.upper() == "ERROR"


def unsent(exc: BaseException) -> bool:
    """Whether asyncpg refused a statement before sending any of it, because
    the connection's protocol was still in another operation's state (its
    ``_set_state``, which raises before anything is written)."""
    return isinstance(exc, asyncpg.InternalClientError) and str(exc).startswith("cannot switch to state")


class PoolResets:
    """The pool's ``reset=``: which connections ran the application's statements.

    Connections are known by their server session's pid, which the pool's
    proxies and the connections under them both report.
    """

    def __init__(self) -> None:
        self._lent: set[int] = set()

    def lend(self, conn: Any) -> None:
        """``conn`` is lent to the application (a projection's delivery) until it is given back."""
        self._lent.add(conn.get_server_pid())

    async def reset(self, conn: Any) -> None:
        """Called by the pool for a connection given back (asyncpg has already
        rolled back an open transaction): the full reset if it was lent."""
        pid = conn.get_server_pid()
        if pid in self._lent:
            self._lent.discard(pid)
            await conn.execute(conn.get_reset_query())


async def give_back(pool: asyncpg.Pool[Any], conn: Any) -> None:
    """Release ``conn`` to ``pool`` within `RELEASE_TIMEOUT`, without raising:
    what ran on it stands, whether or not the pool can reset it (it closes
    one it cannot), so a failed give-back never turns a commit into an error.

    Giving back is bounded because asyncpg waits, with no limit of its own,
    for a cancelled statement's cancel request, which goes over a new
    connection that may never be answered when the network is what failed.
    """
    with suppress(*DRIVER_ERRORS):
        await pool.release(conn, timeout=RELEASE_TIMEOUT)


async def pooled(pool: asyncpg.Pool[Any], work: Callable[[Any], Awaitable[T]]) -> T:
    """``work(conn)`` on a connection of ``pool``, given back (`give_back`)
    afterwards; see `retried_unsent`."""

    async def attempt() -> T:
        conn = await pool.acquire()
        try:
            return await work(conn)
        finally:
            await give_back(pool, conn)

    return await retried_unsent(pool, attempt)


async def retried_unsent(pool: asyncpg.Pool[Any], attempt: Callable[[], Awaitable[T]]) -> T:
    """``attempt()``, which borrows a connection of ``pool`` and gives it back;
    again while asyncpg refuses its statement before sending it (`unsent`).

    asyncpg closes each connection that refused, so after as many tries as
    the pool holds connections, the next one runs on a new connection.
    """
    tries = 1
    while True:
        try:
            return await attempt()
        except asyncpg.InternalClientError as exc:
            if tries > pool.get_max_size() or not unsent(exc):
                raise
            tries += 1
