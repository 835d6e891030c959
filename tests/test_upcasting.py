"""Schema evolution: records keep the type name and version they were stored
with, and upcasters turn old versions into the current class on read, in
replay and in catch-up alike."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from replay_events import WAIT, Recorder, stored_record

from eventbus import DuplicateEventType, Event, EventBus, EventDecodeError, MemoryStore, Record, Retry
from eventbus.event import registry

# -- one step: replay.price v1 -> v2 ---------------------------------------------------------


class PriceV1(Event, name="replay.price", version=1):
    """What an older release of the program published."""

    amount: float


class Price(Event, name="replay.price", version=2):
    amount: float
    currency: str


@Price.upcaster(from_version=1)
def _price_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "currency": "EUR"}


# -- a chain: replay.parcel v1 -> v2 -> v3 (v2 has no class any more) ------------------------


class ParcelV1(Event, name="replay.parcel", version=1):
    grams: int


class Parcel(Event, name="replay.parcel", version=3):
    kg: float
    carrier: str


@Parcel.upcaster(from_version=1)
def _parcel_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    return {"kg": data["grams"] / 1000}


@Parcel.upcaster(from_version=2)
def _parcel_v2_to_v3(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "carrier": "unknown"}


# -- broken evolutions ------------------------------------------------------------------------


class Label(Event, name="replay.label", version=2):
    text: str


@Label.upcaster(from_version=1)
def _label_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    return {"text": data["caption"].upper()}  # v1 data without a caption makes it raise


class Gap(Event, name="replay.gap", version=3):
    size: int


@Gap.upcaster(from_version=2)
def _gap_v2_to_v3(data: dict[str, Any]) -> dict[str, Any]:
    return data  # nothing leads from version 1 to 2


class Badly(Event, name="replay.badly", version=2):
    size: int


@Badly.upcaster(from_version=1)
def _badly_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    return {"size": "not a number"}


def _old_prices() -> list[Record]:
    return [stored_record("replay.price", b'{"amount": 10.0}'), stored_record("replay.price", b'{"amount": 12.5}')]


def _sqlite_rows(path: Path) -> list[tuple[int, str, int, str]]:
    with closing(sqlite3.connect(path)) as connection:
        return connection.execute("SELECT seq, type, version, data FROM eventbus_records ORDER BY seq").fetchall()


# -- reading old versions ---------------------------------------------------------------------


async def test_replay_upcasts_a_stored_v1_to_the_current_class_and_keeps_the_stored_version() -> None:
    store = MemoryStore()
    await store.append(_old_prices())
    async with EventBus(store) as bus:
        await bus.publish(Price(amount=99.0, currency="USD"))
        records = [record async for record in bus.replay(Price)]

    assert [record.event for record in records] == [
        Price(amount=10.0, currency="EUR"),
        Price(amount=12.5, currency="EUR"),
        Price(amount=99.0, currency="USD"),
    ]
    assert [(record.type, record.version) for record in records] == [("replay.price", 1)] * 2 + [("replay.price", 2)]


async def test_catch_up_delivers_upcast_history_then_live_events_as_the_current_class() -> None:
    store = MemoryStore()
    await store.append(_old_prices())
    recorder = Recorder()
    async with EventBus(store) as bus:
        bus.subscribe(Price, recorder, name="prices", from_seq=1)
        await bus.publish(Price(amount=1.0, currency="GBP"))
        await bus.drain(WAIT)
        stats = bus.stats()["prices"]

    assert recorder.events == [
        Price(amount=10.0, currency="EUR"),
        Price(amount=12.5, currency="EUR"),
        Price(amount=1.0, currency="GBP"),
    ]
    assert all(type(event) is Price for event in recorder.events)
    assert (stats.delivered, stats.dead_lettered) == (3, 0)


async def test_a_chain_of_upcasters_leads_from_any_old_version_to_the_newest() -> None:
    store = MemoryStore()
    await store.append(
        [
            stored_record("replay.parcel", b'{"grams": 1500}', version=1),
            stored_record("replay.parcel", b'{"kg": 2.0}', version=2),
            stored_record("replay.parcel", b'{"kg": 3.0, "carrier": "post"}', version=3),
        ]
    )
    recorder = Recorder()
    async with EventBus(store) as bus:
        bus.subscribe(Parcel, recorder, name="parcels", from_seq=1)
        await bus.drain(WAIT)
        replayed = [record.event async for record in bus.replay(Parcel)]

    expected = [Parcel(kg=1.5, carrier="unknown"), Parcel(kg=2.0, carrier="unknown"), Parcel(kg=3.0, carrier="post")]
    assert replayed == expected
    assert recorder.events == expected


async def test_events_an_older_program_wrote_to_sqlite_are_upcast_and_the_file_is_left_as_it_was(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.db"
    url = f"sqlite:///{path}"
    async with EventBus(url) as old_program:
        await old_program.publish(PriceV1(amount=5.0))
        await old_program.publish(ParcelV1(grams=250))
    rows_before = _sqlite_rows(path)

    recorder = Recorder()
    async with EventBus(url) as bus:
        bus.subscribe(Price | Parcel, recorder, name="catalogue", from_seq=1)
        await bus.drain(WAIT)
        replayed = [record async for record in bus.replay()]

    assert [record.event for record in replayed] == [
        Price(amount=5.0, currency="EUR"),
        Parcel(kg=0.25, carrier="unknown"),
    ]
    assert recorder.events == [record.event for record in replayed]
    assert [(record.type, record.version) for record in replayed] == [("replay.price", 1), ("replay.parcel", 1)]
    assert rows_before == [(1, "replay.price", 1, '{"amount":5.0}'), (2, "replay.parcel", 1, '{"grams":250}')]
    assert _sqlite_rows(path) == rows_before, "upcasting happens on read; stored rows never change"


# -- evolutions that cannot be read -------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "message"),
    [
        pytest.param(
            stored_record("replay.label", b'{"title": "x"}'),
            r"upcaster from version 1 .*KeyError",
            id="upcaster-raises",
        ),
        pytest.param(
            stored_record("replay.gap", b'{"size": 1}'), "no upcaster is registered from version 1", id="missing-step"
        ),
        pytest.param(
            stored_record("replay.price", b'{"amount": 1.0}', version=9),
            "version 9, newer than the newest registered class",
            id="newer-than-known",
        ),
        pytest.param(stored_record("replay.badly", b'{"size": 1}'), "no longer validates", id="upcast-invalid"),
        pytest.param(stored_record("replay.price", b"[1, 2]"), "no longer validates", id="not-an-object"),
    ],
)
async def test_an_old_version_that_cannot_be_upcast_raises_a_decode_error_naming_seq_and_type(
    record: Record, message: str
) -> None:
    store = MemoryStore()
    await store.append([stored_record("replay.price", b'{"amount": 1.0}'), record])
    async with EventBus(store) as bus:
        replay = bus.replay()
        first = await replay.__anext__()
        with pytest.raises(EventDecodeError, match=message) as caught:
            await replay.__anext__()
        rest = [r async for r in replay]

    assert first.event == Price(amount=1.0, currency="EUR")
    assert (caught.value.seq, caught.value.type) == (2, record.type)
    assert "seq 2" in str(caught.value)
    assert rest == []


def test_the_upcasters_own_exception_is_the_cause_of_the_decode_error() -> None:
    with pytest.raises(EventDecodeError) as caught:
        registry.decode("replay.label", 1, b'{"title": "x"}', seq=7)
    assert isinstance(caught.value.__cause__, KeyError)
    assert "_label_v1_to_v2" in str(caught.value)


async def test_a_record_whose_upcaster_fails_is_dead_lettered_by_catch_up_which_goes_on() -> None:
    store = MemoryStore()
    await store.append(
        [
            stored_record("replay.label", b'{"caption": "first"}'),
            stored_record("replay.label", b'{"title": "broken"}'),
            stored_record("replay.label", b'{"caption": "third"}'),
        ]
    )
    recorder = Recorder()
    async with EventBus(store) as bus:
        bus.subscribe(Label, recorder, name="labels", from_seq=1, retry=Retry(attempts=3, backoff=0.001))
        await bus.drain(WAIT)
        [letter] = await bus.dead_letters.list("labels")

    assert recorder.events == [Label(text="FIRST"), Label(text="THIRD")]
    assert letter.record.seq == 2
    assert letter.error_type == "eventbus.exceptions.EventDecodeError"
    assert letter.attempts == 1, "a decode error is never retried"
    assert bus.stats()["labels"].retried == 0


# -- the registry -------------------------------------------------------------------------------


def test_two_classes_under_one_name_and_version_are_refused_and_the_registry_is_unchanged() -> None:
    with pytest.raises(DuplicateEventType, match=r"'replay\.price' version 2") as caught:

        class Rival(Event, name="replay.price", version=2):
            amount: float

    assert f"{__name__}.Price" in str(caught.value)
    assert registry.current("replay.price") is Price
    assert registry.decode("replay.price", 1, json.dumps({"amount": 3.0})) == Price(amount=3.0, currency="EUR")


def test_every_version_of_a_name_is_kept_and_the_newest_is_current() -> None:
    assert (PriceV1.__event_version__, Price.__event_version__) == (1, 2)
    assert registry.current("replay.price") is Price
    assert registry.current("replay.parcel") is Parcel


async def test_publishing_stores_the_class_version() -> None:
    async with EventBus() as bus:
        await bus.publish(Price(amount=1.0, currency="EUR"))
        await bus.publish(Parcel(kg=1.0, carrier="post"))
        stored = [(record.type, record.version) async for record in bus.replay()]

    assert stored == [("replay.price", 2), ("replay.parcel", 3)]
