"""`eventbus.store.codec`: records and dead letters to stored primitives and back."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from uuid import uuid4

import pytest
from core_events import Ping

from eventbus import DeadLetter, EventDecodeError, Record
from eventbus.store.codec import (
    DEAD_LETTER_FIELDS,
    PLAIN_FIELDS,
    RECORD_FIELDS,
    Layout,
    UnreadableRecord,
    datetime_of,
    id_bytes,
    id_uuid,
    letter_values,
    letters_from_rows,
    ns_of,
    record_values,
    records_from_rows,
    records_from_split_rows,
    records_from_typed_rows,
    storable_text,
)
from eventbus.testing.conformance import new_record

SQLITE_LIKE = Layout(id=id_bytes, failed_at=ns_of)
POSTGRES_LIKE = Layout(id=id_uuid, text_data=True)
AT = datetime(2025, 5, 17, 8, 30, 1, 123_456, tzinfo=UTC)


def _read_split(rows: Sequence[tuple[object, ...]]) -> list[Record]:
    """`records_from_split_rows` of whole rows, their extra fields taken apart as a store would."""
    plain = 1 + len(PLAIN_FIELDS)
    extras = {row[0]: row[plain:] for row in rows if row[plain:] != (None, None, None, 0)}
    return records_from_split_rows([(row[0], row[1:plain]) for row in rows], extras)


READERS: list[Callable[[Sequence[tuple[object, ...]]], list[Record]]] = [records_from_rows, _read_split]
READER_IDS = ["whole-rows", "split-rows"]


def _stored(layout: Layout, seq: int = 1, **changes: object) -> tuple[object, ...]:
    record = new_record(Ping(n=seq), correlation_id=uuid4(), causation_id=uuid4(), headers={"h": "v"})
    record.depth = 3
    row = dict(zip(RECORD_FIELDS, (seq, *record_values(record, layout)), strict=True))
    row.update(changes)
    return tuple(row[name] for name in RECORD_FIELDS)


@pytest.mark.parametrize("read_rows", READERS, ids=READER_IDS)
@pytest.mark.parametrize("layout", [SQLITE_LIKE, POSTGRES_LIKE], ids=["bytes-ids", "uuid-ids"])
def test_a_record_round_trips_through_its_values(
    layout: Layout, read_rows: Callable[[Sequence[tuple[object, ...]]], list[Record]]
) -> None:
    original = new_record(Ping(n=5), correlation_id=uuid4(), causation_id=uuid4(), headers={"ünï": "çødé"})
    original.depth = 9
    values = record_values(original, layout)
    assert len(values) == len(RECORD_FIELDS) - 1
    [read, plain] = read_rows([(4, *values), (5, *record_values(new_record(Ping(n=6)), layout))])
    assert (plain.seq, plain.depth, plain.causation_id, dict(plain.headers), plain.event) == (5, 0, None, {}, Ping(n=6))
    assert (read.seq, read.type, read.version, read.depth) == (4, "core.ping", 1, 9)
    assert (read.event_id, read.correlation_id, read.causation_id) == (
        original.event_id,
        original.correlation_id,
        original.causation_id,
    )
    assert dict(read.headers) == {"ünï": "çødé"}
    assert read.recorded_at_ns == original.recorded_at_ns
    assert read.event == Ping(n=5)


def test_ids_are_read_in_every_form_a_driver_may_give() -> None:
    event_id = uuid4()
    for form in (event_id, event_id.bytes, str(event_id), event_id.int):
        [read] = records_from_rows([_stored(SQLITE_LIKE, event_id=form)])
        assert read.event_id == event_id


@pytest.mark.parametrize("read_rows", READERS, ids=READER_IDS)
@pytest.mark.parametrize(
    ("column", "value", "problem"),
    [
        ("headers", "[1, 2]", r"headers are \[1, 2\], not a JSON object of strings"),
        ("headers", "{", "headers are not JSON"),
        ("event_id", b"\x00" * 15, "event_id is"),
        ("event_id", "zz", "event_id is 'zz', not a UUID"),
        ("correlation_id", 3.5, "correlation_id is 3.5"),
        ("version", "2", "version is '2', not an integer"),
        ("type", 7, "type is 7, not text"),
        ("recorded_at", 1.5, "recorded_at is 1.5"),
        ("depth", "deep", "depth is 'deep'"),
        ("data", 12, "data is int"),
    ],
)
def test_a_row_that_does_not_fit_is_an_unreadable_record_naming_seq_and_column(
    column: str, value: object, problem: str, read_rows: Callable[[Sequence[tuple[object, ...]]], list[Record]]
) -> None:
    rows = [_stored(SQLITE_LIKE, 1), _stored(SQLITE_LIKE, 2, **{column: value}), _stored(SQLITE_LIKE, 3)]
    good, bad, after = read_rows(rows)
    assert good.event == Ping(n=1)
    assert after.event == Ping(n=3)
    assert isinstance(bad, UnreadableRecord)
    assert bad.seq == 2
    with pytest.raises(EventDecodeError, match=f"seq 2 cannot be read: {problem}") as caught:
        _ = bad.event
    assert caught.value.seq == 2


ASYNCPG_LIKE = Layout(id=id_bytes, text_data=True)
"""Ids as 16 bytes, the way asyncpg hands back a ``uuid_send`` of a ``uuid`` column."""


def test_typed_rows_read_as_a_typed_driver_gives_them() -> None:
    original = new_record(Ping(n=5), correlation_id=uuid4(), causation_id=uuid4(), headers={"ünï": "çødé"})
    original.depth = 9
    plain = new_record(Ping(n=6))
    [read, read_plain] = records_from_typed_rows(
        [(4, *record_values(original, ASYNCPG_LIKE)), (5, *record_values(plain, ASYNCPG_LIKE))]
    )
    assert (read.seq, read.type, read.version, read.depth) == (4, "core.ping", 1, 9)
    assert dict(read.headers) == {"ünï": "çødé"}
    assert (read.event_id, read.correlation_id, read.causation_id) == (
        original.event_id,
        original.correlation_id,
        original.causation_id,
    )
    assert (read.recorded_at_ns, read.event) == (original.recorded_at_ns, Ping(n=5))
    assert (read_plain.seq, read_plain.depth, read_plain.causation_id, dict(read_plain.headers)) == (5, 0, None, {})
    assert (read_plain.event_id, read_plain.correlation_id) == (plain.event_id, plain.event_id)
    assert read_plain.event == Ping(n=6)


@pytest.mark.parametrize(
    ("headers", "problem"),
    [("[1, 2]", r"headers are \[1, 2\], not a JSON object of strings"), ("{", "headers are not JSON")],
)
def test_typed_rows_whose_headers_do_not_fit_are_unreadable_records(headers: str, problem: str) -> None:
    rows = [(seq, *record_values(new_record(Ping(n=seq)), ASYNCPG_LIKE)) for seq in (1, 2, 3)]
    rows[1] = (*rows[1][:-2], headers, rows[1][-1])
    good, bad, after = records_from_typed_rows(rows)
    assert (good.event, after.event) == (Ping(n=1), Ping(n=3))
    assert isinstance(bad, UnreadableRecord)
    with pytest.raises(EventDecodeError, match=f"seq 2 cannot be read: {problem}"):
        _ = bad.event


@pytest.mark.parametrize("layout", [SQLITE_LIKE, POSTGRES_LIKE], ids=["ns-times", "datetimes"])
def test_a_dead_letter_round_trips_with_its_text_made_storable(layout: Layout) -> None:
    record = new_record(Ping(n=1))
    record.seq, record.depth = 8, 2
    letter = DeadLetter(
        id=uuid4(),
        subscription="files",
        record=record,
        error_type="builtins.OSError",
        error_message="caf\udce9 \x00",
        traceback="tb \ud800",
        attempts=3,
        first_failed_at=AT,
        last_failed_at=AT,
    )
    values = letter_values(letter, layout)
    assert len(values) == len(DEAD_LETTER_FIELDS)
    [read] = letters_from_rows([values])
    assert (read.id, read.subscription, read.attempts, read.first_failed_at) == (letter.id, "files", 3, AT)
    assert read.error_message == "caf\\udce9 \\x00"
    assert read.traceback == "tb \\ud800"
    assert (read.record.seq, read.record.depth, read.record.event) == (8, 2, Ping(n=1))


def test_storable_text_keeps_what_every_store_holds() -> None:
    for text in ("plain", "naïve ✓", "emoji 🎉", ""):
        assert storable_text(text) is text
    assert storable_text("a\udcffb") == "a\\udcffb"
    assert storable_text("nul\x00") == "nul\\x00"
    assert storable_text("a\udcffb").encode("utf-8")


def test_times_are_exact_nanoseconds() -> None:
    assert ns_of(AT) == 1_747_470_601_123_456_000
    assert datetime_of(ns_of(AT)) == AT
    with pytest.raises(ValueError, match="naive"):
        ns_of(datetime(2025, 1, 1))


def test_headers_are_written_as_compact_json() -> None:
    values = record_values(new_record(Ping(n=1), headers={"k": "v"}), SQLITE_LIKE)
    assert json.loads(values[RECORD_FIELDS.index("headers") - 1]) == {"k": "v"}
    assert record_values(new_record(Ping(n=1)), SQLITE_LIKE)[RECORD_FIELDS.index("headers") - 1] is None
