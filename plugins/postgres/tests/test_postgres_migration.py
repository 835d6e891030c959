"""Upgrading a schema written by an older eventbus-postgres in place.

The schema is built here with that version's own DDL (version 1, before the
causation depth was stored; version 4, before leases carried a fencing token
and event ids were unique) and filled the way that release wrote rows, then
opened by today's store: everything is still there, and what the new version
adds is kept from then on.
"""

from __future__ import annotations

import time
from dataclasses import replace
from uuid import uuid4

import anyio
import pytest
from eventbus_postgres import SCHEMA_VERSION, PostgresStore
from postgres_events import Tick
from postgres_helpers import admin_sql, store_url

from eventbus import LeaseLost
from eventbus.store import LeaseFence
from eventbus.testing.conformance import new_record

_V1_DDL = [
    'CREATE SCHEMA "{s}"',
    'CREATE TABLE "{s}".schema_version (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())',
    'CREATE TABLE "{s}".seq_counter (singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton), '
    "last_seq bigint NOT NULL)",
    'CREATE TABLE "{s}".records (seq bigint PRIMARY KEY, type text NOT NULL, version integer NOT NULL, '
    "event_id uuid NOT NULL, correlation_id uuid, causation_id uuid, recorded_at bigint NOT NULL, headers jsonb, "
    "data text NOT NULL)",
    'CREATE INDEX records_type_seq ON "{s}".records (type, seq)',
    'CREATE TABLE "{s}".checkpoints (name text PRIMARY KEY, position bigint NOT NULL, '
    "updated_at timestamptz NOT NULL DEFAULT now())",
    'CREATE TABLE "{s}".dead_letters (id uuid PRIMARY KEY, added bigint GENERATED ALWAYS AS IDENTITY, '
    "subscription text NOT NULL, seq bigint NOT NULL, type text NOT NULL, version integer NOT NULL, "
    "event_id uuid NOT NULL, correlation_id uuid, causation_id uuid, recorded_at bigint NOT NULL, headers jsonb, "
    "data text NOT NULL, error_type text NOT NULL, error_message text NOT NULL, traceback text NOT NULL, "
    "attempts integer NOT NULL, first_failed_at timestamptz NOT NULL, last_failed_at timestamptz NOT NULL)",
    'CREATE INDEX dead_letters_subscription ON "{s}".dead_letters (subscription, added)',
    'INSERT INTO "{s}".schema_version (version) VALUES (1)',
]

_V2_TO_V4_DDL = [
    'ALTER TABLE "{s}".records ADD COLUMN depth integer NOT NULL DEFAULT 0',
    'ALTER TABLE "{s}".dead_letters ADD COLUMN depth integer NOT NULL DEFAULT 0',
    'CREATE TABLE "{s}".history (singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton), '
    "first_seq bigint NOT NULL)",
    'INSERT INTO "{s}".history (singleton, first_seq) VALUES (true, 1)',
    'CREATE INDEX dead_letters_seq ON "{s}".dead_letters (seq)',
    'CREATE TABLE "{s}".leases (name text PRIMARY KEY, holder text NOT NULL, expires_at timestamptz NOT NULL)',
    'INSERT INTO "{s}".schema_version (version) VALUES (2), (3), (4)',
]


async def _sql(query: str, *args: object) -> list[tuple[object, ...]]:
    rows = await anyio.to_thread.run_sync(admin_sql, query, *args)
    return [tuple(row) for row in rows]


async def _depth_columns(schema: str) -> set[str]:
    rows = await _sql(
        "SELECT table_name FROM information_schema.columns WHERE table_schema = $1 AND column_name = 'depth'", schema
    )
    return {str(name) for (name,) in rows}


async def test_a_version_1_schema_is_upgraded_in_place_and_keeps_everything(schema: str) -> None:
    for statement in _V1_DDL:
        await _sql(statement.format(s=schema))
    ids = [uuid4() for _ in range(3)]
    now = time.time_ns()
    await _sql(f'INSERT INTO "{schema}".seq_counter (singleton, last_seq) VALUES (true, 3)')
    for n, event_id in enumerate(ids, start=1):
        await _sql(
            f'INSERT INTO "{schema}".records (seq, type, version, event_id, recorded_at, headers, data) '
            "VALUES ($1, $2, 1, $3, $4, $5, $6)",
            n,
            Tick.__event_type__,
            event_id,
            now + n,
            '{"k": "v"}',
            Tick(n=n).model_dump_json(),
        )
    await _sql(
        f'INSERT INTO "{schema}".dead_letters (id, subscription, seq, type, version, event_id, recorded_at, data, '
        "error_type, error_message, traceback, attempts, first_failed_at, last_failed_at) "
        "VALUES ($1, 'audit', 2, $2, 1, $3, $4, $5, 'builtins.ValueError', 'bad', 'Traceback', 2, now(), now())",
        uuid4(),
        Tick.__event_type__,
        ids[1],
        now + 2,
        Tick(n=2).model_dump_json(),
    )
    await _sql(f"INSERT INTO \"{schema}\".checkpoints (name, position) VALUES ('audit', 2)")
    assert await _depth_columns(schema) == set()

    store = PostgresStore(store_url(schema))
    await store.open()
    try:
        records = await store.read()
        assert [record.event_id for record in records] == ids
        assert [record.event for record in records] == [Tick(n=n) for n in (1, 2, 3)]
        assert [record.depth for record in records] == [0, 0, 0], "rows from before the depth start chains"
        assert dict(records[0].headers) == {"k": "v"}
        (letter,) = await store.dead_letters()
        assert (letter.subscription, letter.attempts, letter.record.seq, letter.record.depth) == ("audit", 2, 2, 0)
        assert await store.load_checkpoint("audit") == 2
        assert await store.head() == 3

        deep = new_record(Tick(n=4))
        deep.depth = 4
        await store.append([deep])
        assert deep.seq == 4
        await store.add_dead_letters([replace(letter, record=deep)])
    finally:
        await store.close()

    assert await _sql(f'SELECT max(version) FROM "{schema}".schema_version') == [(SCHEMA_VERSION,)]
    assert SCHEMA_VERSION >= 2
    assert await _depth_columns(schema) == {"records", "dead_letters"}
    reopened = PostgresStore(store_url(schema))
    await reopened.open()
    try:
        assert [record.depth for record in await reopened.read()] == [0, 0, 0, 4]
        (letter,) = await reopened.dead_letters()
        assert letter.record.depth == 4
    finally:
        await reopened.close()


async def test_leases_of_a_version_4_schema_get_a_fencing_token(schema: str) -> None:
    for statement in [*_V1_DDL, *_V2_TO_V4_DDL]:
        await _sql(statement.format(s=schema))
    await _sql(f'INSERT INTO "{schema}".seq_counter (singleton, last_seq) VALUES (true, 0)')
    await _sql(
        f'INSERT INTO "{schema}".leases (name, holder, expires_at) '
        "VALUES ('audit', 'old', now() + interval '1 hour'), ('billing', 'gone', now() - interval '1 hour')"
    )

    store = PostgresStore(store_url(schema))
    await store.open()
    try:
        assert await store.acquire_lease("audit", "new", 30) is None, "a lease held before the upgrade still holds"
        assert await store.acquire_lease("audit", "old", 30) == 1, "its holder renews it, with the first token"
        await store.save_checkpoints({"audit": 3}, fence=LeaseFence("audit", 1))
        assert await store.acquire_lease("billing", "new", 30) == 2, "an expired one changes hands"
        with pytest.raises(LeaseLost):
            await store.save_checkpoints({"billing": 3}, fence=LeaseFence("billing", 1))
        assert await store.load_checkpoint("audit") == 3
        assert await store.load_checkpoint("billing") is None
    finally:
        await store.close()


async def test_records_an_older_version_stored_twice_stay_readable_and_ids_are_unique_from_then_on(
    schema: str,
) -> None:
    for statement in [*_V1_DDL, *_V2_TO_V4_DDL]:
        await _sql(statement.format(s=schema))
    twice, once = uuid4(), uuid4()
    await _sql(f'INSERT INTO "{schema}".seq_counter (singleton, last_seq) VALUES (true, 3)')
    for seq, event_id in enumerate([twice, once, twice], start=1):
        await _sql(
            f'INSERT INTO "{schema}".records (seq, type, version, event_id, recorded_at, data) '
            "VALUES ($1, $2, 1, $3, $4, $5)",
            seq,
            Tick.__event_type__,
            event_id,
            time.time_ns(),
            f'{{"n":{seq}}}',
        )

    store = PostgresStore(store_url(schema))
    await store.open()
    try:
        assert [(record.seq, record.event_id) for record in await store.read()] == [(1, twice), (2, once), (3, twice)]
        again = [new_record(Tick(n=9), event_id=twice), new_record(Tick(n=10), event_id=once)]
        assert sorted(await store.append(again)) == [0, 1]
        assert [record.seq for record in again] == [1, 2], "the first record of a repeated id is the stored one"
        assert await store.head() == 3
    finally:
        await store.close()
