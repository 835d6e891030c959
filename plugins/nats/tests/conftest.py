"""Fixtures of the NATS bridge's tests: a reachable server with JetStream, and a stream per test."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError
from nats_helpers import NATS_URL, new_stream_name, run_jetstream


@pytest.fixture(scope="session")
def nats_server() -> str:
    """The test server's URL; fails (never skips) every test when it is not reachable with JetStream."""

    async def account(js: JetStreamContext) -> None:
        await js.account_info()

    try:
        run_jetstream(account)
    except Exception as exc:
        pytest.fail(
            f"NATS with JetStream is not reachable at {NATS_URL} ({type(exc).__name__}: {exc}); "
            "start nats-server -js or point EVENTBUS_NATS_URL at one",
            pytrace=False,
        )
    return NATS_URL


@pytest.fixture
def stream(nats_server: str) -> Iterator[str]:
    """A stream name for this test alone; the stream is deleted afterwards."""
    name = new_stream_name()
    yield name

    async def delete(js: JetStreamContext) -> None:
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(name)

    run_jetstream(delete)
