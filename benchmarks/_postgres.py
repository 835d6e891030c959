"""The PostgreSQL server the store benchmarks use, and a schema of their own on it."""

from __future__ import annotations

import os
import uuid

import asyncpg
from eventbus_postgres import PostgresStore

from eventbus import StoreError

POSTGRES_URL = os.environ.get("EVENTBUS_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
"""The server (``EVENTBUS_POSTGRES_URL``; trust auth, database ``test`` by default)."""

PROBE_SCHEMA = "eventbus_bench_probe"
"""The schema `postgres_schema` opens a store in to see whether the server is there."""


async def postgres_schema() -> str | None:
    """A fresh schema name on a reachable server, or None (with a note) when there is none."""
    probe = PostgresStore(POSTGRES_URL, schema=PROBE_SCHEMA, connect_timeout=3)
    try:
        await probe.open()
    except StoreError as exc:
        print(f"PostgreSQL skipped: {exc}")
        return None
    await probe.close()
    return f"eventbus_bench_{uuid.uuid4().hex[:12]}"


async def drop_schemas(*schemas: str) -> None:
    """Drop ``schemas`` and everything in them (the probe's too, when named)."""
    connection = await asyncpg.connect(POSTGRES_URL)
    try:
        for schema in schemas:
            await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await connection.close()
