"""Services in processes of their own exchange events over the real NATS server:
none is lost across a consumer killed with SIGKILL and restarted, repeats stay
within the documented window, and replicas of one service split its events."""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path

import anyio
from anyio.streams.buffered import BufferedByteReceiveStream
from eventbus_nats import FETCH_BATCH, NatsBridge
from nats_events import OrderPlaced, PaymentCaptured
from nats_helpers import NATS_URL, stored_records
from nats_process import expect, read_line, service

from eventbus import EventBus
from eventbus.bus import ORIGIN_HEADER
from eventbus.delivery.checkpoints import CHECKPOINT_EVERY

ORDERS = 5_000
"""Orders the shop sends; billing pays each, so 2 x ORDERS = 10 000 events cross the bridge."""
KILL_AFTER = 1_000
"""Billing is killed once it has handled this many orders."""


async def test_two_services_exchange_10_000_events_across_a_sigkill_of_the_consumer(
    stream: str, tmp_path: Path, anyio_backend: str
) -> None:
    shop_db, billing_db = tmp_path / "shop.db", tmp_path / "billing.db"
    billing_args = (anyio_backend, "billing", stream, str(billing_db))
    with anyio.fail_after(60):
        async with service(*billing_args) as (billing, billing_out):
            await expect(billing_out, "ready")
            async with service(anyio_backend, "shop", stream, str(shop_db), str(ORDERS)) as (shop, shop_out):
                await expect(billing_out, f"handled {KILL_AFTER}")
                billing.send_signal(signal.SIGKILL)
                assert await billing.wait() == -signal.SIGKILL
                async with service(*billing_args) as (_, restarted_out):
                    await expect(restarted_out, "ready")
                    await expect(shop_out, "all paid")
                assert await shop.wait() == 0

    # billing's store: every order arrived, from the shop; only what the kill left
    # unacknowledged (at most one fetch) arrived twice
    orders = [record for record in await stored_records(billing_db) if record.type == OrderPlaced.__event_type__]
    arrivals = Counter(record.event_id for record in orders)
    assert len(arrivals) == ORDERS
    assert len(orders) - ORDERS <= FETCH_BATCH
    assert {record.headers[ORIGIN_HEADER] for record in orders} == {"shop"}
    assert {record.event.order_id for record in orders} == {str(n) for n in range(ORDERS)}
    # the shop's store: every order paid; billing's durable subscription handled again at
    # most a checkpoint's worth after the kill, plus what came twice
    payments = [record for record in await stored_records(shop_db) if record.type == PaymentCaptured.__event_type__]
    assert {record.event.order_id for record in payments} == {str(n) for n in range(ORDERS)}
    assert len(payments) - ORDERS <= CHECKPOINT_EVERY + FETCH_BATCH
    assert len({record.event_id for record in payments}) == len(payments)  # JetStream dropped re-sent payments


async def test_two_replicas_of_one_service_split_its_events(stream: str, tmp_path: Path, anyio_backend: str) -> None:
    events = 1_000
    got: dict[str, list[str]] = {"a": [], "b": []}
    all_arrived = anyio.Event()
    shop = EventBus(plugins=[NatsBridge(NATS_URL, stream=stream, service="shop", outbound=[OrderPlaced])])

    with anyio.fail_after(30):
        async with (
            service(anyio_backend, "replica", stream, str(tmp_path / "a.db")) as (_, a_out),
            service(anyio_backend, "replica", stream, str(tmp_path / "b.db")) as (_, b_out),
            anyio.create_task_group() as readers,
        ):

            async def read(name: str, out: BufferedByteReceiveStream) -> None:
                await expect(out, "ready")
                ready.release()
                while True:
                    got[name].append((await read_line(out)).removeprefix("got "))
                    if sum(map(len, got.values())) >= events:
                        all_arrived.set()

            ready = anyio.Semaphore(0)
            readers.start_soon(read, "a", a_out)
            readers.start_soon(read, "b", b_out)
            for _ in got:
                await ready.acquire()
            async with shop:
                for n in range(events):
                    await shop.publish(OrderPlaced(order_id=str(n)))
                await all_arrived.wait()
            readers.cancel_scope.cancel()

    assert got["a"], f"replica b took everything: {len(got['b'])}"
    assert got["b"], f"replica a took everything: {len(got['a'])}"
    both = got["a"] + got["b"]
    assert sorted(both, key=int) == [str(n) for n in range(events)]  # together all, none twice
