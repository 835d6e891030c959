"""Two services in two processes, exchanging events over NATS JetStream.

The shop (this process) sends `OrderPlaced`; billing (a child process it
starts) takes each order in, charges it and sends `PaymentCaptured` back. Each
service has its own SQLite store and a `NatsBridge`: what a service publishes
is forwarded to the stream from its store, what it takes in is appended to
its store before it is acknowledged, so either may restart without losing an
event. Needs a NATS server with JetStream on 127.0.0.1:4222 (``nats-server
-js``) and ``pip install -e plugins/nats``.

    python examples/two_services.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import anyio
import nats
from eventbus_nats import NatsBridge

from eventbus import Event, EventBus, Record

NATS_URL = "nats://127.0.0.1:4222"


class OrderPlaced(Event, name="shop.order_placed"):
    order_id: str
    amount: float


class PaymentCaptured(Event, name="billing.payment_captured"):
    order_id: str
    amount: float


async def billing(stream: str, store: str) -> None:
    """The billing service: runs until its standard input is closed."""
    bus = EventBus(
        store=f"sqlite:///{store}",
        plugins=[
            NatsBridge(NATS_URL, stream=stream, service="billing", inbound=[OrderPlaced], outbound=[PaymentCaptured])
        ],
    )

    @bus.subscribe(durable=True, name="charge")
    async def charge(event: OrderPlaced, record: Record) -> None:
        print(f"  billing: charging order {event.order_id} ({event.amount:.2f}), from {record.headers['origin']}")
        await bus.publish(PaymentCaptured(order_id=event.order_id, amount=event.amount))

    async with bus:
        await anyio.to_thread.run_sync(sys.stdin.read)  # until the shop closes our stdin


async def shop(stream: str, store: str, orders: list[OrderPlaced]) -> None:
    """The shop service: sends the orders and waits until each is paid."""
    bus = EventBus(
        store=f"sqlite:///{store}",
        plugins=[
            NatsBridge(NATS_URL, stream=stream, service="shop", outbound=[OrderPlaced], inbound=[PaymentCaptured])
        ],
    )
    paid: dict[str, Record] = {}
    all_paid = anyio.Event()

    @bus.subscribe
    def payment(event: PaymentCaptured, record: Record) -> None:
        paid[event.order_id] = record
        if len(paid) == len(orders):
            all_paid.set()

    async with bus:
        for order in orders:
            seq = await bus.publish(order)
            print(f"shop: order {order.order_id} stored as seq {seq}, on its way to billing")
        with anyio.fail_after(30):
            await all_paid.wait()
        for order in orders:
            record = paid[order.order_id]
            print(
                f"shop: order {order.order_id} paid ({record.event.amount:.2f}), seq {record.seq} here, "
                f"origin {record.headers['origin']}, caused by the order: {record.causation_id is not None}"
            )


async def delete_stream(stream: str) -> None:
    client = await nats.connect(NATS_URL)
    await client.jetstream().delete_stream(stream)
    await client.close()


async def main() -> None:
    stream = f"example_{uuid.uuid4().hex[:8]}"  # a stream of its own, deleted at the end
    orders = [OrderPlaced(order_id="A1", amount=12.5), OrderPlaced(order_id="A2", amount=99.0)]
    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, __file__, "billing", stream, str(Path(folder) / "billing.db")]
        async with await anyio.open_process(command, stdin=subprocess.PIPE, stdout=None) as child:
            assert child.stdin is not None
            try:
                await shop(stream, str(Path(folder) / "shop.db"), orders)
            finally:
                await child.stdin.aclose()  # billing stops
                await child.wait()
        await delete_stream(stream)
    print(f"both services stopped; billing exited with status {child.returncode}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["billing"]:
        anyio.run(billing, sys.argv[2], sys.argv[3])
    else:
        anyio.run(main)
