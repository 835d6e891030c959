"""A projection process killed with SIGKILL again and again, mid-stream, on a
real SQLite file and the real PostgreSQL server: afterwards the read model
holds every event's effect exactly once."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import uuid4

import anyio
import pytest
from child_process import read_line, running
from postgres_server import POSTGRES_URL, admin_sql
from projection_child import Counted

from eventbus import EventBus

_CHILD = Path(__file__).with_name("projection_child.py")
_EVENTS = 400
_KILLS = 6


@dataclass
class _Database:
    """Where the projection writes: the store's URL, its table, and how to read it back."""

    url: str
    table: str
    placeholder: str
    path: Path | None = None

    def rows(self, query: str) -> list[tuple[Any, ...]]:
        if self.path is not None:
            connection = sqlite3.connect(self.path, timeout=10)
            try:
                with connection:
                    return connection.execute(query).fetchall()
            finally:
                connection.close()
        return [tuple(row) for row in admin_sql(query)]


@pytest.fixture(params=["sqlite", "postgresql"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[_Database]:
    if request.param == "sqlite":
        path = tmp_path / "events.db"
        database = _Database(f"sqlite:///{path}", "counted", "?", path)
        await anyio.to_thread.run_sync(database.rows, "CREATE TABLE counted (n INTEGER NOT NULL)")
        yield database
        return
    schema = f"eventbus_test_{uuid4().hex[:16]}"
    database = _Database(f"{POSTGRES_URL}?schema={schema}", f'"{schema}".counted', "$1")
    try:
        async with EventBus(store=database.url):  # creates the schema
            pass
        await anyio.to_thread.run_sync(database.rows, f"CREATE TABLE {database.table} (n INTEGER NOT NULL)")
        yield database
    finally:
        await anyio.to_thread.run_sync(admin_sql, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def test_a_projection_killed_again_and_again_applies_each_event_once(
    database: _Database, anyio_backend: str
) -> None:
    async with EventBus(store=database.url) as bus:
        await bus.publish_many([Counted(n=n) for n in range(_EVENTS)])

    args = (database.url, database.table, database.placeholder, str(_EVENTS - 1), anyio_backend)
    last = f"applied {_EVENTS - 1}"
    killed_mid_stream = 0
    for _ in range(_KILLS):
        async with running(_CHILD, *args) as (process, out):
            with anyio.fail_after(60):
                assert await read_line(out) == "started"
                for _ in range(random.randint(5, 40)):  # killed mid-stream, after a random number of events
                    if await read_line(out) == last:
                        break
            process.kill()  # SIGKILL
            await process.wait()
        if await _distinct(database) == _EVENTS:
            break  # every event applied before this kill
        killed_mid_stream += 1
    else:
        async with running(_CHILD, *args) as (_, out):
            with anyio.fail_after(60):
                while (await read_line(out)) != "stopped":
                    pass
    counts = await anyio.to_thread.run_sync(
        database.rows, f"SELECT count(*), count(DISTINCT n), min(n), max(n) FROM {database.table}"
    )
    assert counts == [(_EVENTS, _EVENTS, 0, _EVENTS - 1)]
    assert killed_mid_stream >= _KILLS // 2, "the children got through the events before they were killed"


async def _distinct(database: _Database) -> int:
    [(distinct,)] = await anyio.to_thread.run_sync(database.rows, f"SELECT count(DISTINCT n) FROM {database.table}")
    return int(distinct)
