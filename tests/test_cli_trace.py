"""``eventbus trace``: causation trees of events published by real handlers, on real SQLite files and PostgreSQL.

The trees are read by `trace` in this process (on asyncio and trio) and drawn
by the command in a child process, without a terminal.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import anyio
import pytest

from eventbus import Event, EventBus, Record
from eventbus.cli.trace import Trace, TraceNode, trace
from eventbus.store import store_from_url
from tests.postgres_server import POSTGRES_URL, admin_sql, with_password

WAIT = 30
PASSWORD = "s3cret-pw"


class OrderEvent(Event, name="trace.order_event"):
    order_id: str


class Placed(OrderEvent, name="trace.order_placed"):
    pass


class Paid(OrderEvent, name="trace.payment_captured"):
    pass


class Reserved(OrderEvent, name="trace.stock_reserved"):
    pass


class Shipped(OrderEvent, name="trace.order_shipped"):
    pass


def _shop(url: str) -> EventBus:
    """An order's chain: placed → paid and reserved; paid → shipped; mailing order B's shipment fails."""
    bus = EventBus(store=url)

    @bus.subscribe
    async def take(event: Placed) -> None:
        await bus.publish(Paid(order_id=event.order_id))
        await bus.publish(Reserved(order_id=event.order_id))

    @bus.subscribe
    async def ship(event: Paid) -> None:
        await bus.publish(Shipped(order_id=event.order_id))

    @bus.subscribe(name="mailer")
    async def mail(event: Shipped) -> None:
        if event.order_id == "B":
            raise RuntimeError("mail server refused B")

    return bus


async def _orders(url: str, *order_ids: str) -> dict[tuple[str, str], Record]:
    """Place the orders, each chain run to its end before the next; every stored record by (type name, order id)."""
    async with _shop(url) as bus:
        for order_id in order_ids:
            await bus.publish(Placed(order_id=order_id))
            await bus.drain(WAIT)
        records = [record async for record in bus.replay(OrderEvent)]
    return {(record.type, record.event.order_id): record for record in records}


async def _ingest(url: str, *items: tuple[Event, UUID, UUID, UUID | None]) -> None:
    """Append events from "another service": (event, event id, correlation id, causation id); handlers run on them."""
    async with _shop(url) as bus:
        for event, event_id, correlation, causation in items:
            await bus.ingest(
                event, event_id=event_id, origin="billing", correlation_id=correlation, causation_id=causation
            )
        await bus.drain(WAIT)


def _eventbus(*args: str, columns: int = 200) -> subprocess.CompletedProcess[str]:
    """``eventbus ARGS`` in a child process, stdin/stdout/stderr not terminals."""
    return subprocess.run(
        [sys.executable, "-m", "eventbus.cli", *args],
        input="",
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": str(columns)},
        timeout=WAIT,
        check=False,
    )


def _shape(node: TraceNode) -> tuple[str, list[Any]]:
    """A tree as (type, sorted children), siblings' seq order aside (handlers of several subscriptions race)."""
    return node.record.type, sorted(_shape(child) for child in node.children)


def _json_shape(node: dict[str, Any]) -> tuple[str, list[Any]]:
    return node["type"], sorted(_json_shape(child) for child in node["children"])


_EVENT_LINE = re.compile(r"\d+  (trace\.\w+) v1  ")

ORDER_TREE: tuple[str, list[Any]] = (
    "trace.order_placed",
    [("trace.payment_captured", [("trace.order_shipped", [])]), ("trace.stock_reserved", [])],
)


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'events.db'}"


@pytest.fixture
def pg_schema() -> Iterator[str]:
    schema = f"eventbus_trace_{uuid4().hex[:12]}"
    yield schema
    admin_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# -- what trace finds ------------------------------------------------------------------------


async def test_an_event_id_gives_the_tree_of_what_followed_it(url: str) -> None:
    stored = await _orders(url, "A", "B")
    found = await trace(url, stored["trace.order_placed", "A"].event_id)
    assert (found.by, found.count, found.notes) == ("event", 4, ())
    [root] = found.roots
    assert _shape(root) == ORDER_TREE
    events = [node.record.event for node in _nodes(found)]
    assert {event.order_id for event in events if isinstance(event, OrderEvent)} == {"A"}
    assert all(not node.dead_letters for node in _nodes(found))


async def test_an_event_in_the_middle_of_a_chain_is_the_root_of_its_own_tree(url: str) -> None:
    stored = await _orders(url, "A")
    found = await trace(url, stored["trace.payment_captured", "A"].event_id)
    assert found.by == "event"
    placed = stored["trace.order_placed", "A"].event_id
    assert found.notes == (f"seq 2 was caused by event {placed}; the correlation id {placed} gives the whole chain",)
    assert [_shape(root) for root in found.roots] == [("trace.payment_captured", [("trace.order_shipped", [])])]


async def test_dead_letters_hang_under_the_event_they_failed_on(url: str) -> None:
    stored = await _orders(url, "B")
    found = await trace(url, stored["trace.order_placed", "B"].event_id)
    [letter] = [letter for node in _nodes(found) for letter in node.dead_letters]
    assert letter.record.type == "trace.order_shipped"
    assert letter.subscription == "mailer"
    shipped = next(node for node in _nodes(found) if node.record.type == "trace.order_shipped")
    assert shipped.dead_letters == [letter]


async def test_a_correlation_id_gives_every_tree_of_the_chain(url: str) -> None:
    # a chain begun in another service: two of its events arrive here, each caused by one we never saw
    correlation, elsewhere = uuid4(), uuid4()
    first, second = uuid4(), uuid4()
    await _ingest(
        url,
        (Placed(order_id="C"), first, correlation, elsewhere),
        (Paid(order_id="C"), second, correlation, uuid4()),
    )
    await _orders(url, "D")  # another chain, not in the trace
    found = await trace(url, correlation)
    assert (found.by, found.count) == ("correlation", 6)
    assert [root.record.event_id for root in found.roots] == [first, second]  # roots first, in seq order
    assert [_shape(root) for root in found.roots] == [
        ORDER_TREE,
        ("trace.payment_captured", [("trace.order_shipped", [])]),
    ]
    assert len(found.notes) == 2
    assert f"was caused by event {elsewhere}, which this store does not hold" in found.notes[0]


async def test_causation_cycles_end_and_show_each_event_once(url: str) -> None:
    correlation, one, two, itself = uuid4(), uuid4(), uuid4(), uuid4()
    await _ingest(
        url,
        (Reserved(order_id="X"), one, correlation, two),
        (Reserved(order_id="Y"), two, correlation, one),
        (Reserved(order_id="Z"), itself, correlation, itself),
    )
    by_correlation = await trace(url, correlation)
    assert sorted(node.record.event_id for node in _nodes(by_correlation)) == sorted([one, two, itself])
    assert [root.record.event_id for root in by_correlation.roots] == [itself, one]
    assert by_correlation.notes == ("seq 1 is part of a causation cycle; shown as a root",)
    by_event = await trace(url, one)
    assert [_ids(root) for root in by_event.roots] == [(one, [(two, [])])]


async def test_a_root_removed_by_retention_is_said_so(url: str) -> None:
    stored = await _orders(url, "A", "B")  # A's chain is seqs 1 to 4 (B's comes after it)
    store = store_from_url(url)
    await store.open()
    try:
        await store.compact(keep=7)
    finally:
        await store.close()
    root = stored["trace.order_placed", "A"].event_id
    found = await trace(url, root)
    assert (found.by, found.first_seq, found.count) == ("correlation", 2, 3)
    assert found.notes[-1] == "history before seq 2 was removed by retention"
    assert f"caused by event {root}" in found.notes[0]


async def test_on_postgres(pg_schema: str) -> None:
    url = f"{with_password(POSTGRES_URL, PASSWORD)}?schema={pg_schema}"
    stored = await _orders(url, "A", "B")
    found = await trace(url, stored["trace.order_placed", "B"].event_id)
    assert [_shape(root) for root in found.roots] == [ORDER_TREE]
    assert sum(len(node.dead_letters) for node in _nodes(found)) == 1


def _nodes(found: Trace) -> list[TraceNode]:
    nodes, stack = [], list(found.roots)
    while stack:
        node = stack.pop()
        nodes.append(node)
        stack.extend(node.children)
    return nodes


def _letter_ids(url: str) -> list[str]:
    done = _eventbus("dlq", "list", url, "--json")
    return [json.loads(line)["id"] for line in done.stdout.splitlines()]


def _ids(node: TraceNode) -> tuple[UUID, list[Any]]:
    return node.record.event_id, [_ids(child) for child in node.children]


# -- the command -------------------------------------------------------------------------------


def test_the_tree_is_drawn_one_event_a_line(url: str) -> None:
    stored = anyio.run(_orders, url, "A", "B")
    placed = stored["trace.order_placed", "B"]
    done = _eventbus("trace", url, str(placed.event_id))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    heading, *lines = done.stdout.splitlines()
    assert heading == f"event {placed.event_id}: 4 events, in {url}"
    assert "\x1b[" not in done.stdout  # no terminal: no colours
    by_type = {match[1]: line for line in lines if (match := _EVENT_LINE.search(line))}
    assert set(by_type) == {record_type for record_type, order_id in stored if order_id == "B"}
    root = by_type["trace.order_placed"]
    assert root.startswith(f"└── {placed.seq}  trace.order_placed v1  …{str(placed.event_id)[-8:]}  ")
    assert placed.recorded_at.isoformat(timespec="milliseconds") in root
    assert root.endswith('{"order_id":"B"}')
    shipped = stored["trace.order_shipped", "B"]
    # shipped hangs under paid, one level deeper than paid under placed; its time is after the root's
    indent = {record_type: len(line) - len(line.lstrip("│ ├└─")) for record_type, line in by_type.items()}
    assert indent["trace.order_shipped"] > indent["trace.payment_captured"] > indent["trace.order_placed"]
    assert indent["trace.stock_reserved"] == indent["trace.payment_captured"]
    assert " ms  " in by_type["trace.order_shipped"]
    [letter_line] = [line for line in lines if "dead letter" in line]
    letter_id = _letter_ids(url)[0]
    assert letter_line.endswith(
        f"dead letter of 'mailer' after 1 attempt: RuntimeError: mail server refused B  id {letter_id}"
    )
    assert lines.index(letter_line) == lines.index(by_type["trace.order_shipped"]) + 1
    assert f"{shipped.seq}  trace.order_shipped" in by_type["trace.order_shipped"]


def test_each_line_fits_a_narrow_terminal(url: str) -> None:
    stored = anyio.run(_orders, url, "B")
    done = _eventbus("trace", url, str(stored["trace.order_placed", "B"].event_id), columns=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert max(map(len, lines)) <= 60
    tree = [line for line in lines if re.match("[│ ]*[├└]── ", line)]
    assert len(tree) == 5  # four events and a dead letter, each on one line cut to the width (the heading wraps)
    assert len([line for line in tree if _EVENT_LINE.search(line)]) == 4
    assert all(line.endswith("…") for line in tree)


def test_json_has_the_whole_records_and_ids(url: str) -> None:
    stored = anyio.run(_orders, url, "A", "B")
    placed = stored["trace.order_placed", "B"]
    done = _eventbus("trace", url, str(placed.event_id), "--json")
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert {key: found[key] for key in ("store", "id", "by", "count", "first_seq", "head", "notes")} == {
        "store": url,
        "id": str(placed.event_id),
        "by": "event",
        "count": 4,
        "first_seq": 1,
        "head": 8,
        "notes": [],
    }
    [root] = found["roots"]
    assert _json_shape(root) == ORDER_TREE
    assert root["event_id"] == str(placed.event_id)
    assert root["correlation_id"] == str(placed.event_id)
    assert root["causation_id"] is None
    assert root["data"] == {"order_id": "B"}
    assert root["seq"] == placed.seq
    paid = next(child for child in root["children"] if child["type"] == "trace.payment_captured")
    assert paid["causation_id"] == str(placed.event_id)
    assert paid["event_id"] == str(stored["trace.payment_captured", "B"].event_id)
    [shipped] = paid["children"]
    [letter] = shipped["dead_letters"]
    assert letter["subscription"] == "mailer"
    assert letter["error_message"] == "mail server refused B"
    assert UUID(letter["id"])
    assert "record" not in letter


def test_a_correlation_id_with_several_roots(url: str) -> None:
    correlation = uuid4()
    anyio.run(
        _ingest,
        url,
        (Placed(order_id="C"), uuid4(), correlation, uuid4()),
        (Placed(order_id="E"), uuid4(), correlation, uuid4()),
    )
    done = _eventbus("trace", url, str(correlation))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"correlation {correlation}: 8 events in 2 trees, in {url}\n")
    roots = [line for line in done.stdout.splitlines() if "trace.order_placed" in line]
    assert [line[:4] for line in roots] == ["├── ", "└── "]
    notes = [line for line in done.stdout.splitlines() if line.startswith("note: ")]
    assert len(notes) == 2
    as_json = json.loads(_eventbus("trace", url, str(correlation), "--json").stdout)
    assert as_json["by"] == "correlation"
    assert [root["data"]["order_id"] for root in as_json["roots"]] == ["C", "E"]


@pytest.mark.parametrize("retention", [False, True])
def test_an_id_that_matches_nothing_exits_1_naming_it(url: str, retention: bool) -> None:
    anyio.run(_orders, url, "A")
    if retention:
        assert _eventbus("compact", url, "--keep", "2").returncode == 0
    wanted = uuid4()
    done = _eventbus("trace", url, str(wanted))
    assert done.returncode == 1
    assert done.stdout == ""
    first = 3 if retention else 1
    removed = "; history before seq 3 was removed by retention" if retention else ""
    assert done.stderr == (
        f"eventbus: no event id or correlation id {wanted} in {url} (read seqs {first} to 4{removed})\n"
    )


def test_a_chain_too_deep_for_json_is_still_drawn(url: str) -> None:
    depth = 1_200  # past Python's recursion limit; a bus allows such a chain only with a raised max_causation_depth
    ids = [uuid4() for _ in range(depth)]

    async def chain() -> None:
        async with EventBus(store=url, max_causation_depth=depth) as bus, anyio.create_task_group() as tasks:
            # at once, so that they share commits: stored in any order, the chain is found by its correlation id
            for level, (event_id, cause) in enumerate(zip(ids, [None, *ids], strict=False)):
                tasks.start_soon(
                    partial(
                        bus.ingest,
                        Reserved(order_id="deep"),
                        event_id=event_id,
                        origin="billing",
                        correlation_id=ids[0],
                        causation_id=cause,
                        depth=level,
                    )
                )

    anyio.run(chain)
    drawn = _eventbus("trace", url, str(ids[0]))
    assert drawn.returncode == 0, drawn.stderr
    assert drawn.stdout.startswith(f"event {ids[0]}: {depth} events, in ")
    as_json = _eventbus("trace", url, str(ids[0]), "--json")
    assert as_json.returncode == 1
    assert as_json.stderr == (
        f"eventbus: the trace of {ids[0]} is nested too deeply for JSON; draw it without --json\n"
    )


def test_an_empty_store_says_so() -> None:
    wanted = uuid4()
    done = _eventbus("trace", "memory://", str(wanted))
    assert done.returncode == 1
    assert done.stderr == f"eventbus: no event id or correlation id {wanted} in memory:// (it holds no records)\n"


def test_an_id_that_is_not_a_uuid_exits_2(url: str) -> None:
    anyio.run(_orders, url, "A")
    done = _eventbus("trace", url, "A1")
    assert done.returncode == 2
    assert "'A1' is not a valid UUID" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_missing_store_is_named_and_not_created(tmp_path: Path) -> None:
    path = tmp_path / "typo.db"
    done = _eventbus("trace", f"sqlite:///{path}", str(uuid4()))
    assert done.returncode == 1
    assert "does not exist" in done.stderr
    assert len(done.stderr.splitlines()) == 1
    assert not path.exists()


def test_on_postgres_the_password_is_hidden(pg_schema: str) -> None:
    url = f"{with_password(POSTGRES_URL, PASSWORD)}?schema={pg_schema}"
    stored = anyio.run(_orders, url, "A")
    placed = str(stored["trace.order_placed", "A"].event_id)
    outputs = [
        _eventbus("trace", url, placed),
        _eventbus("trace", url, placed, "--json"),
        _eventbus("trace", url, str(uuid4())),
    ]
    for done in outputs:
        assert PASSWORD not in done.stdout + done.stderr
    assert [done.returncode for done in outputs] == [0, 0, 1]
    assert "postgres:***@" in outputs[0].stdout.splitlines()[0]
    assert json.loads(outputs[1].stdout)["store"].startswith("postgresql://postgres:***@")
    assert "postgres:***@" in outputs[2].stderr
