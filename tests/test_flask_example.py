"""``examples/flask_service.py``: a sync Flask app publishing with ``bus.publish_threadsafe``.

The bus runs on an event loop in a thread of its own (`BusThread`), on a real
SQLite file, on asyncio and on trio. Requests go through Flask's test client
(the view runs in the test's thread, not the loop's) and, for concurrent
publishing, through Werkzeug's threaded server, one thread per request.
What the test reads of the bus (stats, the store, dead letters) it reads on
the bus's loop, through the thread's portal.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from core_events import WAIT
from flask.testing import FlaskClient

from eventbus import Record

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "flask_service.py"


def _load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("flask_service", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


service = _load_example()
BusThread = service.BusThread
ADA = {"order_id": "A1", "customer": "ada", "amount": 25.0}
BIG = {"order_id": "A2", "customer": "bob", "amount": 2_500.0}


@pytest.fixture(params=["asyncio", "trio"])
def runner(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """The example's bus running in its thread on a SQLite file, on each backend."""
    runner = BusThread(service.build_bus(f"sqlite:///{tmp_path / 'orders.db'}"), backend=request.param)
    runner.start()
    try:
        yield runner
    finally:
        runner.stop()


@pytest.fixture
def client(runner: Any) -> FlaskClient:
    return service.create_app(runner).test_client()


def _stored(runner: Any) -> list[Record]:
    return list(runner.portal.call(runner.bus.store.read))


def _drain(runner: Any) -> None:
    runner.portal.call(runner.bus.drain, WAIT)


def test_a_view_publishes_from_its_thread_and_gets_the_stored_seq(runner: Any, client: FlaskClient) -> None:
    response = client.post("/orders", json=ADA)

    assert response.status_code == 202
    assert response.get_json() == {"order_id": "A1", "seq": 1}
    _drain(runner)
    assert [record.type for record in _stored(runner)] == ["webshop.order_placed", "webshop.payment_captured"]
    order = client.get("/orders/A1")
    assert order.get_json() == {"order_id": "A1", "customer": "ada", "amount": 25.0, "status": "paid"}


def test_a_declined_payment_ends_as_a_dead_letter_shown_in_health(runner: Any, client: FlaskClient) -> None:
    client.post("/orders", json=BIG)
    client.post("/orders", json=ADA)
    _drain(runner)

    health = client.get("/health").get_json()
    letters = runner.portal.call(runner.bus.dead_letters.list)

    assert [letter.error_message for letter in letters] == ["A2: 2500.00 is over the card limit of 1000.00"]
    payments = health["bus"]["subscriptions"]["payments"]
    assert (payments["delivered"], payments["retried"], payments["dead_lettered"]) == (1, 2, 1)
    assert (health["status"], health["orders"]) == ("ok", 2)
    assert client.get("/orders/A2").get_json()["status"] == "placed"


def test_a_bad_order_is_refused_and_nothing_is_stored(runner: Any, client: FlaskClient) -> None:
    response = client.post("/orders", json={**ADA, "amount": 0})
    not_json = client.post("/orders", data="A1", content_type="text/plain")

    assert response.status_code == 422
    assert response.get_json()["detail"][0]["msg"] == "Input should be greater than 0"
    assert not_json.status_code == 422
    assert _stored(runner) == []


def test_an_unknown_order_is_not_found(client: FlaskClient) -> None:
    response = client.get("/orders/A9")

    assert response.status_code == 404
    assert response.get_json() == {"detail": "no order 'A9'"}


def test_requests_on_many_server_threads_at_once_are_all_stored_and_handled(runner: Any) -> None:
    orders = [{"order_id": f"B{n}", "customer": "lin", "amount": float(n)} for n in range(1, 17)]
    with service.serve(service.create_app(runner)) as url, ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda order: service.call("POST", f"{url}/orders", order), orders))
        _drain(runner)
        book = [service.call("GET", f"{url}/orders/{order['order_id']}") for order in orders]

    assert [status for status, _ in answers] == [202] * len(orders)
    seqs = sorted(body["seq"] for _, body in answers)
    placed = {record.seq: record.event.order_id for record in _stored(runner) if record.type == "webshop.order_placed"}
    assert sorted(placed) == seqs  # each view got the seq its own event was stored at
    assert sorted(placed.values()) == sorted(order["order_id"] for order in orders)
    assert [(status, body["status"]) for status, body in book] == [(200, "paid")] * len(orders)


def test_once_the_bus_has_stopped_views_answer_503_and_store_nothing(runner: Any, client: FlaskClient) -> None:
    client.post("/orders", json=ADA)
    runner.stop()

    response = client.post("/orders", json={**ADA, "order_id": "A3"})
    health = client.get("/health")

    assert response.status_code == 503
    assert response.get_json() == {"detail": "cannot publish OrderPlaced: the bus is stopped"}
    assert (health.status_code, health.get_json()) == (503, {"status": "stopped"})
    runner.start()
    assert [record.event.order_id for record in _stored(runner)] == ["A1", "A1"]  # the order and its payment


def test_stopping_drains_and_a_restart_rebuilds_the_read_model(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'orders.db'}"
    first = BusThread(service.build_bus(store))
    first.start()
    try:
        client = service.create_app(first).test_client()
        assert client.post("/orders", json=ADA).status_code == 202
        assert client.post("/orders", json={**ADA, "order_id": "A3"}).status_code == 202
    finally:
        first.stop()  # drains: the payments are captured before the store closes

    second = BusThread(service.build_bus(store))
    second.start()
    try:
        client = service.create_app(second).test_client()
        statuses = [client.get(f"/orders/{order_id}").get_json()["status"] for order_id in ("A1", "A3")]
        health = client.get("/health").get_json()
    finally:
        second.stop()

    assert statuses == ["paid", "paid"]
    assert (health["orders"], health["bus"]["head"]) == (2, 4)
