"""Fixtures of the PostgreSQL store's tests: a reachable server, and a fresh schema per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from postgres_helpers import POSTGRES_URL, admin_sql, drop_schema, new_schema_name


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The test server's URL; fails (never skips) every test when it is not reachable."""
    try:
        admin_sql("SELECT 1")
    except Exception as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {POSTGRES_URL} ({type(exc).__name__}: {exc}); "
            "start it or point EVENTBUS_POSTGRES_URL at one",
            pytrace=False,
        )
    return POSTGRES_URL


@pytest.fixture
def schema(postgres_server: str) -> Iterator[str]:
    """A schema name for this test alone; the schema is dropped afterwards."""
    name = new_schema_name()
    yield name
    drop_schema(name)
