"""What the PostgreSQL store adds to the conformance suite: URLs, options, errors, schema, format."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator

import anyio
import pytest
from eventbus_postgres import DEFAULT_SCHEMA, SCHEMA_VERSION, PostgresOptions, PostgresStore
from postgres_events import Tick, tick_records
from postgres_helpers import POSTGRES_URL, admin_sql, new_schema_name, store_url

from eventbus.exceptions import StoreError
from eventbus.record import Record
from eventbus.store import store_from_url


@pytest.fixture
async def store(schema: str) -> AsyncIterator[PostgresStore]:
    store = PostgresStore(store_url(schema))
    await store.open()
    yield store
    await store.close()


async def sql(query: str, *args: object) -> list[object]:
    """Rows of ``query`` run behind the store's back, as tuples."""
    rows = await anyio.to_thread.run_sync(admin_sql, query, *args)
    return [tuple(row) for row in rows]


def _store_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "the PostgreSQL store: asyncio loop"]


# -- URLs and options ------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres@127.0.0.1:5432/test",
        "postgres://postgres@127.0.0.1:5432/test",
        "postgresql+asyncpg://postgres@127.0.0.1:5432/test",
    ],
)
def test_store_urls_resolve_through_the_entry_points(url: str) -> None:
    store = store_from_url(url, schema="elsewhere")
    assert isinstance(store, PostgresStore)
    assert store.options.schema == "elsewhere"
    assert store.url == url


def test_options_default() -> None:
    store = PostgresStore("postgresql://postgres@127.0.0.1/test")
    assert store.options == PostgresOptions()
    assert store.options.schema == DEFAULT_SCHEMA


def test_the_query_string_carries_options_and_keywords_win() -> None:
    url = "postgresql://postgres@127.0.0.1/test?schema=billing&max_pool_size=3&connect_timeout=2.5&sslmode=disable"
    store = PostgresStore(url, min_pool_size=2)
    assert store.options == PostgresOptions(schema="billing", min_pool_size=2, max_pool_size=3, connect_timeout=2.5)
    assert PostgresStore(url, schema="shipping").options.schema == "shipping"


def test_a_password_never_shows() -> None:
    store = PostgresStore("postgresql://app:s3cret@db.internal:5432/events?schema=billing")
    assert store.url == "postgresql://app:***@db.internal:5432/events?schema=billing"
    assert "s3cret" not in repr(store)
    with pytest.raises(StoreError) as caught:
        PostgresStore("mysql://app:s3cret@db.internal/events")
    assert "s3cret" not in str(caught.value)
    assert "mysql://app:***@db.internal/events" in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "mysql://postgres@127.0.0.1/test",
        "sqlite:///events.db",
        "postgresql://postgres@[::1/test",
    ],
)
def test_a_bad_url_is_a_store_error_naming_it(url: str) -> None:
    with pytest.raises(StoreError, match="PostgreSQL URL") as caught:
        PostgresStore(url)
    assert url.split("?")[0] in str(caught.value)


@pytest.mark.parametrize(("query", "option"), [("max_pool_size=many", "max_pool_size"), ("schema=Not-Valid", "schema")])
def test_a_bad_option_in_the_url_is_a_value_error_naming_the_url_and_option(query: str, option: str) -> None:
    with pytest.raises(ValueError, match=option) as caught:
        PostgresStore(f"postgresql://postgres@127.0.0.1/test?{query}")
    assert "postgresql://postgres@127.0.0.1/test" in str(caught.value)


@pytest.mark.parametrize(
    "options",
    [
        {"schema": "Billing"},
        {"schema": "pg_catalog"},
        {"schema": "1st"},
        {"schema": "x" * 49},
        {"schema": 'billing"; DROP TABLE users; --'},
        {"min_pool_size": 0},
        {"min_pool_size": 5, "max_pool_size": 2},
        {"max_pool_size": True},
        {"connect_timeout": 0},
    ],
)
def test_bad_option_values_are_value_errors(options: dict[str, object]) -> None:
    name = next(iter(options))
    with pytest.raises(ValueError, match=name):
        PostgresStore.from_url("postgresql://postgres@127.0.0.1/test", **options)


def test_an_unknown_option_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="pool"):
        PostgresStore.from_url("postgresql://postgres@127.0.0.1/test", pool=3)


# -- connecting ------------------------------------------------------------------


async def test_an_unreachable_server_is_a_store_error_naming_the_url() -> None:
    store = PostgresStore("postgresql://app:s3cret@127.0.0.1:1/test", connect_timeout=5)
    with pytest.raises(
        StoreError, match=r"cannot connect to PostgreSQL at postgresql://app:\*\*\*@127\.0\.0\.1:1/test"
    ):
        await store.open()
    assert _store_threads() == []
    with pytest.raises(StoreError, match="not open"):
        await store.head()


async def test_a_missing_database_is_a_store_error(postgres_server: str) -> None:
    url = POSTGRES_URL.rsplit("/", 1)[0] + "/no_such_database_here"
    store = PostgresStore(url)
    with pytest.raises(StoreError, match="no_such_database_here"):
        await store.open()


async def test_a_store_that_is_not_open_refuses_work(schema: str) -> None:
    store = PostgresStore(store_url(schema))
    with pytest.raises(StoreError, match="not open"):
        await store.append(tick_records(0, 0, 1))
    with pytest.raises(StoreError, match="not open"):
        await store.read()
    await store.close()


async def test_opening_twice_is_an_error(store: PostgresStore) -> None:
    with pytest.raises(StoreError, match="already open"):
        await store.open()


async def test_a_closed_store_opens_again(store: PostgresStore) -> None:
    await store.append(tick_records(0, 0, 3))
    await store.close()
    await store.open()
    assert await store.head() == 3


async def test_only_trio_gets_a_loop_thread(schema: str, anyio_backend: str) -> None:
    store = PostgresStore(store_url(schema))
    await store.open()
    try:
        assert len(_store_threads()) == (1 if anyio_backend == "trio" else 0)
        await store.append(tick_records(0, 0, 2))
    finally:
        await store.close()
    assert _store_threads() == []


async def test_a_cancelled_call_leaves_the_store_usable(store: PostgresStore) -> None:
    with anyio.move_on_after(0.05) as scope:
        await store.wait_for_append(0)
    assert scope.cancelled_caught
    records = tick_records(0, 0, 2)
    await store.append(records)
    assert [record.seq for record in await store.read()] == [1, 2]


# -- the schema ------------------------------------------------------------------


async def test_opening_creates_the_schema_at_the_current_version(store: PostgresStore, schema: str) -> None:
    rows = await sql(f'SELECT version FROM "{schema}".schema_version ORDER BY version')
    assert rows == [(version,) for version in range(1, SCHEMA_VERSION + 1)]
    tables = await sql("SELECT table_name FROM information_schema.tables WHERE table_schema = $1", schema)
    assert {name for (name,) in tables} == {
        "schema_version",
        "seq_counter",
        "history",
        "records",
        "checkpoints",
        "dead_letters",
        "leases",
    }


async def test_stores_opening_at_once_create_the_schema_once(schema: str) -> None:
    stores = [PostgresStore(store_url(schema)) for _ in range(4)]
    async with anyio.create_task_group() as group:
        for store in stores:
            group.start_soon(store.open)
    try:
        await stores[0].append(tick_records(0, 0, 1))
        assert [await store.head() for store in stores] == [1, 1, 1, 1]
    finally:
        for store in stores:
            await store.close()
    assert await sql(f'SELECT count(*) FROM "{schema}".schema_version') == [(SCHEMA_VERSION,)]


async def test_a_newer_schema_is_refused(store: PostgresStore, schema: str) -> None:
    await store.close()
    await sql(f'INSERT INTO "{schema}".schema_version (version) VALUES ($1)', SCHEMA_VERSION + 1)
    with pytest.raises(StoreError, match=f"version {SCHEMA_VERSION + 1}, newer"):
        await store.open()


async def test_without_create_a_missing_schema_is_an_error_and_stays_missing(schema: str) -> None:
    missing = PostgresStore(store_url(schema), create=False)
    with pytest.raises(StoreError, match=f"schema '{schema}' .* does not exist"):
        await missing.open()
    assert await sql("SELECT 1 FROM pg_namespace WHERE nspname = $1", schema) == []
    await sql(f'CREATE SCHEMA "{schema}"')  # a schema without the store's tables is no store either
    with pytest.raises(StoreError, match="holds no eventbus store"):
        await store_from_url(store_url(schema), create=False).open()
    assert await sql("SELECT table_name FROM information_schema.tables WHERE table_schema = $1", schema) == []


async def test_without_create_an_existing_store_opens(store: PostgresStore, schema: str) -> None:
    await store.append(tick_records(0, 0, 2))
    existing = store_from_url(store_url(schema), create=False)
    await existing.open()
    try:
        assert [record.event for record in await existing.read()] == [Tick(n=0), Tick(n=1)]
    finally:
        await existing.close()


async def test_a_role_without_create_rights_uses_an_existing_schema(store: PostgresStore, schema: str) -> None:
    role = new_schema_name()
    await sql(f'CREATE ROLE "{role}" LOGIN')
    try:
        await sql(f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"')
        await sql(f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "{schema}" TO "{role}"')
        await sql(f'GRANT USAGE ON ALL SEQUENCES IN SCHEMA "{schema}" TO "{role}"')
        url = POSTGRES_URL.replace("://postgres@", f"://{role}@", 1)
        limited = PostgresStore(url, schema=schema)
        await limited.open()
        try:
            await limited.append(tick_records(0, 0, 2))
            assert [record.event for record in await store.read()] == [Tick(n=0), Tick(n=1)]
        finally:
            await limited.close()
        elsewhere = PostgresStore(url, schema=new_schema_name())
        with pytest.raises(StoreError, match="permission denied"):
            await elsewhere.open()
    finally:
        await sql(f'DROP OWNED BY "{role}"')
        await sql(f'DROP ROLE "{role}"')


async def test_schemas_are_separate_stores(store: PostgresStore) -> None:
    other_schema = new_schema_name()
    other = PostgresStore(store_url(other_schema))
    await other.open()
    try:
        await store.append(tick_records(0, 0, 3))
        await other.append(tick_records(1, 0, 1))
        assert await other.head() == 1
        assert [record.event for record in await other.read()] == [Tick(writer=1, n=0)]
        with anyio.move_on_after(0.2):
            await other.wait_for_append(1)
            pytest.fail("an append to another schema woke a waiter")
    finally:
        await other.close()
        await sql(f'DROP SCHEMA "{other_schema}" CASCADE')


# -- what is stored --------------------------------------------------------------


async def test_rows_are_plain_sql(store: PostgresStore, schema: str) -> None:
    record = tick_records(3, 7, 1)[0]
    headed = Record(
        0, Tick(n=8), Tick.__event_type__, 1, record.event_id.int + 1, 1_700_000_000_123_456_789,
        correlation_id=record.event_id, causation_id=record.event_id, headers={"origin": "billing"},
    )  # fmt: skip
    await store.append([record, headed])
    rows = await sql(
        f"SELECT seq, type, version, event_id, data::jsonb ->> 'n', recorded_at, headers ->> 'origin',"
        f' correlation_id, causation_id FROM "{schema}".records ORDER BY seq'
    )
    assert rows[0][:7] == (1, Tick.__event_type__, 1, record.event_id, "7", record.recorded_at_ns, None)
    assert rows[0][7:] == (None, None)
    assert rows[1][5:] == (1_700_000_000_123_456_789, "billing", record.event_id, record.event_id)
    (stored,) = await store.read(2)
    assert stored.recorded_at_ns == 1_700_000_000_123_456_789
    assert stored.event_id.int == record.event_id.int + 1


async def test_a_failed_append_leaves_no_gap(store: PostgresStore) -> None:
    await store.append(tick_records(0, 0, 2))
    rejected = tick_records(0, 2, 3)
    rejected[1].headers = {"bad": "\x00"}  # jsonb refuses NUL, so the server fails mid-statement
    with pytest.raises(StoreError, match="cannot append to PostgreSQL"):
        await store.append(rejected)
    assert await store.head() == 2
    later = tick_records(0, 2, 2)
    await store.append(later)
    assert [record.seq for record in later] == [3, 4]
    assert [record.event for record in await store.read()] == [Tick(n=n) for n in range(4)]


async def test_values_a_batch_shares_go_once_and_read_back_in_every_row(store: PostgresStore, schema: str) -> None:
    same = tick_records(1, 0, 3)  # one type, version and depth, no headers or causes: each goes once
    cause = same[0]
    mixed = [
        *tick_records(2, 0, 2),
        Record(0, Tick(n=9), "eventbus_postgres.tests.Tock", 2, 1 << 100, 5, cause.event_id, cause.event_id, depth=3),
        Record(0, Tick(n=10), Tick.__event_type__, 1, (1 << 100) + 1, 6, headers={"k": "v"}),
    ]
    await store.append(same)
    await store.append(mixed)
    rows = await sql(
        f"SELECT type, version, depth, headers ->> 'k', causation_id FROM \"{schema}\".records ORDER BY seq"
    )
    tick = (Tick.__event_type__, 1, 0, None, None)
    assert rows == [tick] * 5 + [("eventbus_postgres.tests.Tock", 2, 3, None, cause.event_id), (*tick[:3], "v", None)]
    read = await store.read()
    assert [(r.seq, r.event_id, r.depth, dict(r.headers)) for r in read] == [
        (seq, record.event_id, record.depth, dict(record.headers)) for seq, record in enumerate(same + mixed, 1)
    ]


# -- reading ---------------------------------------------------------------------


async def test_paging_through_reads_every_record_once_in_order(store: PostgresStore) -> None:
    await store.append(tick_records(0, 0, 450))
    seqs: list[int] = []
    while page := await store.read(len(seqs) + 1, limit=100):  # each full page reads the next one ahead
        seqs += [record.seq for record in page]
    assert seqs == list(range(1, 451))
    assert [record.seq for record in await store.read(101, to_seq=250, limit=100)] == list(range(101, 201))


async def test_a_page_read_ahead_while_short_is_read_again_once_it_has_grown(store: PostgresStore) -> None:
    await store.append(tick_records(0, 0, 150))
    assert len(await store.read(1, limit=100)) == 100  # full: the page from 101 is read ahead, 50 records then
    await store.append(tick_records(0, 150, 100))
    assert [record.seq for record in await store.read(101, limit=100)] == list(range(101, 201))


async def test_a_projections_connection_is_reset_before_the_store_uses_it_again(schema: str) -> None:
    store = PostgresStore(store_url(schema), max_pool_size=1)  # one connection: the projection's is the store's
    await store.open()
    try:
        projection = await store.begin_projection()
        await store.execute_in(
            projection.connection, "SELECT set_config('application_name', 'changed by a projection', false)", ()
        )
        await projection.commit()
        assert await store.checkpoints() == {}  # a statement of the store's own on that connection
        rows = await sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'changed by a projection'")
        assert rows == [(0,)]
    finally:
        await store.close()
