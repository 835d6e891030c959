"""Round trip at publish: whatever pydantic writes for an event reads back as
an equal event, or ``publish`` refuses it with a `ValueError` naming the
field, before anything is stored. Custom serializers (field and model
serializers, ``PlainSerializer`` / ``WrapSerializer``, ``json_encoders``),
``exclude_if`` and ``ser_json_*`` settings are checked per event; a class
without any is not (`needs_round_trip`)."""

from __future__ import annotations

import datetime
import decimal
import enum
import ipaddress
import pathlib
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any
from uuid import uuid4

import pytest
from pydantic import (
    AnyUrl,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    SecretStr,
    WrapSerializer,
    field_serializer,
    model_serializer,
)
from pydantic.warnings import PydanticDeprecatedSince20

from eventbus import Event, EventBus
from eventbus.event import check_round_trip, needs_round_trip, registry


class Colour(enum.Enum):
    RED = "red"


class Line(BaseModel):
    sku: str
    quantity: int


class Plain(Event, name="round_trip.plain"):
    """Every common field type, none with a serializer of its own."""

    n: int
    text: str
    at: datetime.datetime
    price: decimal.Decimal
    colour: Colour
    id: uuid.UUID
    path: pathlib.Path
    address: ipaddress.IPv4Address
    url: AnyUrl
    blob: bytes
    lines: tuple[Line, ...]
    tags: frozenset[str]
    extra: dict[str, list[int]]
    anything: Any = None


class StrictCount(Event, name="round_trip.strict_count"):
    """An ``int`` written as a string: what strict validation does not read back."""

    model_config = ConfigDict(strict=True)

    count: int

    @field_serializer("count")
    def _as_text(self, count: int) -> str:
        return str(count)


class Units(Event, name="round_trip.units"):
    weight: int

    @field_serializer("weight")
    def _with_unit(self, weight: int) -> str:
        return f"{weight} kg"


class Renamed(Event, name="round_trip.renamed"):
    n: int

    @model_serializer
    def _renamed(self) -> dict[str, Any]:
        return {"number": self.n}


class Hashed(Event, name="round_trip.hashed"):
    code: Annotated[int, PlainSerializer(lambda code: f"#{code}")]


class Doubled(Event, name="round_trip.doubled"):
    n: Annotated[int, WrapSerializer(lambda n, write: write(n * 2))]


with warnings.catch_warnings():
    warnings.simplefilter("ignore", PydanticDeprecatedSince20)  # json_encoders: deprecated, still honoured

    class Encoded(Event, name="round_trip.encoded"):
        model_config = ConfigDict(json_encoders={int: lambda n: n + 1})

        n: int


class Base64Only(Event, name="round_trip.base64_only"):
    model_config = ConfigDict(ser_json_bytes="base64")

    blob: bytes


class Base64Both(Event, name="round_trip.base64_both"):
    model_config = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")

    blob: bytes


class Skipped(Event, name="round_trip.skipped"):
    n: int = 0
    note: str = Field(default="none", exclude_if=lambda note: note == "")


class Secret(Event, name="round_trip.secret"):
    password: SecretStr


class Stamp(BaseModel):
    value: Annotated[int, PlainSerializer(lambda value: f"#{value}")]


class Wrapper(Event, name="round_trip.wrapper"):
    stamp: Stamp


class Symmetric(Event, name="round_trip.symmetric"):
    """Custom serializers that write what their fields read: accepted."""

    amount: decimal.Decimal
    at: datetime.datetime

    @field_serializer("amount")
    def _amount_as_text(self, amount: decimal.Decimal) -> str:
        return format(amount, "f")

    @field_serializer("at")
    def _at_as_seconds(self, at: datetime.datetime) -> float:
        return at.timestamp()


# -- which classes are checked per event -----------------------------------------------------


@pytest.mark.parametrize("cls", [Plain, Base64Both], ids=lambda cls: cls.__name__)
def test_a_class_without_custom_serialization_is_not_round_tripped_per_event(cls: type[Event]) -> None:
    # Base64Both writes bytes as base64 and reads them so: the config is symmetric
    assert needs_round_trip(cls) is False


@pytest.mark.parametrize(
    "cls",
    [StrictCount, Units, Renamed, Hashed, Doubled, Encoded, Base64Only, Skipped, Secret, Wrapper, Symmetric],
    ids=lambda cls: cls.__name__,
)
def test_a_class_with_custom_serialization_is_round_tripped_per_event(cls: type[Event]) -> None:
    assert needs_round_trip(cls) is True


# -- what is refused, naming the field -----------------------------------------------------


REFUSED: list[tuple[Event, str]] = [
    (StrictCount(count=5), r"StrictCount\.count is written as \"5\" and does not read back"),
    (Units(weight=3), r"Units\.weight is written as \"3 kg\" and does not read back"),
    (Renamed(n=1), r"Renamed\.n is written as \{\"number\":1\} and does not read back \(Field required\)"),
    (Hashed(code=7), r"Hashed\.code is written as \"#7\""),
    (Doubled(n=2), r"Doubled\.n is 2, written as 4 and read back as 4"),
    (Encoded(n=1), r"Encoded\.n is 1, written as 2 and read back as 2"),
    (Base64Only(blob=b"hi"), r"Base64Only\.blob is b'hi', written as \"aGk=\" and read back as b'aGk='"),
    (Skipped(n=1, note=""), r"Skipped\.note is '', written as .* and read back as 'none'"),
    (Secret(password=SecretStr("pw")), r"Secret\.password is SecretStr\('\*+'\), written as \"\*+\""),
    (Wrapper(stamp=Stamp(value=1)), r"Wrapper\.stamp\.value is written as \"#1\""),
]


@pytest.mark.parametrize(("event", "match"), REFUSED, ids=lambda value: type(value).__name__)
def test_check_round_trip_names_the_field_what_was_written_and_what_it_reads_back_as(event: Event, match: str) -> None:
    with pytest.raises(ValueError, match=match) as caught:
        check_round_trip(event)
    assert "the event was not stored" in str(caught.value)


@pytest.mark.parametrize(
    "event",
    [
        Base64Both(blob=b"\x00\xff"),
        Skipped(n=1, note="kept"),
        Symmetric(amount=decimal.Decimal("12.50"), at=datetime.datetime(2024, 5, 1, 12, 30, tzinfo=datetime.UTC)),
        Doubled(n=0),
    ],
    ids=lambda event: type(event).__name__,
)
def test_check_round_trip_accepts_what_reads_back_equal(event: Event) -> None:
    check_round_trip(event)


# -- at publish, on the memory store and on a real SQLite file -------------------------------


@pytest.fixture(params=["memory", "sqlite"])
async def bus(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EventBus]:
    store = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'events.db'}"
    async with EventBus(store=store) as bus:
        yield bus


WaysIn = Callable[[EventBus, Event], Awaitable[Any]]
WAYS_IN: dict[str, WaysIn] = {
    "publish": lambda bus, event: bus.publish(event),
    "publish with headers": lambda bus, event: bus.publish(event, headers={"h": "v"}),
    "publish_many": lambda bus, event: bus.publish_many([Plain.model_validate(PLAIN), event]),
    "ingest": lambda bus, event: bus.ingest(event, event_id=uuid4(), origin="elsewhere"),
}
PLAIN: dict[str, Any] = {
    "n": 1,
    "text": "t",
    "at": "2024-05-01T12:30:00Z",
    "price": "1.5",
    "colour": "red",
    "id": str(uuid.UUID(int=1)),
    "path": "/tmp/x",
    "address": "10.0.0.1",
    "url": "https://example.com/a",
    "blob": "b",
    "lines": [{"sku": "S", "quantity": 2}],
    "tags": ["a"],
    "extra": {"k": [1]},
}


@pytest.mark.parametrize("way_in", list(WAYS_IN))
@pytest.mark.parametrize(("event", "match"), REFUSED[:3], ids=lambda value: type(value).__name__)
async def test_every_way_in_refuses_an_event_that_would_not_read_back_and_stores_nothing(
    bus: EventBus, way_in: str, event: Event, match: str
) -> None:
    await bus.publish(Plain.model_validate(PLAIN))
    with pytest.raises(ValueError, match=match):
        await WAYS_IN[way_in](bus, event)
    assert await bus.store.head() == 1
    assert [record.event for record in await bus.store.read()] == [Plain.model_validate(PLAIN)]


async def test_a_subscribed_class_is_refused_before_its_subscribers_see_it(bus: EventBus) -> None:
    seen: list[Event] = []

    @bus.subscribe(name="units")
    async def record_units(event: Units) -> None:  # an entry-taking subscription: the one-handler path
        seen.append(event)

    with pytest.raises(ValueError, match=r"Units\.weight"):
        await bus.publish(Units(weight=3))
    await bus.drain()
    assert seen == []
    assert await bus.store.head() == 0


async def test_events_with_symmetric_serializers_are_stored_and_read_back_equal(bus: EventBus) -> None:
    events: list[Event] = [
        Symmetric(amount=decimal.Decimal("12.50"), at=datetime.datetime(2024, 5, 1, 12, 30, tzinfo=datetime.UTC)),
        Base64Both(blob=b"\x00\xff"),
        Skipped(n=2, note="kept"),
        Plain.model_validate(PLAIN),
    ]
    seqs = [await bus.publish(event) for event in events]
    records = await bus.store.read()
    assert [record.seq for record in records] == seqs
    # decoded from the stored JSON, as another process would
    assert [registry.decode(record.type, record.version, record.data) for record in records] == events
