"""Stored records that cannot be decoded: an unknown type name, a payload that
no longer validates, JSON that is not JSON. `replay` raises for each and goes
on when iterated again; during catch-up each becomes a dead letter of the
subscription, without retries, and the subscription goes on."""

from __future__ import annotations

import sqlite3
import time
import uuid
from contextlib import closing
from pathlib import Path

import anyio
import pytest
from replay_events import WAIT, Recorder, Tick, sqlite_url, stored_record

from eventbus import Event, EventBus, EventDecodeError, MemoryStore, Replay, Retry, Store, UnknownEventType
from eventbus.replay import DECODE_AHEAD

GONE = "replay.gone"
"""A type name no class is registered under (the class was deleted)."""

HISTORY: list[tuple[str, str]] = [
    ("replay.tick", '{"n": 1}'),
    ("replay.tick", '{"n": "lots"}'),  # no longer validates
    (GONE, '{"x": 1}'),  # unknown type
    ("replay.tick", '{"n": 4}'),
    ("replay.tick", '{"n": 5'),  # not even JSON
]
"""Seqs 1-5 of every store in these tests; a live ``Tick(n=6)`` follows as seq 6."""

BAD_TICKS = [2, 5]
RETRY = Retry(attempts=3, backoff=0.001, jitter=0.0)


def _insert_rows(path: Path, rows: list[tuple[str, str]]) -> None:
    """Append rows to a SQLite store's file the way another program might have."""
    with closing(sqlite3.connect(path)) as connection:
        connection.executemany(
            "INSERT INTO eventbus_records (type, version, data, event_id, recorded_at) VALUES (?, 1, ?, ?, ?)",
            [(type_name, data, uuid.uuid4().bytes, time.time_ns()) for type_name, data in rows],
        )
        connection.commit()


async def _store_with_history(kind: str, tmp_path: Path) -> Store | str:
    if kind == "memory":
        store = MemoryStore()
        await store.append([stored_record(type_name, data) for type_name, data in HISTORY])
        return store
    url = sqlite_url(tmp_path)
    async with EventBus(url):
        pass  # creates the file and its schema
    _insert_rows(tmp_path / "events.db", HISTORY)
    return url


async def _replay_outcomes(bus: EventBus, *types: type[Event] | str) -> list[tuple[int, str]]:
    """(seq, what happened) for each stored record: the event's ``n``, or the error class."""
    return await _outcomes(bus.replay(*types))


async def _outcomes(replay: Replay[Event]) -> list[tuple[int, str]]:
    outcomes: list[tuple[int, str]] = []
    while True:
        try:
            record = await replay.__anext__()
        except StopAsyncIteration:
            return outcomes
        except EventDecodeError as exc:
            outcomes.append((exc.seq or 0, type(exc).__name__))
        else:
            assert isinstance(record.decoded, Tick)  # decoded before it was handed over
            outcomes.append((record.seq, str(record.decoded.n)))


# -- replay ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_replay_raises_for_each_bad_record_and_goes_on_with_the_next(kind: str, tmp_path: Path) -> None:
    async with EventBus(await _store_with_history(kind, tmp_path)) as bus:
        await bus.publish(Tick(n=6))
        everything = await _replay_outcomes(bus)
        ticks = await _replay_outcomes(bus, Tick)

    assert everything == [
        (1, "1"),
        (2, "EventDecodeError"),
        (3, "UnknownEventType"),
        (4, "4"),
        (5, "EventDecodeError"),
        (6, "6"),
    ]
    assert ticks == [(1, "1"), (2, "EventDecodeError"), (4, "4"), (5, "EventDecodeError"), (6, "6")]


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_the_errors_name_the_seq_the_type_and_what_was_wrong(kind: str, tmp_path: Path) -> None:
    async with EventBus(await _store_with_history(kind, tmp_path)) as bus:
        replay = bus.replay(from_seq=2, to_seq=3)
        with pytest.raises(EventDecodeError) as invalid:
            await replay.__anext__()
        with pytest.raises(UnknownEventType) as unknown:
            await replay.__anext__()
        rest = [record async for record in replay]

    assert type(invalid.value) is EventDecodeError
    assert (invalid.value.seq, invalid.value.type) == (2, "replay.tick")
    assert "seq 2" in str(invalid.value)
    assert "replay.tick" in str(invalid.value)
    assert "no longer validates" in str(invalid.value)
    assert (unknown.value.seq, unknown.value.type) == (3, GONE)
    assert GONE in str(unknown.value)
    assert rest == []


async def test_replay_by_the_name_of_a_type_that_no_longer_exists_reaches_its_records() -> None:
    store = MemoryStore()
    await store.append([stored_record(GONE, '{"x": 1}'), stored_record("replay.tick", '{"n": 2}')])
    async with EventBus(store) as bus:
        replay = bus.replay(GONE)
        with pytest.raises(UnknownEventType, match=GONE):
            await replay.__anext__()
        rest = [record async for record in replay]
        # the raw record is still there to be exported or repaired
        [raw] = await bus.store.read(1, types=[GONE])

    assert rest == []
    assert (raw.seq, raw.type, raw.data) == (1, GONE, '{"x": 1}')


async def test_bad_records_at_the_edges_of_a_decoded_run_or_a_page_each_fail_alone() -> None:
    # a replay decodes its events in runs of DECODE_AHEAD records, within pages of 200 here
    invalid = {1, DECODE_AHEAD, DECODE_AHEAD + 1, 200, 201, 2 * DECODE_AHEAD + 1, 300}
    unknown = {DECODE_AHEAD + 2, 199}
    store = MemoryStore()
    await store.append(
        [
            stored_record(GONE, "{}")
            if seq in unknown
            else stored_record("replay.tick", '{"n": "lots"}' if seq in invalid else f'{{"n": {seq}}}')
            for seq in range(1, 301)
        ]
    )
    async with EventBus(store):
        outcomes = await _outcomes(Replay(store, page_size=200))

    assert outcomes == [
        (seq, "UnknownEventType" if seq in unknown else "EventDecodeError" if seq in invalid else str(seq))
        for seq in range(1, 301)
    ]


# -- catch-up --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_catch_up_dead_letters_each_bad_record_without_retrying_and_goes_on(kind: str, tmp_path: Path) -> None:
    recorder = Recorder()
    async with EventBus(await _store_with_history(kind, tmp_path)) as bus:
        bus.subscribe(Tick, recorder, name="ticks", from_seq=1, retry=RETRY)
        await bus.publish(Tick(n=6))
        await bus.drain(WAIT)
        letters = await bus.dead_letters.list("ticks")
        stats = bus.stats()["ticks"]

    assert recorder.seqs == [1, 4, 6]
    assert [letter.record.seq for letter in letters] == BAD_TICKS
    assert {letter.error_type for letter in letters} == {"eventbus.exceptions.EventDecodeError"}
    assert all(letter.attempts == 1 for letter in letters)
    assert all(letter.subscription == "ticks" for letter in letters)
    assert "seq 5" in letters[1].error_message
    assert (stats.routed, stats.delivered, stats.dead_lettered, stats.failed, stats.retried) == (5, 3, 2, 2, 0)
    assert (stats.pending, stats.dropped, stats.position) == (0, 0, 6)


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_a_catch_all_subscription_dead_letters_the_unknown_type_too(kind: str, tmp_path: Path) -> None:
    recorder = Recorder()
    async with EventBus(await _store_with_history(kind, tmp_path)) as bus:
        bus.subscribe(Event, recorder, name="everything", from_seq=1, retry=RETRY)
        await bus.publish(Tick(n=6))
        await bus.drain(WAIT)
        letters = await bus.dead_letters.list("everything")
        stats = bus.stats()["everything"]

    assert recorder.seqs == [1, 4, 6]
    assert [(letter.record.seq, letter.error_type.rpartition(".")[2]) for letter in letters] == [
        (2, "EventDecodeError"),
        (3, "UnknownEventType"),
        (5, "EventDecodeError"),
    ]
    assert (stats.delivered, stats.dead_lettered, stats.retried, stats.pending) == (3, 3, 0, 0)


async def test_a_bad_record_is_dead_lettered_once_for_each_subscription_that_reads_it() -> None:
    store = await _store_with_history("memory", Path())
    first, second, filtered = Recorder(), Recorder(), Recorder()
    async with EventBus(store) as bus:
        bus.subscribe(Tick, first, name="first", from_seq=1)
        bus.subscribe(Tick, second, name="second", from_seq=3)
        # where= has to decode the event to decide: the decode error is its dead letter too
        bus.subscribe(Tick, filtered, name="filtered", from_seq=1, where=lambda e: e.n > 1, retry=RETRY)
        await bus.drain(WAIT)
        letters = await bus.dead_letters.list()

    by_subscription = sorted((letter.subscription, letter.record.seq) for letter in letters)
    assert by_subscription == [("filtered", 2), ("filtered", 5), ("first", 2), ("first", 5), ("second", 5)]
    assert all(letter.attempts == 1 for letter in letters)
    assert (first.seqs, second.seqs, filtered.seqs) == ([1, 4], [4], [4])


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_a_durable_subscription_moves_past_a_bad_record_and_does_not_see_it_again(
    kind: str, tmp_path: Path
) -> None:
    store = await _store_with_history(kind, tmp_path)
    first, second = Recorder(), Recorder()

    bus = EventBus(store)
    bus.subscribe(Tick, first, name="ledger", durable=True, from_seq=1)
    async with bus:
        await bus.drain(WAIT)

    bus = EventBus(store)
    bus.subscribe(Tick, second, name="ledger", durable=True, from_seq=1)
    async with bus:
        await bus.publish(Tick(n=6))
        await bus.drain(WAIT)
        # the record is still bad: a redrive fails again and the letter stays
        assert await bus.dead_letters.redrive() == 0
        letters = await bus.dead_letters.list("ledger")

    assert first.seqs == [1, 4]
    assert second.seqs == [6]
    assert [(letter.record.seq, letter.attempts) for letter in letters] == [(2, 2), (5, 2)]


async def test_a_bad_record_does_not_hold_up_the_live_events_behind_it() -> None:
    store = await _store_with_history("memory", Path())
    recorder = Recorder(until=8)
    async with EventBus(store) as bus:
        bus.subscribe(Tick, recorder, name="ticks", from_seq=1)
        await bus.publish_many([Tick(n=6), Tick(n=7), Tick(n=8)])
        with anyio.fail_after(WAIT):
            await recorder.reached.wait()
        stats = bus.stats()["ticks"]

    assert recorder.seqs == [1, 4, 6, 7, 8]
    assert stats.dead_lettered == 2
