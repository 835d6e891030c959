"""The PostgreSQL server the core tests talk to, and statements run behind any store's back."""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import asyncpg

POSTGRES_URL = os.environ.get("EVENTBUS_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
"""The test server (trust auth, database ``test`` by default)."""


def admin_sql(query: str, *args: Any) -> list[asyncpg.Record]:
    """Run one statement on a fresh connection, on an asyncio loop in a thread of
    its own, so it works from sync code and from asyncio and trio tests alike."""

    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(POSTGRES_URL, timeout=5)
        try:
            return await conn.fetch(query, *args)
        finally:
            await conn.close()

    with ThreadPoolExecutor(max_workers=1) as executor:
        return executor.submit(asyncio.run, run()).result()


def with_password(url: str, password: str) -> str:
    """``url`` with ``password`` in its user info (trust auth ignores it)."""
    scheme, _, rest = url.partition("://")
    user_info, _, host = rest.rpartition("@")
    return f"{scheme}://{user_info or 'postgres'}:{password}@{host}"
