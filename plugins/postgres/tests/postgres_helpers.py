"""Helpers shared by the PostgreSQL store's tests and the child processes they start."""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from uuid import uuid4

import asyncpg

POSTGRES_URL = os.environ.get("EVENTBUS_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
"""The server the tests use (trust auth, database ``test`` by default)."""

_SCHEMA_PREFIX = "eventbus_test_"


def admin_sql(query: str, *args: Any) -> list[asyncpg.Record]:
    """Run one statement on a fresh connection, on an asyncio loop in a thread of its own.

    Works from anywhere: sync fixtures, asyncio tests, trio tests (await it
    through ``anyio.to_thread.run_sync``). It goes behind any store's back.
    """

    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(POSTGRES_URL, timeout=5)
        try:
            return await conn.fetch(query, *args)
        finally:
            await conn.close()

    with ThreadPoolExecutor(max_workers=1) as executor:
        return executor.submit(asyncio.run, run()).result()


def new_schema_name() -> str:
    """A schema name no other test uses."""
    return f"{_SCHEMA_PREFIX}{uuid4().hex[:16]}"


def drop_schema(schema: str) -> None:
    """Drop a test schema and everything in it."""
    admin_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def store_url(schema: str) -> str:
    """The URL of a store in ``schema`` on the test server, with a small pool."""
    return f"{POSTGRES_URL}?schema={schema}&max_pool_size=4"
