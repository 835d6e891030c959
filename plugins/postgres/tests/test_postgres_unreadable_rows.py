"""A row whose headers were changed behind the store's back into something that
is not a JSON object of strings fails alone, naming its seq; the page around it
is read."""

from __future__ import annotations

import anyio
import pytest
from eventbus_postgres import PostgresStore
from postgres_events import Tick, tick_records
from postgres_helpers import admin_sql, store_url

from eventbus import EventDecodeError
from eventbus.store.codec import UnreadableRecord


async def test_a_row_with_bad_headers_fails_alone_naming_its_seq(schema: str) -> None:
    store = PostgresStore(store_url(schema))
    await store.open()
    try:
        await store.append(tick_records(0, 0, 3))
        await anyio.to_thread.run_sync(
            admin_sql, f'UPDATE "{schema}".records SET headers = \'{{"k": 1}}\'::jsonb WHERE seq = 2'
        )
        first, bad, last = await store.read()
    finally:
        await store.close()
    assert isinstance(first.event, Tick)
    assert isinstance(last.event, Tick)
    assert isinstance(bad, UnreadableRecord)
    with pytest.raises(EventDecodeError, match="seq 2 cannot be read: headers are") as caught:
        _ = bad.event
    assert caught.value.seq == 2
