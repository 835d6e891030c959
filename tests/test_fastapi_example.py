"""``examples/fastapi_service.py``, tested the way its guide tells users to test theirs.

Behaviour: `TestBus` runs the app's bus on a test store, the app's own
lifespan runs on top (it finds the bus running and leaves it be), and
requests go through httpx2's ASGI transport (the client starlette's
`TestClient` is built on) in the test's own event loop. The deployed shape: FastAPI's `TestClient` runs the lifespan,
which runs the bus on a real SQLite file, across a restart.

On this branch a bus runs once, so each test builds its bus and app with
the example's factories; once `EventBus` can be entered again, the async
tests can share the module's own ``app`` and its bus, as a user's tests would.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx2
import pytest
from core_events import WAIT
from fastapi import FastAPI
from fastapi.testclient import TestClient

from eventbus import EventBus
from eventbus.testing import TestBus

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "fastapi_service.py"


def _load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fastapi_service", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


service = _load_example()
OrderPlaced = service.OrderPlaced
PaymentCaptured = service.PaymentCaptured
PaymentDeclined = service.PaymentDeclined
ADA = {"order_id": "A1", "customer": "ada", "amount": 25.0}
BIG = {"order_id": "A2", "customer": "bob", "amount": 2_500.0}


@dataclass
class Running:
    """The app under test: its bus under `TestBus`, and an HTTP client talking to it."""

    tb: TestBus
    client: httpx2.AsyncClient
    app: FastAPI


@asynccontextmanager
async def running(bus: EventBus, **testbus_options: Any) -> AsyncIterator[Running]:
    """What a user's fixture does: TestBus first, then the app's lifespan, then a client."""
    app = service.create_app(bus)
    transport = httpx2.ASGITransport(app=app)
    async with (
        TestBus(bus, **testbus_options) as tb,
        app.router.lifespan_context(app),
        httpx2.AsyncClient(transport=transport, base_url="http://orders.test") as client,
    ):
        yield Running(tb, client, app)


@pytest.fixture
async def shop(tmp_path: Path) -> AsyncIterator[Running]:
    async with running(service.build_bus(f"sqlite:///{tmp_path / 'production.db'}")) as app:
        yield app
    assert not (tmp_path / "production.db").exists(), "the test touched the production store"


async def test_posting_an_order_publishes_it_and_the_payment_follows(shop: Running) -> None:
    response = await shop.client.post("/orders", json=ADA)
    assert response.status_code == 202
    assert response.json() == {"order_id": "A1", "seq": 1}

    await shop.tb.drain(WAIT)

    shop.tb.assert_published(OrderPlaced, order_id="A1", customer="ada", amount=25.0)
    shop.tb.assert_published(PaymentCaptured, order_id="A1", amount=25.0)
    assert [record.type for record in shop.tb.published] == ["orders.placed", "orders.payment_captured"]
    order = await shop.client.get("/orders/A1")
    assert order.json() == {"order_id": "A1", "customer": "ada", "amount": 25.0, "status": "paid"}


async def test_a_declined_payment_is_raised_in_the_test(shop: Running) -> None:
    await shop.client.post("/orders", json=BIG)

    with pytest.raises(PaymentDeclined, match=r"A2: 2500\.00 is over the card limit"):
        await shop.tb.drain(WAIT)

    [letter] = shop.tb.dead_letters
    assert (letter.subscription, letter.attempts) == ("payments", 3)
    assert shop.tb.published_events(PaymentCaptured) == []


async def test_with_raise_errors_false_the_dead_letter_shows_in_health(tmp_path: Path) -> None:
    async with running(service.build_bus(), raise_errors=False) as shop:
        await shop.client.post("/orders", json=BIG)
        await shop.client.post("/orders", json=ADA)
        await shop.tb.drain(WAIT)

        health = (await shop.client.get("/health")).json()
        big = (await shop.client.get("/orders/A2")).json()

    assert big["status"] == "placed"
    assert [letter.error_message for letter in shop.tb.dead_letters] == [
        "A2: 2500.00 is over the card limit of 1000.00"
    ]
    payments = health["bus"]["subscriptions"]["payments"]
    assert (payments["delivered"], payments["retried"], payments["dead_lettered"]) == (1, 2, 1)
    assert health["status"] == "ok"
    assert health["orders"] == 2


def _guide_health_sample() -> dict[str, Any]:
    """The ``GET /health`` answer the FastAPI guide shows."""
    guide = (EXAMPLE.parent.parent / "docs" / "guide" / "fastapi.md").read_text()
    block = guide.split("`GET /health` returns", 1)[1].split("```json\n", 1)[1].split("```", 1)[0]
    sample: dict[str, Any] = json.loads(block)
    return sample


async def test_the_guides_health_sample_is_what_the_example_answers() -> None:
    sample = _guide_health_sample()
    async with running(service.build_bus(), raise_errors=False) as shop:
        for order in (ADA, {**ADA, "order_id": "A3"}, BIG):
            await shop.client.post("/orders", json=order)
        await shop.tb.drain(WAIT)
        health = (await shop.client.get("/health")).json()

    def counters(stats: dict[str, Any]) -> dict[str, Any]:
        # positions depend on how the payments' own events interleave with the orders
        return {name: {key: value for key, value in sub.items() if key != "position"} for name, sub in stats.items()}

    assert health["bus"].keys() == sample["bus"].keys()
    assert counters(health["bus"]["subscriptions"]) == counters(sample["bus"]["subscriptions"])
    assert (health["status"], health["orders"], health["bus"]["head"]) == ("ok", 3, sample["bus"]["head"])


async def test_health_returns_the_bus_stats_as_json(shop: Running) -> None:
    await shop.client.post("/orders", json=ADA)
    await shop.tb.drain(WAIT)

    response = await shop.client.get("/health")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "orders": 1, "bus": shop.tb.bus.stats().to_dict()}


async def test_a_bad_order_is_refused_and_nothing_is_published(shop: Running) -> None:
    response = await shop.client.post("/orders", json={**ADA, "amount": 0})

    assert response.status_code == 422
    assert shop.tb.published == []


async def test_an_unknown_order_is_not_found(shop: Running) -> None:
    response = await shop.client.get("/orders/A9")

    assert response.status_code == 404
    assert response.json() == {"detail": "no order 'A9'"}


async def test_the_read_model_is_rebuilt_from_the_stored_history(tmp_path: Path) -> None:
    history = f"sqlite:///{tmp_path / 'history.db'}"
    async with EventBus(store=history) as earlier:
        await earlier.publish(OrderPlaced(order_id="A1", customer="ada", amount=25.0))
        await earlier.publish(PaymentCaptured(order_id="A1", amount=25.0))
        await earlier.publish(OrderPlaced(order_id="A2", customer="bob", amount=2_500.0))

    async with running(service.build_bus(), store=history) as shop:
        paid = (await shop.client.get("/orders/A1")).json()
        placed = (await shop.client.get("/orders/A2")).json()
        assert shop.tb.published == []  # rebuilding replays, it publishes nothing

    assert (paid["status"], placed["status"]) == ("paid", "placed")


def test_deployed_the_lifespan_runs_the_bus_on_sqlite_and_a_restart_rebuilds(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'orders.db'}"
    first = service.build_bus(url)
    with TestClient(service.create_app(first)) as client:
        assert first.running
        assert client.post("/orders", json=ADA).status_code == 202
        assert client.post("/orders", json={**ADA, "order_id": "A3"}).status_code == 202
    # leaving the lifespan drained the bus and closed the store
    assert not first.running
    assert first.stats()["payments"].delivered == 2

    with TestClient(service.create_app(service.build_bus(url))) as client:
        orders = [client.get(f"/orders/{order_id}").json() for order_id in ("A1", "A3")]
        health = client.get("/health").json()

    assert [order["status"] for order in orders] == ["paid", "paid"]
    assert health["orders"] == 2
    assert health["bus"]["head"] == 4
    assert health["bus"]["published"] == 0
