"""The SQL the store runs, written out once for one schema.

Appending is a single statement, so it is one transaction and one round trip:
it bumps the one-row ``seq_counter`` by the batch size, inserts the batch
numbered from the old value, and queues a NOTIFY carrying the new head. The
counter's row lock is held until commit, so a second appender waits for the
first to commit before it even learns its seqs: seqs are assigned in commit
order, and a reader can never see seq N+1 before N.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from operator import itemgetter
from typing import Any

from eventbus.store.codec import DEAD_LETTER_FIELDS, RECORD_FIELDS, Layout, id_uuid

from ._schema import quoted

__all__ = ["EVENT_ID_COLUMN", "LAYOUT", "SAME_IN_BATCH", "Statements", "columns", "record_columns"]


LAYOUT = Layout(id=id_uuid, text_data=True)
"""How `eventbus.store.codec` fills the columns: ids as text for ``uuid`` (see `id_uuid`), failure times as
``timestamptz``, the event's JSON as ``text``."""

EVENT_ID_COLUMN = RECORD_FIELDS[1:].index("event_id")
"""Where a ``record_values`` row holds the event id."""

_SQL_TYPES = {
    "seq": "bigint",
    "type": "text",
    "version": "integer",
    "event_id": "uuid",
    "correlation_id": "uuid",
    "causation_id": "uuid",
    "recorded_at": "bigint",
    "headers": "jsonb",
    "data": "text",
    "depth": "integer",
    "id": "uuid",
    "subscription": "text",
    "error_type": "text",
    "error_message": "text",
    "traceback": "text",
    "attempts": "integer",
    "first_failed_at": "timestamptz",
    "last_failed_at": "timestamptz",
}


_ID_TEXT = "replace(event_id::text, '-', '')"
"""A stored event id as `id_uuid` writes it, so that ids looked up compare with a batch's."""


_READ_AS = {name: f"uuid_send({name})" for name in ("event_id", "correlation_id", "causation_id")}
"""How a read selects the id columns: as their 16 bytes, which asyncpg hands over
as `bytes`, not as the `UUID` object it makes of a ``uuid`` column. Decoding that
object is the larger part of what a ``uuid`` column costs, and it is one more
object per row for the garbage collector: ``Store.read`` went from 0.58 - 0.59 x
to 0.72 - 0.78 x a plain ``SELECT`` of the same columns, decoded replay from
0.58 - 0.59 x to 0.65 - 0.70 x the same ``SELECT`` with pydantic's validator."""


SAME_IN_BATCH = frozenset({"type", "version", "depth"})
"""Columns of an appended batch that usually hold one value in every row
(they are NOT NULL, so the append statement can tell "the same" from NULL)."""

_SAME_IN_BATCH = frozenset(index for index, name in enumerate(RECORD_FIELDS[1:]) if name in SAME_IN_BATCH)


def columns(rows: Iterable[tuple[Any, ...]], *, same: frozenset[int] = frozenset()) -> list[Sequence[Any]]:
    """Rows of values turned into one sequence per column (what ``unnest`` takes).

    asyncpg checks and encodes each element of an array on its own, so what
    repeats goes once: a column that is NULL in every row goes as an empty
    array, which ``unnest`` pads with NULLs (correlation, causation and
    headers usually are); a column at a position in ``same`` that holds one
    value in every row goes as that value alone, which the statement repeats.
    Each column is gathered by `operator.itemgetter` over the rows, not by
    ``zip(*rows)``, which makes an iterator object per row.
    """
    listed = rows if isinstance(rows, list) else list(rows)
    sent: list[Sequence[Any]] = []
    for index in range(len(listed[0]) if listed else 0):
        column = list(map(itemgetter(index), listed))
        first = column[0]
        if column.count(first) < len(column):
            sent.append(column)
        elif first is None:
            sent.append(())
        else:
            sent.append((first,) if index in same else column)
    return sent


def record_columns(rows: Iterable[tuple[Any, ...]]) -> list[Sequence[Any]]:
    """`columns` of ``record_values`` rows for `Statements.append` (and ``append_if_unseen``)."""
    return columns(rows, same=_SAME_IN_BATCH)


def _value(name: str, parameter: int) -> str:
    """A column of the appended batch, whose array parameter is ``$parameter``; see `columns`."""
    if name in SAME_IN_BATCH:
        return f"coalesce(batch.{name}, ${parameter}[1])"
    return f"batch.{name}"


def _arrays(names: tuple[str, ...], first: int) -> str:
    """``$first::type[], ...``: one typed array parameter per column, for ``unnest``."""
    return ", ".join(f"${index}::{_SQL_TYPES[name]}[]" for index, name in enumerate(names, start=first))


def _appends(schema: str, channel: str, *, one: bool) -> tuple[str, str]:
    """The append statement and its ``if_unseen`` form (see `Statements`), for
    a batch (``$1`` its size, then one array per column, for ``unnest``) or,
    with ``one``, for a single record (one scalar per column from ``$1``).

    The single-record form is what a transaction publishing one event runs:
    asyncpg encodes nine scalars instead of nine one-element arrays, and the
    server plans no ``unnest``. Measured in one transaction that also inserts
    one application row, commits synced: 810 µs with the batch form, 655 µs
    with this one, against 475 µs for the transaction without the event.
    """
    names = RECORD_FIELDS[1:]
    if one:
        size, event_ids = "1", f"${EVENT_ID_COLUMN + 1}::uuid"
        values = ", ".join(f"${index}::{_SQL_TYPES[name]}" for index, name in enumerate(names, start=1))
        source = "reserved.base + 1"
        batch = "reserved"
        match = "event_id = "
    else:
        size, event_ids = "$1", f"${EVENT_ID_COLUMN + 2}::uuid[]"
        values = ", ".join(_value(name, parameter) for parameter, name in enumerate(names, 2))
        source = "reserved.base + batch.position"
        batch = f"reserved, unnest({_arrays(names, 2)}) WITH ORDINALITY AS batch({', '.join(names)}, position)"
        match = "event_id = ANY"
    bump = f"UPDATE {schema}.seq_counter SET last_seq = last_seq + {size}"
    insert = (
        f"RETURNING last_seq - {size} AS base), inserted AS (INSERT INTO {schema}.records ({', '.join(RECORD_FIELDS)}) "
        f"SELECT {source}, {values} FROM {batch}"
        f") SELECT base + 1, pg_notify('{channel}', (base + {size})::text) FROM reserved"
    )
    append = f"WITH reserved AS ({bump} {insert}"
    append_if_unseen = (
        f"WITH seen AS MATERIALIZED (SELECT last_seq FROM {schema}.seq_counter), reserved AS ({bump} "
        f"WHERE last_seq = (SELECT last_seq FROM seen) AND NOT EXISTS (SELECT FROM {schema}.records "
        f"WHERE {match}({event_ids}) AND repeat_of IS NULL) {insert}"
    )
    return append, append_if_unseen


class Statements:
    """Every statement of a store whose tables live in one schema, built once.

    Attributes:
        channel: the NOTIFY channel of the schema's appends (payload: the new head).
        append: $1 batch size, $2.. one array per record column but seq
            (`record_columns`); returns the batch's first seq.
        append_if_unseen: `append`, in a transaction the caller has open, and
            only when its snapshot, taken before the counter's lock was
            granted, shows every append committed until then (the counter
            then still holds the value that snapshot read) and none of the
            event ids; otherwise it does nothing, returns no row and locks
            nothing (and the caller takes the lock, then looks the ids up).
        append_one, append_one_if_unseen: the same for one record, $1.. its
            ``record_values`` (see `appending`).
        head: the greatest seq ever assigned.
        lock_head: the same, locking the counter's row until the transaction
            ends (what an append does first, so appends take turns).
        find_event_ids: $1 event ids: ``(event_id, seq)`` of each one stored,
            the id as `id_uuid` writes it.
        session_busy: $1 a backend's pid: whether that session still runs
            a statement or holds a transaction open.
        read: $1 from_seq, $2 to_seq, $3 limit; the ids as 16 bytes (see `_READ_AS`).
        read_types: the same, $4 the type names to keep.
        load_checkpoint: $1 name.
        checkpoints: every name and position.
        save_checkpoints: $1 names, $2 positions.
        save_fenced_checkpoints: the same, $3 a lease's name, $4 its fencing
            token: saves only while the lease carries that token (its row
            locked against a takeover until commit); returns whether it did.
        acquire_lease: $1 name, $2 holder, $3 seconds: takes or renews the
            lease unless another holder's is unexpired (server clock);
            returns its fencing token when $2 holds it, one more than before
            when it changed hands.
        release_lease: $1 name, $2 holder: lets the lease expire, keeping its token.
        add_dead_letters: one array per dead-letter column; a letter whose id
            exists replaces it in place (and keeps its place in the order).
        dead_letters: all dead letters, oldest first.
        dead_letters_of: $1 subscription: its dead letters, oldest first.
        delete_dead_letters: $1 ids; returns how many rows went.
        first_seq: where retention has cut the history.
        lock_first_seq: the same, locking its row until the transaction ends
            (one compaction at a time, across processes).
        first_young: $1 from, $2 below, $3 ns: the lowest seq in the range
            recorded at or after that time.
        lowest_checkpoint: the name and position of the lowest checkpoint.
        oldest_dead_letter: the subscription and seq of the dead letter on the lowest seq.
        compact: $1 the new first_seq: deletes the records below it, stores
            it, returns how many records went.
    """

    def __init__(self, schema: str) -> None:
        s = quoted(schema)
        read = ", ".join(_READ_AS.get(name, name) for name in RECORD_FIELDS)
        letters = ", ".join(DEAD_LETTER_FIELDS)
        self.channel = f"eventbus:{schema}"
        self.append, self.append_if_unseen = _appends(s, self.channel, one=False)
        self.append_one, self.append_one_if_unseen = _appends(s, self.channel, one=True)
        self.head = f"SELECT last_seq FROM {s}.seq_counter"
        self.lock_head = f"SELECT last_seq FROM {s}.seq_counter FOR UPDATE"
        self.find_event_ids = (
            f"SELECT {_ID_TEXT}, seq FROM {s}.records WHERE event_id = ANY($1::uuid[]) AND repeat_of IS NULL"
        )
        self.session_busy = (
            "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE pid = $1 AND state IS NOT NULL AND state <> 'idle')"
        )
        self.read = f"SELECT {read} FROM {s}.records WHERE seq >= $1 AND seq <= $2 ORDER BY seq LIMIT $3"
        self.read_types = (
            f"SELECT {read} FROM {s}.records "
            "WHERE seq >= $1 AND seq <= $2 AND type = ANY($4::text[]) ORDER BY seq LIMIT $3"
        )
        self.load_checkpoint = f"SELECT position FROM {s}.checkpoints WHERE name = $1"
        self.checkpoints = f"SELECT name, position FROM {s}.checkpoints ORDER BY name"
        self.save_checkpoints = (
            f"INSERT INTO {s}.checkpoints (name, position) SELECT * FROM unnest($1::text[], $2::bigint[]) "
            "ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position, updated_at = now()"
        )
        self.save_fenced_checkpoints = (
            f"WITH fence AS (SELECT 1 FROM {s}.leases WHERE name = $3 AND token = $4 FOR SHARE), "
            f"saved AS (INSERT INTO {s}.checkpoints (name, position) "
            "SELECT * FROM unnest($1::text[], $2::bigint[]) WHERE EXISTS (SELECT 1 FROM fence) "
            "ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position, updated_at = now()) "
            "SELECT EXISTS (SELECT 1 FROM fence)"
        )
        self.acquire_lease = (
            f"INSERT INTO {s}.leases AS lease (name, holder, expires_at, token) "
            "VALUES ($1, $2, clock_timestamp() + make_interval(secs => $3), 1) "
            "ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at, "
            "token = lease.token + CASE WHEN lease.holder = EXCLUDED.holder THEN 0 ELSE 1 END "
            "WHERE lease.holder = EXCLUDED.holder OR lease.expires_at <= clock_timestamp() "
            "RETURNING token"
        )
        self.release_lease = f"UPDATE {s}.leases SET expires_at = '-infinity' WHERE name = $1 AND holder = $2"
        updates = ", ".join(f"{name} = EXCLUDED.{name}" for name in DEAD_LETTER_FIELDS[1:])
        self.add_dead_letters = (
            f"INSERT INTO {s}.dead_letters ({letters}) SELECT * FROM unnest({_arrays(DEAD_LETTER_FIELDS, 1)}) "
            f"ON CONFLICT (id) DO UPDATE SET {updates}"
        )
        self.dead_letters = f"SELECT {letters} FROM {s}.dead_letters ORDER BY added"
        self.dead_letters_of = f"SELECT {letters} FROM {s}.dead_letters WHERE subscription = $1 ORDER BY added"
        self.delete_dead_letters = (
            f"WITH deleted AS (DELETE FROM {s}.dead_letters WHERE id = ANY($1::uuid[]) RETURNING 1) "
            "SELECT count(*) FROM deleted"
        )
        self.first_seq = f"SELECT first_seq FROM {s}.history"
        self.lock_first_seq = f"SELECT first_seq FROM {s}.history FOR UPDATE"
        self.first_young = (
            f"SELECT seq FROM {s}.records WHERE seq >= $1 AND seq < $2 AND recorded_at >= $3 ORDER BY seq LIMIT 1"
        )
        self.lowest_checkpoint = f"SELECT name, position FROM {s}.checkpoints ORDER BY position LIMIT 1"
        self.oldest_dead_letter = f"SELECT subscription, seq FROM {s}.dead_letters ORDER BY seq LIMIT 1"
        self.compact = (
            f"WITH deleted AS (DELETE FROM {s}.records WHERE seq < $1 RETURNING 1), "
            f"moved AS (UPDATE {s}.history SET first_seq = $1) "
            "SELECT count(*) FROM deleted"
        )

    def appending(self, rows: Sequence[tuple[Any, ...]], *, if_unseen: bool = False) -> tuple[str, Sequence[Any]]:
        """The statement that appends ``rows`` (``record_values``), ``append``
        or ``append_if_unseen``, and its arguments: the single-record form for one row."""
        if len(rows) == 1:
            return (self.append_one_if_unseen if if_unseen else self.append_one), rows[0]
        return (self.append_if_unseen if if_unseen else self.append), (len(rows), *record_columns(rows))
