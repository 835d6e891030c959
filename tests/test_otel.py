"""`eventbus.otel`: spans and metrics, recorded by the real OpenTelemetry SDK in memory."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NoOpTracerProvider, SpanKind, StatusCode

from eventbus import Event, EventBus, PluginError, Record, Retry
from eventbus.otel import OpenTelemetry


class Ordered(Event, name="tests.otel.ordered"):
    order_id: str


class Paid(Event, name="tests.otel.paid"):
    order_id: str


@dataclass
class Telemetry:
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader
    tracer_provider: TracerProvider
    meter_provider: MeterProvider

    def plugin(self) -> OpenTelemetry:
        return OpenTelemetry(tracer_provider=self.tracer_provider, meter_provider=self.meter_provider)

    def finished(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.spans.get_finished_spans() if span.name == name]

    def only(self, name: str) -> ReadableSpan:
        [span] = self.finished(name)
        return span

    def values(self, metric: str) -> dict[str, int]:
        """The last collected value of ``metric`` per subscription."""
        data = self.metrics.get_metrics_data()
        found: dict[str, int] = {}
        if data is None:  # nothing observed at all
            return found
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for item in scope.metrics:
                    if item.name == metric:
                        for point in item.data.data_points:
                            assert isinstance(point, NumberDataPoint)
                            found[str(dict(point.attributes or {})["eventbus.subscription"])] = int(point.value)
        return found


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    yield Telemetry(spans, reader, tracer_provider, meter_provider)
    meter_provider.shutdown()
    tracer_provider.shutdown()


def _child_of(child: ReadableSpan, parent: ReadableSpan) -> bool:
    assert child.context is not None
    assert parent.context is not None
    assert child.parent is not None
    return bool(child.parent.span_id == parent.context.span_id and child.context.trace_id == parent.context.trace_id)


def _seq(span: ReadableSpan) -> int:
    return int(str(dict(span.attributes or {})["eventbus.seq"]))


async def test_a_handlers_span_is_the_child_of_the_publishers(telemetry: Telemetry) -> None:
    bus = EventBus(plugins=[telemetry.plugin()])
    seen: list[Record] = []

    @bus.subscribe(name="ship")
    async def ship(event: Ordered, record: Record) -> None:
        seen.append(record)

    tracer = telemetry.tracer_provider.get_tracer("app")
    async with bus:
        with tracer.start_as_current_span("POST /orders"):
            seq = await bus.publish(Ordered(order_id="A1"), headers={"tenant": "acme"})
        await bus.drain(timeout=5)

    request = telemetry.only("POST /orders")
    publish = telemetry.only("publish tests.otel.ordered")
    process = telemetry.only("process tests.otel.ordered")
    assert _child_of(publish, request)
    assert _child_of(process, publish)
    assert publish.kind is SpanKind.PRODUCER
    assert process.kind is SpanKind.CONSUMER
    assert _seq(publish) == _seq(process) == seq
    assert dict(process.attributes or {})["messaging.consumer.group.name"] == "ship"
    assert dict(process.attributes or {})["messaging.message.id"] == str(seen[0].event_id)
    assert process.status.status_code is StatusCode.UNSET
    # the trace context travels in the record's headers, beside the application's own
    assert seen[0].headers["tenant"] == "acme"
    assert publish.context is not None
    assert seen[0].headers["traceparent"].split("-")[1] == format(publish.context.trace_id, "032x")


async def test_events_published_by_handlers_continue_the_trace(telemetry: Telemetry) -> None:
    bus = EventBus(plugins=[telemetry.plugin()])

    @bus.subscribe
    async def charge(event: Ordered) -> None:
        await bus.publish(Paid(order_id=event.order_id))

    @bus.subscribe
    async def receipt(event: Paid) -> None:
        pass

    async with bus:
        await bus.publish(Ordered(order_id="A1"))
        await bus.drain(timeout=5)

    ordered = telemetry.only("publish tests.otel.ordered")
    charged = telemetry.only("process tests.otel.ordered")
    paid = telemetry.only("publish tests.otel.paid")
    receipted = telemetry.only("process tests.otel.paid")
    assert ordered.parent is None
    assert _child_of(charged, ordered)
    assert _child_of(paid, charged)
    assert _child_of(receipted, paid)


async def test_a_batch_gets_a_span_per_event(telemetry: Telemetry) -> None:
    bus = EventBus(plugins=[telemetry.plugin()])
    handled: list[int] = []

    @bus.subscribe
    def count(event: Ordered, record: Record) -> None:
        handled.append(record.seq)

    async with bus:
        seqs = await bus.publish_many([Ordered(order_id="A1"), Ordered(order_id="A2")])
        await bus.drain(timeout=5)

    publishes = {_seq(span): span for span in telemetry.finished("publish tests.otel.ordered")}
    processes = {_seq(span): span for span in telemetry.finished("process tests.otel.ordered")}
    assert sorted(publishes) == sorted(processes) == sorted(handled) == seqs
    for seq, process in processes.items():
        assert _child_of(process, publishes[seq])


async def test_a_failed_delivery_is_one_span_marked_as_an_error(telemetry: Telemetry) -> None:
    bus = EventBus(plugins=[telemetry.plugin()])

    @bus.subscribe(retry=Retry(attempts=3, backoff=0))
    async def flaky(event: Ordered) -> None:
        raise RuntimeError(f"no stock for {event.order_id}")

    async with bus:
        await bus.publish(Ordered(order_id="A1"))
        await bus.drain(timeout=5)
        letters = await bus.dead_letters.list()

    assert [letter.attempts for letter in letters] == [3]
    process = telemetry.only("process tests.otel.ordered")  # one span for the delivery, all its attempts
    assert process.status.status_code is StatusCode.ERROR
    assert process.status.description == "RuntimeError: no stock for A1"
    assert [event.name for event in process.events] == ["exception"]
    assert telemetry.only("publish tests.otel.ordered").status.status_code is StatusCode.UNSET


async def test_the_stored_trace_context_parents_deliveries_in_a_later_process(
    telemetry: Telemetry, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'events.db'}"
    async with EventBus(store=url, plugins=[telemetry.plugin()]) as publisher:
        await publisher.publish(Ordered(order_id="A1"))

    later = EventBus(store=url, plugins=[telemetry.plugin()])
    done = anyio.Event()

    @later.subscribe(from_seq=1)
    def rebuild(event: Ordered) -> None:
        done.set()

    async with later:
        with anyio.fail_after(5):
            await done.wait()

    assert _child_of(telemetry.only("process tests.otel.ordered"), telemetry.only("publish tests.otel.ordered"))


async def test_metrics_read_the_buses_counters(telemetry: Telemetry) -> None:
    bus = EventBus(plugins=[telemetry.plugin()])
    started = anyio.Event()
    release = anyio.Event()

    @bus.subscribe(name="slow", max_pending=1, backpressure="drop_newest")
    async def slow(event: Ordered) -> None:
        started.set()
        await release.wait()

    @bus.subscribe(name="broken", retry=Retry(attempts=2, backoff=0))
    def broken(event: Ordered) -> None:
        raise ValueError(event.order_id)

    assert telemetry.values("eventbus.deliveries.pending") == {}  # nothing reported before the bus runs
    async with bus:
        await bus.publish(Ordered(order_id="A1"))
        with anyio.fail_after(5):
            await started.wait()
        await bus.publish(Ordered(order_id="A2"))  # queued
        await bus.publish(Ordered(order_id="A3"))  # dropped: the queue holds one
        assert telemetry.values("eventbus.deliveries.pending")["slow"] == 2
        assert telemetry.values("eventbus.deliveries.dropped")["slow"] == 1
        release.set()
        await bus.drain(timeout=5)
        assert telemetry.values("eventbus.deliveries.delivered") == {"slow": 2, "broken": 0}
        assert telemetry.values("eventbus.deliveries.failed") == {"slow": 0, "broken": 6}
        assert telemetry.values("eventbus.deliveries.dead_lettered") == {"slow": 0, "broken": 3}
        assert telemetry.values("eventbus.deliveries.pending") == {"slow": 0, "broken": 0}
        assert telemetry.values("eventbus.deliveries.dropped") == {"slow": 1, "broken": 0}


async def test_one_plugin_serves_one_bus_at_a_time(telemetry: Telemetry) -> None:
    plugin = telemetry.plugin()
    async with EventBus(plugins=[plugin]):
        with pytest.raises(PluginError, match="one bus at a time"):
            async with EventBus(plugins=[plugin]):
                pass
    async with EventBus(plugins=[plugin]) as again:  # free again once the first bus closed
        await again.publish(Ordered(order_id="A1"))


async def test_without_an_sdk_the_headers_stay_as_published() -> None:
    plugin = OpenTelemetry(tracer_provider=NoOpTracerProvider(), meter_provider=NoOpMeterProvider())
    bus = EventBus(plugins=[plugin])
    seen: list[Record] = []

    @bus.subscribe
    def keep(event: Ordered, record: Record) -> None:
        seen.append(record)

    async with bus:
        await bus.publish(Ordered(order_id="A1"))
        await bus.publish(Ordered(order_id="A2"), headers={"tenant": "acme"})
        await bus.drain(timeout=5)
    assert [dict(record.headers) for record in seen] == [{}, {"tenant": "acme"}]
