"""PostgreSQL retention: options from the URL and keywords, and a schema made before retention."""

from __future__ import annotations

from datetime import timedelta

import anyio
import pytest
from eventbus_postgres import PostgresOptions, PostgresStore
from eventbus_postgres._schema import MIGRATIONS
from postgres_events import tick_records
from postgres_helpers import admin_sql, store_url

from eventbus import HistoryTruncated, Retention


def test_retention_in_the_query_string_and_keywords_win() -> None:
    url = "postgresql://app:secret@db:5432/events?schema=billing&keep=1000&keep_age=30d&sslmode=disable"
    store = PostgresStore(url)
    assert store.options == PostgresOptions(
        schema="billing", retention=Retention(keep=1_000, keep_age=timedelta(days=30))
    )
    assert PostgresStore(url, retention=5).options.retention == Retention(keep=5)
    assert PostgresStore("postgresql://db/events").options.retention is None


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("keep=lots", "keep must be a whole number"),
        ("keep_age=soon", "not an age: 'soon'"),
        ("keep=-1", "keep must be an int >= 0"),
    ],
)
def test_bad_retention_in_the_url_is_a_value_error_naming_it(query: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        PostgresStore(f"postgresql://app:secret@db/events?{query}")
    assert "secret" not in str(caught.value)
    assert "postgresql://app:***@db/events" in str(caught.value)


async def test_a_schema_of_version_one_gains_first_seq(schema: str) -> None:
    s = f'"{schema}"'

    def make_version_one() -> None:
        admin_sql(f"CREATE SCHEMA {s}")
        admin_sql(f"CREATE TABLE {s}.schema_version (version integer PRIMARY KEY)")
        for statement in MIGRATIONS[0]:
            admin_sql(statement.format(s=s))
        admin_sql(f"INSERT INTO {s}.schema_version (version) VALUES (1)")

    await anyio.to_thread.run_sync(make_version_one)
    store = PostgresStore(store_url(schema))
    await store.open()
    try:
        assert store.first_seq == 1
        await store.append(tick_records(0, 0, 20))
        result = await store.compact(keep=5)
        assert (result.removed, result.first_seq) == (15, 16)
        with pytest.raises(HistoryTruncated, match=schema):
            await store.read(3)
    finally:
        await store.close()
