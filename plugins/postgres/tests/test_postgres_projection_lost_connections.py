"""A projection whose connections PostgreSQL loses (sessions terminated from
the server side, or the answer to a commit lost on the way back)
still applies each event exactly once: a failed attempt rolls back and is
tried again, and an attempt whose commit went through although its answer
was lost is found applied (the checkpoint read first in the next
transaction) and not applied again."""

from __future__ import annotations

import random
from typing import Any
from urllib.parse import urlsplit
from uuid import uuid4

import anyio
import pytest
from postgres_events import Tick
from postgres_helpers import POSTGRES_URL, admin_sql
from postgres_proxy import answer_losing_proxy
from structlog.testing import capture_logs

from eventbus import EventBus, Retry, StoreError, Transaction

_BATCH = 100
_MAX_BATCHES = 30
_APPLIED_ALREADY = "a projection's event was applied already"


def _terminate(application_name: str) -> None:
    admin_sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1", application_name)


async def _publish(bus: EventBus, ticks: list[Tick]) -> None:
    """Publish ``ticks``, again under the same ids while the faults refuse it
    (the store says "not stored", or cannot tell: a retry with the ids is safe)."""
    ids = [uuid4() for _ in ticks]
    while True:
        try:
            await bus.publish_many(ticks, event_ids=ids)
            return
        except StoreError:
            continue


def _faulted(logs: list[dict[str, Any]], kind: str) -> bool:
    """Whether the run has seen the fault that matters: a lost commit that went
    through (lost answers), a delivery's connection terminated (terminated)."""
    if kind == "answers-lost":
        return any(str(entry["event"]).startswith(_APPLIED_ALREADY) for entry in logs)
    return any(entry["event"] == "handler failed, retrying" for entry in logs)


@pytest.mark.parametrize("kind", ["terminated", "answers-lost"])
async def test_a_projection_applies_each_event_once_while_connections_are_lost(schema: str, kind: str) -> None:
    application_name = f"projection-{schema}"
    options = f"schema={schema}&application_name={application_name}"
    table = f'"{schema}".counted'
    async with EventBus(store=f"{POSTGRES_URL}?{options}") as setup:  # creates the schema
        await setup.publish_many([Tick(n=n) for n in range(_BATCH)])
    await anyio.to_thread.run_sync(admin_sql, f"CREATE TABLE {table} (n INTEGER NOT NULL)")

    server = urlsplit(POSTGRES_URL)
    with capture_logs() as logs:
        async with answer_losing_proxy(server.port or 5432) as proxy:
            through_proxy = f"{server.scheme}://{server.username}@127.0.0.1:{proxy.port}{server.path}?{options}"
            bus = EventBus(store=through_proxy if kind == "answers-lost" else f"{POSTGRES_URL}?{options}", lease_ttl=5)

            @bus.subscribe(
                Tick, durable=True, name="counter", from_seq=1, retry=Retry(attempts=20, backoff=0.01, jitter=0.0)
            )
            async def count(event: Tick, tx: Transaction) -> None:
                await tx.execute(f"INSERT INTO {table} (n) VALUES ($1)", event.n)

            async def inject() -> None:
                while True:
                    if kind == "answers-lost":
                        proxy.lose_a_commit_answer()
                    else:
                        await anyio.to_thread.run_sync(_terminate, application_name)
                    await anyio.sleep(random.uniform(0.05, 0.2))  # fault-injection cadence, not a wait

            events = _BATCH
            async with bus:
                async with anyio.create_task_group() as faults:
                    faults.start_soon(inject)
                    with anyio.fail_after(240):
                        while True:
                            await bus.drain()
                            if _faulted(logs, kind) or events >= _BATCH * _MAX_BATCHES:
                                break
                            await _publish(bus, [Tick(n=n) for n in range(events, events + _BATCH)])
                            events += _BATCH
                    faults.cancel_scope.cancel()
                await bus.drain()  # every event, without faults now
                letters = await bus.dead_letters.list()

    [counts] = await anyio.to_thread.run_sync(admin_sql, f"SELECT count(*) AS n, count(DISTINCT n) AS d FROM {table}")
    assert (counts["n"], counts["d"]) == (events, events)
    assert letters == []
    assert _faulted(logs, kind), f"no {kind} fault hit a projection's delivery in {events} events"
