"""Custom middleware: timing metrics for every subscription, a slow-call alert
and a trace on single subscriptions, and a publish middleware.

    python examples/custom_middleware.py [STORE]

A delivery middleware is a function ``(call_next, context) -> step``,
called once per run of the bus when the pipeline is built; the step it returns runs for
every delivery. The chain, outermost first:

    dead letters -> bus middleware... -> subscription middleware... -> retry -> timeout -> handler

so bus and subscription middleware see one call per delivery, with its final
outcome after all retries. A publish middleware ``(call_next) -> step`` wraps
the append and routing of each published batch.

STORE is a store URL (``memory://``, the default, or ``sqlite:///mw.db``) or
the path of a SQLite file.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio
import structlog

from eventbus import DeliveryContext, Event, EventBus, Handle, Middleware, Record, Retry
from eventbus.middleware import Commit


class ImageUploaded(Event, name="media.image_uploaded"):
    image_id: str
    megapixels: int


@dataclass
class Timings:
    """What a metrics backend would keep per subscription (a counter and a histogram)."""

    calls: int = 0
    failures: int = 0
    total: float = 0.0
    slowest: float = 0.0


class Metrics:
    """Delivery timings per subscription, added to the whole bus."""

    def __init__(self) -> None:
        self.timings: dict[str, Timings] = {}

    def middleware(self, call_next: Handle, context: DeliveryContext) -> Handle:
        # Runs once per subscription: look up what can be looked up here, not per event.
        timings = self.timings.setdefault(context.name, Timings())

        async def handle(record: Record) -> None:
            started = time.perf_counter()
            try:
                await call_next(record)
            except Exception:
                timings.failures += 1
                raise  # re-raise: the dead-letter step outside this one must see the failure
            finally:
                elapsed = time.perf_counter() - started
                timings.calls += 1
                timings.total += elapsed
                timings.slowest = max(timings.slowest, elapsed)

        return handle


def slow_call_alert(threshold: float) -> Middleware:
    """A middleware factory: options go in the outer function, for one subscription."""

    def wrap(call_next: Handle, context: DeliveryContext) -> Handle:
        async def handle(record: Record) -> None:
            started = time.perf_counter()
            await call_next(record)
            elapsed = time.perf_counter() - started
            if elapsed > threshold:
                print(f"  [slow] {context.name} took {elapsed * 1000:.0f} ms on seq {record.seq}")

        return handle

    return wrap


def trace(call_next: Handle, context: DeliveryContext) -> Handle:
    """Print each delivery's start and final outcome (where a tracing span would go)."""

    async def handle(record: Record) -> None:
        print(f"  [trace] {context.name} seq {record.seq} start")
        try:
            await call_next(record)
        except Exception as exc:
            print(f"  [trace] {context.name} seq {record.seq} failed: {exc}")
            raise
        print(f"  [trace] {context.name} seq {record.seq} ok")

    return handle


def publish_log(call_next: Commit) -> Commit:
    """A publish middleware: runs around the store append and routing of each batch."""

    async def commit(records: Sequence[Record]) -> None:
        await call_next(records)  # the seqs are set once this returns
        types = sorted({record.type for record in records})
        print(f"  [publish] stored {len(records)} event(s) as seqs {records[0].seq}..{records[-1].seq} {types}")

    return commit


def store_from_argv() -> str:
    """The store URL from the command line: a URL as is, a path as a SQLite file."""
    if len(sys.argv) < 2:
        return "memory://"
    arg = sys.argv[1]
    return arg if "://" in arg else f"sqlite:///{Path(arg).resolve()}"


async def main() -> None:
    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL),  # this example prints its own
    )
    metrics = Metrics()
    # Bus middleware wraps every subscription's deliveries.
    bus = EventBus(store=store_from_argv(), middleware=[metrics.middleware], publish_middleware=[publish_log])
    flaky_failures = {"img-2"}  # fails once, then the retry succeeds

    # Subscription middleware wraps this subscription only, inside the bus middleware.
    @bus.subscribe(name="thumbnails", middleware=[slow_call_alert(threshold=0.02)])
    async def make_thumbnail(event: ImageUploaded) -> None:
        await anyio.sleep(0.001 * event.megapixels)  # big images take a while

    @bus.subscribe(name="search-index", middleware=[trace], retry=Retry(attempts=2, backoff=0.0, jitter=0.0))
    async def index(event: ImageUploaded) -> None:
        if event.image_id in flaky_failures:
            flaky_failures.discard(event.image_id)
            raise ConnectionError("search cluster busy")
        if event.megapixels > 40:
            raise ValueError(f"{event.image_id} is too large to index")

    async with bus:
        print("publishing one image, then a batch of three")
        await bus.publish(ImageUploaded(image_id="img-1", megapixels=2))
        await bus.drain()
        await bus.publish_many(
            [
                ImageUploaded(image_id="img-2", megapixels=3),
                ImageUploaded(image_id="img-3", megapixels=48),
                ImageUploaded(image_id="img-4", megapixels=1),
            ]
        )
        await bus.drain()
        stats = bus.stats()
        letters = await bus.dead_letters.list()

    # img-2 failed once and was retried: the middleware saw one successful call.
    # img-3 failed on both attempts: one failed call, then a dead letter.
    print("metrics per subscription (from the bus middleware):")
    for name, t in metrics.timings.items():
        average = t.total / t.calls * 1000 if t.calls else 0.0
        print(
            f"  {name:<13} calls={t.calls} failures={t.failures} "
            f"avg={average:.1f} ms slowest={t.slowest * 1000:.1f} ms "
            f"(bus stats: delivered={stats[name].delivered} retried={stats[name].retried})"
        )
    for letter in letters:
        print(f"dead letter: {letter.subscription} seq {letter.record.seq} {letter.error_message}")


if __name__ == "__main__":
    anyio.run(main)
