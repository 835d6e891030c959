"""When PostgreSQL terminates the store's connections (from the server side,
``pg_terminate_backend``) while publishers run, `publish` and `publish_many`
tell the truth: a seq returned is that event's stored seq, a `StoreError`
means nothing was stored, and only `PublishOutcomeUnknown` leaves it open,
with the ids a retry needs. No driver exception escapes, and a retry with
the same ids never stores an event twice."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID, uuid4

import anyio
import pytest
from postgres_events import Tick
from postgres_helpers import POSTGRES_URL, admin_sql
from postgres_proxy import answer_losing_proxy
from structlog.testing import capture_logs

from eventbus import EventBus, PublishOutcomeUnknown, StoreError

_PUBLISHERS = 4
_ROUNDS = 60
_STORED_YET_LOST = 2
"""With lost answers, the run goes on until this many appends were found
stored after their connection was lost (the case a naive store lies about)."""
_SETTLED_AFTER_TERMINATION = 2
"""With terminated sessions, the run goes on until this many appends lost
their connection while committing (a termination often finds a session idle)."""
_WAIT = 200.0
"""Seconds the publishers may run: on a loaded machine (two cores, the suite
beside other work) a run took up to 70 s to see enough faults, and an append
whose answer was lost waits up to the URL's ``outcome_timeout`` to settle."""


def _terminate(application_name: str) -> int:
    """Terminate every server session of that ``application_name``; how many there were."""
    rows = admin_sql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1", application_name
    )
    return len(rows)


def _stored(schema: str, ids: list[UUID]) -> dict[UUID, int]:
    rows = admin_sql(f'SELECT event_id, seq FROM "{schema}".records WHERE event_id = ANY($1::uuid[])', ids)
    return {row["event_id"]: row["seq"] for row in rows}


def _settled(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The store's reports of appends it settled after losing their connection."""
    return [entry for entry in logs if str(entry["event"]).startswith("the connection was lost while an append")]


@asynccontextmanager
async def _faults(kind: str, schema: str, logs: list[dict[str, Any]]) -> AsyncIterator[tuple[str, Fault]]:
    """The store URL to use, and a function that injects one fault of ``kind``
    (and says whether the run has seen enough of them)."""
    application_name = f"lost-{schema}"
    options = f"schema={schema}&application_name={application_name}&outcome_timeout=30"
    if kind == "terminated":

        async def terminate() -> bool:
            await anyio.to_thread.run_sync(_terminate, application_name)
            return len(_settled(logs)) >= _SETTLED_AFTER_TERMINATION

        yield f"{POSTGRES_URL}?{options}", terminate
        return
    server = urlsplit(POSTGRES_URL)
    async with answer_losing_proxy(server.port or 5432) as proxy:

        async def lose_answers() -> bool:
            proxy.lose_an_answer()
            return sum(entry["stored"] for entry in _settled(logs)) >= _STORED_YET_LOST

        yield f"{server.scheme}://{server.username}@127.0.0.1:{proxy.port}{server.path}?{options}", lose_answers


Fault = Callable[[], Awaitable[bool]]


@pytest.mark.timeout(_WAIT + 60)
@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("kind", ["terminated", "answers-lost"])
async def test_publish_tells_the_truth_when_connections_are_lost(schema: str, kind: str, batch: int) -> None:
    answered: list[tuple[list[UUID], list[int]]] = []
    refused: list[tuple[list[UUID], StoreError]] = []
    in_doubt: list[tuple[list[UUID], PublishOutcomeUnknown]] = []
    done = anyio.Event()

    async def publish(bus: EventBus, publisher: int) -> None:
        round_ = 0
        while not done.is_set():
            round_ += 1
            ids = [uuid4() for _ in range(batch)]
            events = [Tick(writer=publisher, batch=round_, n=k) for k in range(batch)]
            try:
                if batch == 1:
                    seqs = [await bus.publish(events[0], event_id=ids[0])]
                else:
                    seqs = await bus.publish_many(events, event_ids=ids)
            except PublishOutcomeUnknown as exc:
                in_doubt.append((ids, exc))
            except StoreError as exc:
                refused.append((ids, exc))
            else:
                answered.append((ids, seqs))

    async def inject(fault: Fault) -> None:
        faults = 0
        while True:
            enough = await fault()
            faults += 1
            if enough and len(answered) + len(refused) + len(in_doubt) >= _PUBLISHERS * _ROUNDS:
                done.set()
                return
            with anyio.move_on_after(random.uniform(0.02, 0.2)):  # fault-injection cadence, not a wait
                await done.wait()

    with capture_logs() as logs:
        async with _faults(kind, schema, logs) as (url, fault), EventBus(url) as bus:
            with anyio.fail_after(_WAIT):
                async with anyio.create_task_group() as group:
                    group.start_soon(inject, fault)
                    for publisher in range(_PUBLISHERS):
                        group.start_soon(publish, bus, publisher)
            retried: list[tuple[list[UUID], list[int]]] = []
            for ids, exc in in_doubt:
                assert list(exc.event_ids) == ids
                events = [Tick(n=-1) for _ in ids]
                retried.append((ids, await bus.publish_many(events, event_ids=exc.event_ids)))

    for _ids, exc in refused + in_doubt:  # typed, the driver's error (or what settling found) chained
        assert exc.__cause__ is not None, exc
    everything = [event_id for ids, _ in answered + refused + in_doubt for event_id in ids]
    stored = await anyio.to_thread.run_sync(_stored, schema, everything)
    for ids, seqs in answered + retried:
        assert [stored.get(event_id) for event_id in ids] == seqs
    for ids, exc in refused:
        assert not any(event_id in stored for event_id in ids), f"{exc!r} raised, yet the events were stored"
    [counts] = admin_sql(
        f'SELECT count(*) AS n, count(DISTINCT event_id) AS ids, max(seq) AS head FROM "{schema}".records'
    )
    assert counts["n"] == counts["ids"] == counts["head"]  # one record per event id, seqs gapless
    settled = _settled(logs)
    assert settled, "no append lost its connection while committing: the test did not exercise the fault"
    print(
        f"{kind}: {len(answered)} answered, {len(refused)} refused, {len(in_doubt)} in doubt; "
        f"{len(settled)} appends settled after a lost connection, {sum(e['stored'] for e in settled)} of them stored"
    )
