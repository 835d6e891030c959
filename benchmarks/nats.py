"""Events per second from one process to another through the NATS JetStream bridge,
beside raw nats-py doing the same in the same run.

A producer (this process) sends N events to a consumer in a child process,
both on the NATS server of ``EVENTBUS_NATS_URL`` (default
``nats://127.0.0.1:4222``), each run in a stream of its own that is deleted
afterwards. The clock runs from the first publish until the consumer has
taken the last event in (it prints ``done``).

- bridge: an `EventBus` (memory store) with a `NatsBridge` sending ``Tick``
  events, published with ``publish_many``; the consumer is an `EventBus` with
  a bridge taking them in and a handler counting them.
- floor (pipelined): raw nats-py at JetStream's own pace: ``js.publish_async``
  of every message (up to `WINDOW` in flight) with the acknowledgements
  gathered at the end, a pull consumer fetching batches of `FETCH` and
  acknowledging each message. The bridge's target is 0.8x this floor.
- floor with the bridge's headers: the same, each message carrying the
  headers a bridge sends (``Nats-Msg-Id`` and the CloudEvents attributes of
  the binary content mode, eight in all, through ``stream=`` one more): the
  raw floor of the same messages. nats-py checks and encodes each header of
  each message in Python, so the headers alone cost it a quarter of its rate.
- ordered: raw nats-py awaiting each ``js.publish`` acknowledgement before the
  next, the way the bridge forwarded before it pipelined.
Each figure is the best events/s of interleaved rounds (3 in a full run), with
its ratio to the floor's best, and the range of its ratio to the floor of the
same round: on a shared machine the range says more than any one figure.

    python benchmarks/nats.py            # 20 000 events per scenario, 3 rounds
    python benchmarks/nats.py --quick    # 3 000 events, one round, a few seconds, for CI
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

# This file is nats.py: keep its own folder off the path, so that `import nats` finds nats-py.
sys.path = [entry for entry in sys.path if Path(entry or ".").resolve() != Path(__file__).resolve().parent]

import anyio  # noqa: E402
import nats  # noqa: E402
from anyio.streams.buffered import BufferedByteReceiveStream  # noqa: E402
from eventbus_nats import FETCH_BATCH, PUBLISH_WINDOW, NatsBridge  # noqa: E402

from eventbus import Event, EventBus  # noqa: E402

NATS_URL = os.environ.get("EVENTBUS_NATS_URL", "nats://127.0.0.1:4222")
FETCH = FETCH_BATCH
"""Messages per fetch of the raw consumer: the bridge's own."""
WINDOW = PUBLISH_WINDOW
"""Publishes in flight at most in the pipelined floor: the bridge's own."""


class Tick(Event, name="bench.tick"):
    n: int


async def bridge_consumer(stream: str, count: int) -> None:
    bus = EventBus(plugins=[NatsBridge(NATS_URL, stream=stream, service="consumer", inbound=[Tick])])
    done = anyio.Event()
    seen = 0

    @bus.subscribe
    def take(event: Tick) -> None:
        nonlocal seen
        seen += 1
        if seen == count:
            done.set()

    async with bus:
        print("ready", flush=True)
        await done.wait()
        print("done", flush=True)


async def raw_consumer(stream: str, count: int) -> None:
    client = await nats.connect(NATS_URL)
    js = client.jetstream()
    subscription = await js.pull_subscribe(f"{stream}.>", durable="consumer", stream=stream)
    print("ready", flush=True)
    seen = 0
    while seen < count:
        try:
            messages = await subscription.fetch(FETCH, timeout=0.01)  # short: a floor polls, it never lingers
        except (nats.errors.Error, TimeoutError):  # nothing within the wait (nats-py raises either), or a status
            continue
        for message in messages:
            await message.ack()
        seen += len(messages)
    print("done", flush=True)
    await client.close()


async def bridge_producer(stream: str, count: int) -> None:
    bus = EventBus(plugins=[NatsBridge(NATS_URL, stream=stream, service="producer", outbound=[Tick])])
    async with bus:
        for first in range(0, count, 1_000):
            await bus.publish_many(Tick(n=n) for n in range(first, min(first + 1_000, count)))
        await bus.drain()


async def ordered_producer(stream: str, count: int) -> None:
    client = await nats.connect(NATS_URL)
    js = client.jetstream()
    for n in range(count):
        await js.publish(f"{stream}.bench.tick", b'{"n":%d}' % n, headers={"Nats-Msg-Id": str(uuid.uuid4())})
    await client.close()


async def _pipelined(stream: str, count: int, headers: Callable[[], dict[str, str]], expected: str | None) -> None:
    """``js.publish_async`` of ``count`` messages, each with ``headers()`` (and
    the expected-stream header when ``expected`` names one), acknowledgements gathered."""
    client = await nats.connect(NATS_URL)
    js = client.jetstream(publish_async_max_pending=WINDOW)
    for n in range(count):
        await js.publish_async(f"{stream}.bench.tick", b'{"n":%d}' % n, stream=expected, headers=headers())
    await js.publish_async_completed()
    await client.close()


async def pipelined_producer(stream: str, count: int) -> None:
    await _pipelined(stream, count, lambda: {"Nats-Msg-Id": str(uuid.uuid4())}, None)


def _cloudevents_headers() -> dict[str, str]:
    """The headers a bridge sends with an event (see eventbus_nats._wire), for a new event id."""
    event_id = str(uuid.uuid4())
    return {
        "Nats-Msg-Id": event_id,
        "ce-specversion": "1.0",
        "ce-id": event_id,
        "ce-source": "producer",
        "ce-type": Tick.__event_type__,
        "ce-time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "content-type": "application/json",
        "ce-eventbusversion": "1",
    }


async def cloudevents_producer(stream: str, count: int) -> None:
    await _pipelined(stream, count, _cloudevents_headers, stream)


async def create_stream(stream: str) -> None:
    client = await nats.connect(NATS_URL)
    await client.jetstream().add_stream(name=stream, subjects=[f"{stream}.>"])
    await client.close()


async def delete_stream(stream: str) -> None:
    client = await nats.connect(NATS_URL)
    await client.jetstream().delete_stream(stream)
    await client.close()


async def measure(consumer: str, produce: Callable[[str, int], Awaitable[None]], count: int) -> float:
    """Events/s from the first publish until the consumer process has taken the last."""
    stream = f"bench_{uuid.uuid4().hex[:12]}"
    await create_stream(stream)
    try:
        command = [sys.executable, __file__, "--consumer", consumer, stream, str(count)]
        async with await anyio.open_process(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE) as process:
            assert process.stdout is not None
            lines = BufferedByteReceiveStream(process.stdout)
            assert await lines.receive_until(b"\n", 100) == b"ready"
            started = time.perf_counter()
            await produce(stream, count)
            assert await lines.receive_until(b"\n", 100) == b"done"
            elapsed = time.perf_counter() - started
            await process.wait()
        return count / elapsed
    finally:
        await delete_stream(stream)


SCENARIOS: list[tuple[str, str, Callable[[str, int], Awaitable[None]]]] = [
    ("raw nats-py, pipelined: publish_async (floor)", "raw", pipelined_producer),
    ("raw nats-py, pipelined, the bridge's headers", "raw", cloudevents_producer),
    ("raw nats-py, ordered: publish, await each ack", "raw", ordered_producer),
    ("eventbus NatsBridge -> NatsBridge", "bridge", bridge_producer),
]


async def main(quick: bool) -> None:
    count, rounds = (3_000, 1) if quick else (20_000, 3)
    print(f"{count} events from one process to another through NATS JetStream ({NATS_URL}), {rounds} round(s)")
    # interleaved rounds, so that a busy spell of the machine does not land on one scenario
    runs = [[await measure(consumer, produce, count) for _, consumer, produce in SCENARIOS] for _ in range(rounds)]
    floor = max(run[0] for run in runs)
    for index, (label, _, _) in enumerate(SCENARIOS):
        best = max(run[index] for run in runs)
        ratios = sorted(run[index] / run[0] for run in runs)
        spread = f"x{ratios[0]:.2f}" if len(ratios) == 1 else f"x{ratios[0]:.2f} - x{ratios[-1]:.2f}"
        print(f"  {label:<52} {best:>10,.0f} events/s   x{best / floor:.2f} (best of each; each round: {spread})")
    same = max(run[1] for run in runs)
    bridge = max(run[-1] for run in runs)
    print(f"  the bridge against the floor of the same messages (with its headers): x{bridge / same:.2f}")


def consumer_main(kind: str, stream: str, count: int) -> None:
    consume = bridge_consumer if kind == "bridge" else raw_consumer
    anyio.run(consume, stream, count)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 000 events per scenario (CI)")
    parser.add_argument("--consumer", nargs=3, metavar=("KIND", "STREAM", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.consumer:
        consumer_main(args.consumer[0], args.consumer[1], int(args.consumer[2]))
    else:
        anyio.run(main, args.quick)
