"""The tables of a SQLite store, their version, and how a file is brought up to it.

Every table is prefixed ``eventbus_``, so the store can share a file with an
application's own tables. ``eventbus_meta`` holds ``schema_version``.

Migrations run forward only: `MIGRATIONS` lists, for each version, the
statements that lead to it from the one before. Opening a file runs the
steps it lacks in one ``BEGIN IMMEDIATE`` transaction, so a file is at one
version or the next, never half-way, and a second process opening the same
file waits and then finds the work done. A file from a newer eventbus-sqlite
is refused with `StoreError` rather than guessed at.
"""

from __future__ import annotations

import sqlite3

from eventbus.exceptions import StoreError

__all__ = ["HAS_EXTRAS", "MIGRATIONS", "SCHEMA_VERSION", "migrate"]

HAS_EXTRAS = "(correlation_id IS NOT NULL OR causation_id IS NOT NULL OR headers IS NOT NULL OR depth IS NOT 0)"
"""True of a record row that holds any of `~eventbus.store.codec.EXTRA_FIELDS`: the
condition of the index ``eventbus_records_with_extras``, which a query names word for
word for SQLite to use it."""

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """
        CREATE TABLE eventbus_meta (
            key   TEXT PRIMARY KEY,
            value NOT NULL
        )
        """,
        # seq: AUTOINCREMENT keeps it above every seq ever used, even after the
        # newest rows are deleted. recorded_at: ns since the epoch, UTC.
        # correlation_id: NULL when it is the event's own id. headers: a JSON
        # object, NULL when empty. Ids are 16-byte big-endian UUIDs.
        """
        CREATE TABLE eventbus_records (
            seq            INTEGER PRIMARY KEY AUTOINCREMENT,
            type           TEXT NOT NULL,
            version        INTEGER NOT NULL,
            data           TEXT NOT NULL,
            event_id       BLOB NOT NULL,
            recorded_at    INTEGER NOT NULL,
            correlation_id BLOB,
            causation_id   BLOB,
            headers        TEXT
        )
        """,
        """
        CREATE TABLE eventbus_checkpoints (
            name     TEXT PRIMARY KEY,
            position INTEGER NOT NULL
        ) WITHOUT ROWID
        """,
        # position keeps insertion order; the record's columns mirror eventbus_records.
        """
        CREATE TABLE eventbus_dead_letters (
            position        INTEGER PRIMARY KEY AUTOINCREMENT,
            id              BLOB NOT NULL UNIQUE,
            subscription    TEXT NOT NULL,
            error_type      TEXT NOT NULL,
            error_message   TEXT NOT NULL,
            traceback       TEXT NOT NULL,
            attempts        INTEGER NOT NULL,
            first_failed_at INTEGER NOT NULL,
            last_failed_at  INTEGER NOT NULL,
            seq             INTEGER NOT NULL,
            type            TEXT NOT NULL,
            version         INTEGER NOT NULL,
            data            TEXT NOT NULL,
            event_id        BLOB NOT NULL,
            recorded_at     INTEGER NOT NULL,
            correlation_id  BLOB,
            causation_id    BLOB,
            headers         TEXT
        )
        """,
        "CREATE INDEX eventbus_dead_letters_by_subscription ON eventbus_dead_letters (subscription, position)",
    ),
    # 2: the causation depth, so max_causation_depth holds across processes;
    # rows written before it count as depth 0 (the start of a chain).
    (
        "ALTER TABLE eventbus_records ADD COLUMN depth INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE eventbus_dead_letters ADD COLUMN depth INTEGER NOT NULL DEFAULT 0",
    ),
    # 3: bounded history: first_seq is where retention has cut the history (every
    # record from it to the head is kept); compaction finds the oldest record a
    # dead letter refers to through the index.
    (
        "INSERT INTO eventbus_meta (key, value) VALUES ('first_seq', 1)",
        "CREATE INDEX eventbus_dead_letters_by_seq ON eventbus_dead_letters (seq)",
    ),
    # 4: leases on durable subscriptions' names, so one process at a time
    # delivers each; expires_at: ns since the epoch, on the machine's clock.
    (
        """
        CREATE TABLE eventbus_leases (
            name       TEXT PRIMARY KEY,
            holder     TEXT NOT NULL,
            expires_at INTEGER NOT NULL
        ) WITHOUT ROWID
        """,
    ),
    # 5: fenced leases: token grows each time a lease changes hands, and a
    # fenced checkpoint save is refused once it is not the saver's any more. A
    # released lease keeps its row (expired), so its token is never reused.
    ("ALTER TABLE eventbus_leases ADD COLUMN token INTEGER NOT NULL DEFAULT 1",),
    # 6: event ids are unique (an append of an id stored already keeps the
    # stored seq). repeat_of: NULL, except on a row that an older eventbus
    # stored again under an id already held, where it is the first such row's
    # seq; such rows stay readable and out of the unique index.
    (
        "ALTER TABLE eventbus_records ADD COLUMN repeat_of INTEGER",
        """
        UPDATE eventbus_records SET repeat_of = repeats.first
        FROM (SELECT seq, min(seq) OVER (PARTITION BY event_id) AS first FROM eventbus_records) AS repeats
        WHERE repeats.seq = eventbus_records.seq AND repeats.first < repeats.seq
        """,
        "CREATE UNIQUE INDEX eventbus_records_by_event_id ON eventbus_records (event_id) WHERE repeat_of IS NULL",
    ),
    # 7: the rows that hold any of the columns most rows leave NULL, which a read
    # fetches apart (`_reader.read_records`): found through this index instead of
    # by testing four columns of every row of the page inside SQLite.
    (f"CREATE INDEX eventbus_records_with_extras ON eventbus_records (seq) WHERE {HAS_EXTRAS}",),
)
"""``MIGRATIONS[n]`` takes a file from schema version ``n`` to ``n + 1``."""

SCHEMA_VERSION = len(MIGRATIONS)
"""The schema version this eventbus-sqlite writes and understands."""


def migrate(connection: sqlite3.Connection, where: str, *, create: bool = True) -> None:
    """Bring the file behind ``connection`` (in autocommit mode) to `SCHEMA_VERSION`.

    With ``create=False`` a file without the store's tables raises `StoreError`
    instead of getting them.
    """
    connection.execute("BEGIN IMMEDIATE")
    try:
        version = _stored_version(connection, where)
        if version == 0 and not create:
            raise StoreError(
                f"SQLite store {where} holds no eventbus store (not created: the store must exist already)"
            )
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"SQLite store {where}: the file has eventbus schema version {version}, newer than "
                f"version {SCHEMA_VERSION} that this eventbus-sqlite understands; upgrade eventbus-sqlite"
            )
        for step in MIGRATIONS[version:]:
            for statement in step:
                connection.execute(statement)
        if version < SCHEMA_VERSION:
            connection.execute(
                "INSERT INTO eventbus_meta (key, value) VALUES ('schema_version', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (SCHEMA_VERSION,),
            )
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise


def _stored_version(connection: sqlite3.Connection, where: str) -> int:
    exists = connection.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'eventbus_meta'"
    ).fetchone()
    if exists is None:
        return 0
    row = connection.execute("SELECT value FROM eventbus_meta WHERE key = 'schema_version'").fetchone()
    if row is None or not isinstance(row[0], int) or row[0] < 0:
        raise StoreError(f"SQLite store {where}: the eventbus_meta table holds no valid schema_version")
    return row[0]
