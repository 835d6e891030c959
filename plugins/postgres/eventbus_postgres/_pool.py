"""Giving the store's pooled connections back without a round trip of their own.

asyncpg resets every connection given back to a pool: it rolls back a
transaction left open and drops its listeners, on the client, then sends
``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`` and waits for
the answer. The store's own statements change nothing that query undoes, so
for them it is a second round trip per statement, each of which, on a busy
machine, waits for the scheduler to wake the server's process and this one
again. Only a connection lent to a projection's delivery runs
the application's statements, which may (``SET``, ``LISTEN``, advisory
locks); `PoolResets` remembers those and resets them fully.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PoolResets"]


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
