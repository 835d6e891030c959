"""The PostgreSQL server the store benchmarks use, a schema of their own on it,
and the raw-asyncpg floors the PostgreSQL store is measured against."""

from __future__ import annotations

import gc
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import astuple, dataclass
from typing import Any

import asyncpg
from eventbus_postgres import PostgresStore
from eventbus_postgres._statements import LAYOUT, Statements, record_columns

from eventbus import StoreError
from eventbus.store.codec import RECORD_FIELDS, record_values

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


@dataclass(frozen=True)
class PostgresFloors:
    """Raw asyncpg on one connection over the rows a store's schema holds, rows/s.

    Attributes:
        copy: ``copy_records_to_table`` of the rows, already built (seq
            included), in batches (the floor of ``publish_many``).
        statement: the store's own append statement (``unnest`` of column
            arrays), the values already encoded, in batches.
        select: paged ``SELECT`` of the store's columns, rows left as asyncpg
            returns them (the floor of ``Store.read``).
        decoded: the same ``SELECT`` with each row's JSON validated by the
            event class's pydantic validator (the floor of a decoded replay).
    """

    copy: float = 0.0
    statement: float = 0.0
    select: float = 0.0
    decoded: float = 0.0

    def best(self, other: PostgresFloors) -> PostgresFloors:
        """The better of two rounds, figure by figure."""
        return PostgresFloors(*(max(a, b) for a, b in zip(astuple(self), astuple(other), strict=True)))


async def _timed(run: Callable[[], Awaitable[object]]) -> float:
    gc.collect()
    started = time.perf_counter()
    await run()
    return time.perf_counter() - started


async def read_floors(schema: str, n: int, batch: int, validate: Callable[[Any], object]) -> PostgresFloors:
    """``select`` and ``decoded`` over the first ``n`` rows of ``schema``, pages of ``batch``
    (``validate``: the event class's ``__pydantic_validator__.validate_json``)."""
    select = f'SELECT {", ".join(RECORD_FIELDS)} FROM "{schema}".records WHERE seq >= $1 AND seq <= $2 '
    select += "ORDER BY seq LIMIT $3"
    connection = await asyncpg.connect(POSTGRES_URL)
    try:

        async def read(decode: Callable[[Any], object] | None) -> None:
            count, next_seq = 0, 1
            while next_seq <= n and (page := await connection.fetch(select, next_seq, n, batch)):
                if decode is not None:
                    for row in page:
                        decode(row[3])
                count += len(page)
                next_seq = page[-1][0] + 1
            assert count == n, count

        # untimed: a new server session pays for first touching each shared buffer it reads
        await read(None)
        return PostgresFloors(
            select=n / await _timed(lambda: read(None)), decoded=n / await _timed(lambda: read(validate))
        )
    finally:
        await connection.close()


async def write_floors(schema: str, n: int, batch: int) -> PostgresFloors:
    """``copy`` and ``statement``: the first ``n`` rows of ``schema`` written again in
    batches of ``batch``, into the empty tables of a schema of their own, dropped afterwards."""
    target = f"{schema}_floor"
    store = PostgresStore(POSTGRES_URL, schema=schema)
    await store.open()
    try:
        records = [r for start in range(1, n + 1, batch) for r in await store.read(start, limit=batch)]
    finally:
        await store.close()
    batches = [
        (len(chunk), record_columns(record_values(r, LAYOUT) for r in chunk))
        for chunk in (records[i : i + batch] for i in range(0, n, batch))
    ]
    rows = [(r.seq, *record_values(r, LAYOUT)) for r in records]
    append = Statements(target).append
    empty = PostgresStore(POSTGRES_URL, schema=target)
    await empty.open()
    await empty.close()
    connection = await asyncpg.connect(POSTGRES_URL)
    try:

        async def statement() -> None:
            for size, values in batches:
                await connection.fetchval(append, size, *values)

        async def copy() -> None:
            await connection.execute(f'TRUNCATE "{target}".records')
            for start in range(0, n, batch):
                await connection.copy_records_to_table(
                    "records", schema_name=target, columns=RECORD_FIELDS, records=rows[start : start + batch]
                )

        return PostgresFloors(statement=n / await _timed(statement), copy=n / await _timed(copy))
    finally:
        await connection.close()
        await drop_schemas(target)


CPU_APPLICATION = "eventbus-bench-cpu"
"""The ``application_name`` of the sessions whose server CPU `cpu_seconds` counts."""


async def cpu_seconds() -> tuple[float, float]:
    """(CPU seconds of this process, of the server sessions named `CPU_APPLICATION`)
    so far, from ``/proc``: the server must run on this machine."""
    connection = await asyncpg.connect(POSTGRES_URL)
    try:
        rows = await connection.fetch(
            "SELECT pid FROM pg_stat_activity WHERE application_name LIKE $1", CPU_APPLICATION + "%"
        )
    finally:
        await connection.close()
    return time.process_time(), sum(_process_cpu(pid) for (pid,) in rows)


def _process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of process ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU per event of this process and of its server sessions, over an ``async with`` block.

    On a busy machine the wall clock measures the other work as much as
    this one; CPU time does not, so the ratios of these are steadier.
    """

    async def __aenter__(self) -> CpuMeter:
        gc.collect()
        self._start = await cpu_seconds()
        return self

    async def __aexit__(self, *exc: object) -> None:
        end = await cpu_seconds()
        self.client, self.server = (after - before for after, before in zip(end, self._start, strict=True))

    def per_event(self, n: int) -> float:
        """Microseconds of CPU per event, this process and the server together."""
        return (self.client + self.server) / n * 1e6

    def line(self, name: str, n: int) -> str:
        """``name``: CPU per event, split between this process and the server."""
        return (
            f"{name:<44}{self.per_event(n):6.2f} us/event   (this process {self.client / n * 1e6:5.2f}, "
            f"server {self.server / n * 1e6:5.2f})"
        )
