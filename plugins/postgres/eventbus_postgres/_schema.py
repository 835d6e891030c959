"""The store's tables, and migrating a schema to the version this code expects.

Each entry of `MIGRATIONS` takes a schema from one version to the next. They
run in one transaction under an advisory lock, so stores opening at the same
time never race to create tables, and a failed migration leaves nothing
half-done. ``schema_version`` keeps one row per applied version. A release that
changes the tables appends a migration here; it never edits an old one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from asyncpg.pool import PoolConnectionProxy

from eventbus.exceptions import StoreError

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "migrate", "quoted"]

_V1 = (
    """
    CREATE TABLE IF NOT EXISTS {s}.seq_counter (
        singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
        last_seq bigint NOT NULL
    )
    """,
    "INSERT INTO {s}.seq_counter (singleton, last_seq) VALUES (true, 0) ON CONFLICT DO NOTHING",
    """
    CREATE TABLE IF NOT EXISTS {s}.records (
        seq bigint PRIMARY KEY,
        type text NOT NULL,
        version integer NOT NULL,
        event_id uuid NOT NULL,
        correlation_id uuid,
        causation_id uuid,
        recorded_at bigint NOT NULL,
        headers jsonb,
        data text NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS records_type_seq ON {s}.records (type, seq)",
    """
    CREATE TABLE IF NOT EXISTS {s}.checkpoints (
        name text PRIMARY KEY,
        position bigint NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now()
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS {s}.dead_letters (
        id uuid PRIMARY KEY,
        added bigint GENERATED ALWAYS AS IDENTITY,
        subscription text NOT NULL,
        seq bigint NOT NULL,
        type text NOT NULL,
        version integer NOT NULL,
        event_id uuid NOT NULL,
        correlation_id uuid,
        causation_id uuid,
        recorded_at bigint NOT NULL,
        headers jsonb,
        data text NOT NULL,
        error_type text NOT NULL,
        error_message text NOT NULL,
        traceback text NOT NULL,
        attempts integer NOT NULL,
        first_failed_at timestamptz NOT NULL,
        last_failed_at timestamptz NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS dead_letters_subscription ON {s}.dead_letters (subscription, added)",
)

_V2 = (
    # the causation depth, so max_causation_depth holds across processes;
    # rows written before it count as depth 0 (the start of a chain).
    "ALTER TABLE {s}.records ADD COLUMN IF NOT EXISTS depth integer NOT NULL DEFAULT 0",
    "ALTER TABLE {s}.dead_letters ADD COLUMN IF NOT EXISTS depth integer NOT NULL DEFAULT 0",
)

_V3 = (
    # first_seq: where retention has cut the history (every record from it to
    # the head is kept). A row of its own, so compacting never locks seq_counter.
    """
    CREATE TABLE IF NOT EXISTS {s}.history (
        singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
        first_seq bigint NOT NULL
    )
    """,
    "INSERT INTO {s}.history (singleton, first_seq) VALUES (true, 1) ON CONFLICT DO NOTHING",
    "CREATE INDEX IF NOT EXISTS dead_letters_seq ON {s}.dead_letters (seq)",
)

_V4 = (
    # leases on durable subscriptions' names, so one process at a time delivers
    # each; expires_at is on the server's clock, which every client shares.
    """
    CREATE TABLE IF NOT EXISTS {s}.leases (
        name text PRIMARY KEY,
        holder text NOT NULL,
        expires_at timestamptz NOT NULL
    )
    """,
)

_V5 = (
    # fenced leases: token grows each time a lease changes hands, and a fenced
    # checkpoint save is refused once it is not the saver's any more. A
    # released lease keeps its row (expired), so its token is never reused.
    "ALTER TABLE {s}.leases ADD COLUMN IF NOT EXISTS token bigint NOT NULL DEFAULT 1",
)

_V6 = (
    # event ids are unique (an append of an id stored already keeps the stored
    # seq). repeat_of: NULL, except on a row that an older eventbus stored again
    # under an id already held, where it is the first such row's seq; such rows
    # stay readable and out of the unique index.
    "ALTER TABLE {s}.records ADD COLUMN IF NOT EXISTS repeat_of bigint",
    """
    UPDATE {s}.records AS record SET repeat_of = repeats.first
    FROM (SELECT seq, min(seq) OVER (PARTITION BY event_id) AS first FROM {s}.records) AS repeats
    WHERE repeats.seq = record.seq AND repeats.first < repeats.seq
    """,
    "CREATE UNIQUE INDEX IF NOT EXISTS records_event_id ON {s}.records (event_id) WHERE repeat_of IS NULL",
)

MIGRATIONS: Sequence[Sequence[str]] = (_V1, _V2, _V3, _V4, _V5, _V6)
"""``MIGRATIONS[n]`` takes a schema from version ``n`` to ``n + 1``; ``{s}`` is the quoted schema."""

SCHEMA_VERSION = len(MIGRATIONS)
"""The schema version this release reads and writes."""


def quoted(schema: str) -> str:
    """``schema`` as a quoted SQL identifier (names are validated by `PostgresOptions`)."""
    return f'"{schema}"'


async def migrate(conn: PoolConnectionProxy[Any], schema: str, where: str, *, create: bool = True) -> None:
    """Create ``schema`` and its tables, or bring them to `SCHEMA_VERSION`.

    A schema already at this version is only read, so a role without
    ``CREATE`` privileges can use tables that an administrator created.
    ``where`` names the database in error messages. With ``create=False`` a
    missing schema (or one without the store's tables) raises `StoreError`
    and nothing is created.
    """
    s = quoted(schema)
    version = await _version(conn, s)
    if _usable(version, schema, where):
        return
    if version == 0 and not create:
        exists = await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", schema)
        problem = "holds no eventbus store" if exists else "does not exist"
        raise StoreError(f"schema {schema!r} at {where} {problem} (not created: the store must exist already)")
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"eventbus_postgres:{schema}")
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {s}.schema_version ("
            "version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        current = await _version(conn, s)
        if _usable(current, schema, where):
            return
        for version in range(current, SCHEMA_VERSION):
            for statement in MIGRATIONS[version]:
                await conn.execute(statement.format(s=s))
            await conn.execute(f"INSERT INTO {s}.schema_version (version) VALUES ($1)", version + 1)


def _usable(version: int, schema: str, where: str) -> bool:
    """Whether ``version`` is the current one; raises `StoreError` if it is newer."""
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"schema {schema!r} at {where} is at version {version}, newer than this "
            f"eventbus-postgres understands ({SCHEMA_VERSION}); upgrade eventbus-postgres"
        )
    return version == SCHEMA_VERSION


async def _version(conn: PoolConnectionProxy[Any], s: str) -> int:
    if await conn.fetchval("SELECT to_regclass($1)", f"{s}.schema_version") is None:
        return 0
    version = await conn.fetchval(f"SELECT coalesce(max(version), 0) FROM {s}.schema_version")
    return int(version)
