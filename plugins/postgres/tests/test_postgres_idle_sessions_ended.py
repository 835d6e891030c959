"""When PostgreSQL ends the store's idle pooled sessions (``pg_terminate_backend``,
a restart, ``idle_session_timeout``) and the end of the stream reaches the
client after the server's last message, asyncpg still lends such a
connection, and refuses the next statement on it before sending anything.
Every kind of work the store does on its pool then runs again on another
connection: nothing fails, nothing is stored twice, and a refused
connection is never lent again (the pool hands out its most recently
returned connection first, so a retry on the same one would be refused
again)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import anyio
import pytest
from eventbus_postgres import PostgresStore
from postgres_events import tick_records
from postgres_helpers import POSTGRES_URL, admin_sql
from postgres_proxy import AnswerLosingProxy, answer_losing_proxy

_POOL = 3


def _terminate(application_name: str) -> int:
    """Terminate every server session of that ``application_name``; how many there were."""
    rows = admin_sql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1", application_name
    )
    return len(rows)


async def _end_idle_sessions(proxy: AnswerLosingProxy, application_name: str) -> None:
    """End every pooled session of the store from the server's side, and wait
    until the server has closed each (its ``FATAL`` message passed on to the
    store, the close held back by the proxy)."""
    closed = proxy.server_closes
    ended = await anyio.to_thread.run_sync(_terminate, application_name)
    assert ended >= 1, "no pooled session to end"
    with anyio.fail_after(10):
        await proxy.wait_server_closes(closed + ended)


async def _append(store: PostgresStore) -> None:
    head = await store.head()
    await store.append(tick_records(writer=1, first=head, count=2))


async def _append_stored_ids(store: PostgresStore) -> None:
    """The append that finds an id stored already: a transaction that looks the ids up."""
    [record] = await store.read(1, limit=1)
    assert await store.append([record]) == [0]


async def _read(store: PostgresStore) -> None:
    records = await store.read(1)
    assert [record.seq for record in records] == list(range(1, len(records) + 1))


async def _checkpoint(store: PostgresStore) -> None:
    await store.save_checkpoints({"counter": 1})
    assert await store.load_checkpoint("counter") == 1


async def _dead_letters(store: PostgresStore) -> None:
    assert list(await store.dead_letters()) == []


async def _projection(store: PostgresStore) -> None:
    tx = await store.begin_projection()
    await tx.position("projection")
    await tx.save_checkpoint("projection", 2, None)
    await tx.commit()
    assert await store.load_checkpoint("projection") == 2


async def _compact(store: PostgresStore) -> None:
    result = await store.compact(keep=10_000)
    assert result.removed == 0


_WORK: dict[str, Callable[[PostgresStore], Awaitable[None]]] = {
    "append": _append,
    "append stored ids": _append_stored_ids,
    "read": _read,
    "checkpoint": _checkpoint,
    "dead letters": _dead_letters,
    "projection": _projection,
    "compact": _compact,
}
"""Each kind of work the store does on a pooled connection, checking its answer."""


@pytest.mark.parametrize("kind", list(_WORK))
async def test_work_on_a_pooled_session_the_server_ended_runs_on_a_new_connection(schema: str, kind: str) -> None:
    application_name = f"idle-{schema}"
    server = urlsplit(POSTGRES_URL)
    async with answer_losing_proxy(server.port or 5432) as proxy:
        options = f"schema={schema}&application_name={application_name}&min_pool_size={_POOL}&max_pool_size={_POOL}"
        store = PostgresStore(f"{server.scheme}://{server.username}@127.0.0.1:{proxy.port}{server.path}?{options}")
        await store.open()
        try:
            await store.append(tick_records(writer=0, first=0, count=3))
            proxy.hold_server_closes()
            for _ in range(2):  # the second time on connections opened after the first
                await _end_idle_sessions(proxy, application_name)
                with anyio.fail_after(30):
                    await _WORK[kind](store)
            proxy.let_closes_through()
            await _WORK[kind](store)
        finally:
            await store.close()

    rows = await anyio.to_thread.run_sync(admin_sql, f'SELECT seq, event_id FROM "{schema}".records ORDER BY seq')
    assert [row["seq"] for row in rows] == list(range(1, len(rows) + 1))
    assert len({row["event_id"] for row in rows}) == len(rows)
