"""`eventbus.otel`: spans and metrics, recorded by the real OpenTelemetry SDK in memory."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import uuid4

import anyio
import pytest
from opentelemetry import propagate
from opentelemetry.baggage import set_baggage
from opentelemetry.context import attach, detach
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader, Metric, NumberDataPoint
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NoOpTracerProvider, SpanKind, StatusCode, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from eventbus import Event, EventBus, PluginError, Record, Retry
from eventbus.middleware import Commit
from eventbus.otel import OpenTelemetry


class Ordered(Event, name="tests.otel.ordered"):
    order_id: str


class Paid(Event, name="tests.otel.paid"):
    order_id: str


class Refused(Exception):
    """What the refusing publish middleware of a test raises."""


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

    def metric(self, name: str) -> Metric | None:
        """The last collection of metric ``name`` (None when nothing was recorded)."""
        data = self.metrics.get_metrics_data()
        if data is None:  # nothing observed at all
            return None
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for item in scope.metrics:
                    if item.name == name:
                        return item
        return None

    def values(self, metric: str) -> dict[str, int]:
        """The last collected value of the bus's stats instrument ``metric`` per subscription."""
        item = self.metric(metric)
        found: dict[str, int] = {}
        for point in [] if item is None else item.data.data_points:
            assert isinstance(point, NumberDataPoint)
            found[str(_attributes(point)["eventbus.subscription"])] = int(point.value)
        return found

    def counted(self, metric: str) -> dict[frozenset[tuple[str, Any]], int]:
        """Counter ``metric``'s value per attribute set (a sum, or a histogram's count)."""
        item = self.metric(metric)
        assert item is not None, f"{metric} was not recorded"
        found: dict[frozenset[tuple[str, Any]], int] = {}
        for point in item.data.data_points:
            assert isinstance(point, NumberDataPoint | HistogramDataPoint)
            value = point.count if isinstance(point, HistogramDataPoint) else point.value
            found[frozenset(_attributes(point).items())] = int(value)
        return found


def _attributes(item: ReadableSpan | NumberDataPoint | HistogramDataPoint) -> dict[str, Any]:
    return dict(item.attributes or {})


def _set(**attributes: Any) -> frozenset[tuple[str, Any]]:
    """An attribute set, written with ``__`` for ``.`` (``messaging__system`` for ``messaging.system``)."""
    return frozenset((key.replace("__", "."), value) for key, value in attributes.items())


PUBLISHED = {"messaging__system": "eventbus", "messaging__operation__name": "publish"}
PROCESSED = {"messaging__system": "eventbus", "messaging__operation__name": "process"}


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


def _links(span: ReadableSpan) -> list[int]:
    return [link.context.span_id for link in span.links]


def _span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.span_id)


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

    [record] = seen
    request = telemetry.only("POST /orders")
    publish = telemetry.only("publish tests.otel.ordered")
    process = telemetry.only("process tests.otel.ordered")
    assert _child_of(publish, request)
    assert _child_of(process, publish)
    assert publish.kind is SpanKind.PRODUCER
    assert process.kind is SpanKind.CONSUMER
    message = {
        "messaging.system": "eventbus",
        "messaging.destination.name": "tests.otel.ordered",
        "messaging.message.id": str(record.event_id),
        "messaging.message.conversation_id": str(record.event_id),  # the first event of its chain
        "messaging.eventbus.seq": seq,
    }
    assert _attributes(publish) == {
        **message,
        "messaging.operation.name": "publish",
        "messaging.operation.type": "send",
    }
    assert _attributes(process) == {
        **message,
        "messaging.operation.name": "process",
        "messaging.operation.type": "process",
        "messaging.consumer.group.name": "ship",
    }
    assert publish.status.status_code is process.status.status_code is StatusCode.UNSET
    assert publish.links == process.links == ()
    # the trace context travels in the record's headers, beside the application's own
    assert record.headers["tenant"] == "acme"
    assert publish.context is not None
    assert record.headers["traceparent"].split("-")[1] == format(publish.context.trace_id, "032x")


async def test_events_published_by_handlers_continue_the_trace(telemetry: Telemetry) -> None:
    bus = EventBus(plugins=[telemetry.plugin()])
    seen: list[Record] = []

    @bus.subscribe
    async def charge(event: Ordered, record: Record) -> None:
        seen.append(record)
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
    # a causation chain is one conversation: its first event's id
    assert _attributes(paid)["messaging.message.conversation_id"] == str(seen[0].event_id)


async def test_a_batch_gets_a_create_span_per_event_and_one_publish_span(telemetry: Telemetry) -> None:
    bus = EventBus(plugins=[telemetry.plugin()])
    handled: dict[int, Record] = {}

    @bus.subscribe
    def count(event: Ordered, record: Record) -> None:
        handled[record.seq] = record

    async with bus:
        seqs = await bus.publish_many([Ordered(order_id="A1"), Ordered(order_id="A2")])
        await bus.drain(timeout=5)

    assert sorted(handled) == seqs
    publish = telemetry.only("publish tests.otel.ordered")
    creates = telemetry.finished("create tests.otel.ordered")
    processes = {
        int(_attributes(span)["messaging.eventbus.seq"]): span
        for span in telemetry.finished("process tests.otel.ordered")
    }
    assert publish.kind is SpanKind.CLIENT  # its context is not the events' creation context: the create spans' are
    assert _attributes(publish) == {
        "messaging.system": "eventbus",
        "messaging.operation.name": "publish",
        "messaging.operation.type": "send",
        "messaging.destination.name": "tests.otel.ordered",
        "messaging.batch.message_count": 2,
    }
    assert sorted(_links(publish)) == sorted(_span_id(create) for create in creates)
    by_id = {_attributes(create)["messaging.message.id"]: create for create in creates}
    for seq, record in handled.items():
        create = by_id[str(record.event_id)]
        assert create.kind is SpanKind.PRODUCER
        assert _attributes(create)["messaging.operation.type"] == "create"
        assert _attributes(create)["messaging.operation.name"] == "create"
        assert _child_of(processes[seq], create)
    assert telemetry.counted("messaging.client.sent.messages") == {
        _set(**PUBLISHED, messaging__destination__name="tests.otel.ordered"): 2
    }
    assert telemetry.counted("messaging.client.operation.duration") == {
        _set(**PUBLISHED, messaging__operation__type="send", messaging__destination__name="tests.otel.ordered"): 1
    }


async def test_a_batch_of_several_types_names_no_destination(telemetry: Telemetry) -> None:
    async with EventBus(plugins=[telemetry.plugin()]) as bus:
        await bus.publish_many([Ordered(order_id="A1"), Paid(order_id="A1"), Ordered(order_id="A2")])

    publish = telemetry.only("publish")
    assert "messaging.destination.name" not in _attributes(publish)
    assert _attributes(publish)["messaging.batch.message_count"] == 3
    assert len(telemetry.finished("create tests.otel.ordered")) == 2
    assert len(telemetry.finished("create tests.otel.paid")) == 1
    assert telemetry.counted("messaging.client.sent.messages") == {
        _set(**PUBLISHED, messaging__destination__name="tests.otel.ordered"): 2,
        _set(**PUBLISHED, messaging__destination__name="tests.otel.paid"): 1,
    }
    assert telemetry.counted("messaging.client.operation.duration") == {
        _set(**PUBLISHED, messaging__operation__type="send"): 1
    }


async def test_publish_and_delivery_metrics(telemetry: Telemetry) -> None:
    bus = EventBus(plugins=[telemetry.plugin()])

    @bus.subscribe(name="ship")
    async def ship(event: Ordered) -> None:
        pass

    @bus.subscribe(name="audit")
    def audit(event: Ordered | Paid) -> None:
        pass

    async with bus:
        await bus.publish(Ordered(order_id="A1"))
        await bus.publish(Ordered(order_id="A2"))
        await bus.publish(Paid(order_id="A1"))
        await bus.drain(timeout=5)

    ordered = {**PUBLISHED, "messaging__destination__name": "tests.otel.ordered"}
    paid = {**PUBLISHED, "messaging__destination__name": "tests.otel.paid"}
    assert telemetry.counted("messaging.client.sent.messages") == {_set(**ordered): 2, _set(**paid): 1}
    assert telemetry.counted("messaging.client.operation.duration") == {
        _set(**ordered, messaging__operation__type="send"): 2,
        _set(**paid, messaging__operation__type="send"): 1,
    }
    consumed = {
        _set(
            **PROCESSED, messaging__destination__name="tests.otel.ordered", messaging__consumer__group__name="ship"
        ): 2,
        _set(
            **PROCESSED, messaging__destination__name="tests.otel.ordered", messaging__consumer__group__name="audit"
        ): 2,
        _set(**PROCESSED, messaging__destination__name="tests.otel.paid", messaging__consumer__group__name="audit"): 1,
    }
    assert telemetry.counted("messaging.client.consumed.messages") == consumed
    assert telemetry.counted("messaging.process.duration") == consumed  # one measurement per delivery
    units = {
        "messaging.client.sent.messages": "{message}",
        "messaging.client.consumed.messages": "{message}",
        "messaging.client.operation.duration": "s",
        "messaging.process.duration": "s",
    }
    for name, unit in units.items():
        item = telemetry.metric(name)
        assert item is not None
        assert item.unit == unit
    durations = telemetry.metric("messaging.process.duration")
    assert durations is not None
    for point in durations.data.data_points:
        assert isinstance(point, HistogramDataPoint)
        assert point.explicit_bounds[:3] == (0.005, 0.01, 0.025)  # the conventions' advice
    # a duration is its span's
    process = telemetry.only("process tests.otel.paid")
    [point] = [
        p
        for p in durations.data.data_points
        if isinstance(p, HistogramDataPoint) and _attributes(p)["messaging.destination.name"] == "tests.otel.paid"
    ]
    assert process.start_time is not None
    assert process.end_time is not None
    assert point.sum == pytest.approx((process.end_time - process.start_time) / 1e9)


async def test_a_failed_delivery_is_one_span_marked_as_an_error(telemetry: Telemetry) -> None:
    bus = EventBus(plugins=[telemetry.plugin()])

    @bus.subscribe(name="flaky", retry=Retry(attempts=3, backoff=0))
    async def flaky(event: Ordered) -> None:
        raise RuntimeError(f"no stock for {event.order_id}")

    async with bus:
        await bus.publish(Ordered(order_id="A1"))
        await bus.drain(timeout=5)
        letters = await bus.dead_letters.list()

    [letter] = letters
    assert letter.attempts == 3
    process = telemetry.only("process tests.otel.ordered")  # one span for the delivery, all its attempts
    assert process.status.status_code is StatusCode.ERROR
    assert process.status.description == "no stock for A1"
    assert _attributes(process)["error.type"] == "builtins.RuntimeError" == letter.error_type
    assert [event.name for event in process.events] == ["exception"]
    publish = telemetry.only("publish tests.otel.ordered")
    assert publish.status.status_code is StatusCode.UNSET
    assert "error.type" not in _attributes(publish)
    failed = _set(
        **PROCESSED,
        messaging__destination__name="tests.otel.ordered",
        messaging__consumer__group__name="flaky",
        error__type="builtins.RuntimeError",
    )
    assert telemetry.counted("messaging.client.consumed.messages") == {failed: 1}
    assert telemetry.counted("messaging.process.duration") == {failed: 1}


async def test_retried_attempts_that_end_well_are_one_successful_delivery(telemetry: Telemetry) -> None:
    bus = EventBus(plugins=[telemetry.plugin()])
    attempts = 0

    @bus.subscribe(name="flaky", retry=Retry(attempts=3, backoff=0))
    def flaky(event: Ordered) -> None:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise ConnectionError("try again")

    async with bus:
        await bus.publish(Ordered(order_id="A1"))
        await bus.drain(timeout=5)
        assert telemetry.values("eventbus.deliveries.failed") == {"flaky": 2}  # the attempts are in the stats
        assert telemetry.values("eventbus.deliveries.delivered") == {"flaky": 1}

    process = telemetry.only("process tests.otel.ordered")
    assert process.status.status_code is StatusCode.UNSET
    assert "error.type" not in _attributes(process)
    handled = _set(
        **PROCESSED, messaging__destination__name="tests.otel.ordered", messaging__consumer__group__name="flaky"
    )
    assert telemetry.counted("messaging.client.consumed.messages") == {handled: 1}
    assert telemetry.counted("messaging.process.duration") == {handled: 1}


async def test_a_failed_publish_is_marked_as_an_error(telemetry: Telemetry) -> None:
    def refuse(call_next: Commit) -> Commit:
        async def commit(records: Sequence[Record]) -> None:
            raise Refused(f"{len(records)} event(s) refused")

        return commit

    # the plugin's publish middleware, given to the bus directly, outside a refusing one of the application's
    tracing = telemetry.plugin().publish_middleware
    async with EventBus(publish_middleware=[*tracing, refuse]) as bus:
        with pytest.raises(Refused):
            await bus.publish(Ordered(order_id="A1"))
        with pytest.raises(Refused):
            await bus.publish_many([Ordered(order_id="A2"), Ordered(order_id="A3")])

    error = f"{__name__}.Refused"
    for publish, description in zip(
        telemetry.finished("publish tests.otel.ordered"), ["1 event(s) refused", "2 event(s) refused"], strict=True
    ):
        assert publish.status.status_code is StatusCode.ERROR
        assert publish.status.description == description
        assert _attributes(publish)["error.type"] == error
        assert "messaging.eventbus.seq" not in _attributes(publish)  # nothing was stored
    ordered = {**PUBLISHED, "messaging__destination__name": "tests.otel.ordered", "error__type": error}
    assert telemetry.counted("messaging.client.sent.messages") == {_set(**ordered): 3}
    assert telemetry.counted("messaging.client.operation.duration") == {
        _set(**ordered, messaging__operation__type="send"): 2
    }


def _kept(bus: EventBus) -> list[Record]:
    """The records of the `Ordered` events ``bus`` delivers, as a subscription receives them."""
    seen: list[Record] = []

    @bus.subscribe
    def keep(event: Ordered, record: Record) -> None:
        seen.append(record)

    return seen


async def test_a_creation_context_in_the_headers_is_kept(telemetry: Telemetry) -> None:
    """An event that comes with a trace context (from another process, through a bridge,
    or passed by the caller) keeps it: its deliveries are children of that context."""
    bus = EventBus(plugins=[telemetry.plugin()])
    seen = _kept(bus)

    remote = telemetry.tracer_provider.get_tracer("elsewhere").start_span("publish in another process")
    carried: dict[str, str] = {}
    propagate.inject(carried, context=set_span_in_context(remote))
    remote.end()
    async with bus:
        await bus.ingest(Ordered(order_id="A1"), event_id=uuid4(), origin="nats", headers=carried)
        await bus.publish_many([Ordered(order_id="A2"), Ordered(order_id="A3")], headers=carried)
        await bus.drain(timeout=5)

    [sent] = telemetry.finished("publish in another process")
    assert all(record.headers["traceparent"] == carried["traceparent"] for record in seen)
    # the local appends (the ingest's, the batch's) link to the creation context, which is not theirs
    ingested, batch = sorted(telemetry.finished("publish tests.otel.ordered"), key=lambda span: len(span.links))
    assert _links(ingested) == [_span_id(sent)]
    assert _links(batch) == [_span_id(sent)] * 2
    assert ingested.kind is batch.kind is SpanKind.CLIENT
    assert telemetry.finished("create tests.otel.ordered") == []  # a batch's events carry theirs already
    for process in telemetry.finished("process tests.otel.ordered"):
        assert _child_of(process, sent)


async def test_the_applications_propagator_writes_and_reads_the_headers(telemetry: Telemetry) -> None:
    only_traces = TraceContextTextMapPropagator()  # the global one would carry the baggage too
    plugin = OpenTelemetry(
        tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider, propagator=only_traces
    )
    bus = EventBus(plugins=[plugin])
    seen = _kept(bus)

    async with bus:
        token = attach(set_baggage("tenant", "acme"))
        try:
            await bus.publish(Ordered(order_id="A1"))
        finally:
            detach(token)
        await bus.drain(timeout=5)

    assert sorted(seen[0].headers) == ["traceparent"]
    assert _child_of(telemetry.only("process tests.otel.ordered"), telemetry.only("publish tests.otel.ordered"))


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
    seen = _kept(bus)

    async with bus:
        await bus.publish(Ordered(order_id="A1"))
        await bus.publish(Ordered(order_id="A2"), headers={"tenant": "acme"})
        await bus.publish_many([Ordered(order_id="A3"), Ordered(order_id="A4")])
        await bus.drain(timeout=5)
    assert [dict(record.headers) for record in seen] == [{}, {"tenant": "acme"}, {}, {}]
