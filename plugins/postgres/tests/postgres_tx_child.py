"""A child process for the transaction crash tests: publishes in its own PostgreSQL transaction.

    python postgres_tx_child.py URL SCHEMA EVENT_ID WHEN

Runs an `EventBus` on the store at URL (asyncio: the application's asyncpg
connection needs it), begins a transaction on its own asyncpg connection,
inserts an order row into SCHEMA.orders and publishes `Tick` with EVENT_ID
in it, then prints ``published <seq>``. WHEN ``before``: it stops there, the
transaction open, reading stdin (the test kills it). WHEN ``after``: it
commits, prints ``committed``, and then reads stdin.
"""

from __future__ import annotations

import sys
from uuid import UUID

import anyio
import asyncpg
from postgres_events import Tick
from postgres_helpers import POSTGRES_URL

from eventbus import EventBus


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def main(url: str, schema: str, event_id: UUID, when: str) -> None:
    conn = await asyncpg.connect(POSTGRES_URL)
    async with EventBus(store=url) as bus:
        async with bus.transaction(conn) as tx:
            await conn.execute(f'INSERT INTO "{schema}".orders (id) VALUES ($1)', event_id)
            seq = await tx.publish(Tick(n=1), event_id=event_id)
            say(f"published {seq}")
            if when == "before":
                await anyio.to_thread.run_sync(sys.stdin.readline)  # killed here, the transaction open
        say("committed")
        await anyio.to_thread.run_sync(sys.stdin.readline)  # killed here


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], UUID(sys.argv[3]), sys.argv[4], backend="asyncio")
