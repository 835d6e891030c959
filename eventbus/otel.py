"""OpenTelemetry for a bus: spans and metrics per the messaging semantic conventions, and its counters.

```python
from eventbus import EventBus
from eventbus.otel import OpenTelemetry     # pip install 'eventbus[otel]'

bus = EventBus(store="sqlite:///events.db", plugins=[OpenTelemetry()])
```

Names and attributes follow the OpenTelemetry semantic conventions for
messaging (https://opentelemetry.io/docs/specs/semconv/messaging/), with
``messaging.system="eventbus"`` and the event's type name as the destination.

- **Traces.** A ``publish`` of one event gets a ``publish <type>`` span (kind
  ``PRODUCER``, operation type ``send``), a child of whatever span is current
  where ``publish`` is called. Its trace context is written into the record's
  headers (W3C ``traceparent``, by the configured propagator) *before* the
  append, so it is stored with the event. A ``publish_many`` of several events
  gets a ``create <type>`` span per event (``PRODUCER``, whose context goes into
  that event's headers) and one ``publish`` span for the batch (``CLIENT``,
  linked to them, with ``messaging.batch.message_count``). An event whose
  headers carry a trace context already (a bridge's, the caller's) keeps it,
  and the ``publish`` span links to it instead. Each delivery gets a
  ``process <type>`` span (``CONSUMER``) whose parent is read back from the
  headers: a handler's span is the child of the publisher's, also when it runs
  in another process or replays the record days later.
- **Metrics.** ``messaging.client.sent.messages``,
  ``messaging.client.operation.duration`` (publishes),
  ``messaging.client.consumed.messages`` and ``messaging.process.duration``
  (deliveries), recorded as they happen, with ``error.type`` on failures; and
  observable instruments that read `EventBus.stats` when the metric reader
  collects: ``eventbus.deliveries.delivered``, ``.failed``, ``.dead_lettered``
  and ``.dropped`` (counters) and ``.pending`` (an up-down counter), each with
  the ``eventbus.subscription`` attribute.

Only the OpenTelemetry API is imported; the application chooses the SDK,
exporters and propagators (the global ones by default).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from time import time_ns
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol

from . import Handle, Plugin, PluginError, Record, __version__
from .middleware import Commit

try:
    from opentelemetry import context as otel_context
    from opentelemetry import metrics, propagate, trace
    from opentelemetry.propagators.textmap import TextMapPropagator, default_setter
    from opentelemetry.trace import Link, SpanKind, Status, StatusCode
except ImportError as exc:  # pragma: no cover - depends on what is installed
    raise ImportError("eventbus.otel needs OpenTelemetry: pip install 'eventbus[otel]'") from exc

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
    from opentelemetry.trace import SpanContext, TracerProvider
    from opentelemetry.util.types import AttributeValue

    from .bus import EventBus

__all__ = ["INSTRUMENTATION_NAME", "OpenTelemetry"]

INSTRUMENTATION_NAME = "eventbus"
"""The name of the tracer and meter (the instrumentation scope)."""

_SYSTEM = "eventbus"
_PUBLISH = "publish"
"""``messaging.operation.name`` of `EventBus.publish` and ``publish_many`` (operation type ``send``)."""
_SUBSCRIPTION = "eventbus.subscription"
_SEQ = "messaging.eventbus.seq"
"""The record's seq: a system-specific attribute lives under ``messaging.<system>`` (as ``messaging.kafka.offset``)."""
_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
"""The bucket boundaries (seconds) the conventions give both duration histograms."""
_NS_PER_S = 1e9
_NO_PARENT = otel_context.Context()
"""The parent of a delivery whose record carries no trace context: none (not the worker's context)."""

# the attribute names, as the conventions spell them
_SYSTEM_KEY = "messaging.system"
_OPERATION_NAME = "messaging.operation.name"
_OPERATION_TYPE = "messaging.operation.type"
_DESTINATION = "messaging.destination.name"
_MESSAGE_ID = "messaging.message.id"
_CONVERSATION_ID = "messaging.message.conversation_id"
_CONSUMER_GROUP = "messaging.consumer.group.name"
_BATCH_COUNT = "messaging.batch.message_count"
_ERROR_TYPE = "error.type"


class _Named(Protocol):
    """What the delivery middleware needs of its subscription: its name."""

    @property
    def name(self) -> str: ...


class OpenTelemetry(Plugin):
    """A bus plugin that traces publishes and deliveries and measures them, per the messaging conventions.

    One instance serves one bus at a time. Its ``middleware`` and
    ``publish_middleware`` can also be given to ``EventBus(...)`` directly,
    for spans and the messaging metrics without the ``eventbus.deliveries.*``
    instruments (those read the running bus's stats).

    Args:
        tracer_provider: where spans go (default: the global provider).
        meter_provider: where metrics go (default: the global provider).
        propagator: how the trace context is written into and read from the
            record's headers (default: the global one, W3C trace context and
            baggage unless the application set another).
    """

    name = "opentelemetry"

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        propagator: TextMapPropagator | None = None,
    ) -> None:
        self._tracer = trace.get_tracer(INSTRUMENTATION_NAME, __version__, tracer_provider)
        self._propagator = propagator
        self._bus: EventBus | None = None
        self.middleware = (self._trace_delivery,)
        self.publish_middleware = (self._trace_publish,)
        meter = metrics.get_meter(INSTRUMENTATION_NAME, __version__, meter_provider)
        self._sent = meter.create_counter(
            "messaging.client.sent.messages", unit="{message}", description="Events the bus was asked to store."
        )
        self._operation_duration = meter.create_histogram(
            "messaging.client.operation.duration",
            unit="s",
            description="Duration of a publish: storing its events and routing them to their subscriptions.",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        self._consumed = meter.create_counter(
            "messaging.client.consumed.messages",
            unit="{message}",
            description="Deliveries to a subscription's handler that finished (handled or failed for good).",
        )
        self._process_duration = meter.create_histogram(
            "messaging.process.duration",
            unit="s",
            description="Duration of a delivery: every attempt of the handler, retries and backoff included.",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        for field, description in (
            ("delivered", "events handled successfully (after retries, if any)"),
            ("failed", "handler attempts that raised or timed out"),
            ("dead_lettered", "deliveries that ended as dead letters"),
            ("dropped", "events dropped by a drop_oldest / drop_newest policy"),
        ):
            meter.create_observable_counter(
                f"eventbus.deliveries.{field}", [self._observer(field)], unit="{event}", description=description
            )
        meter.create_observable_up_down_counter(
            "eventbus.deliveries.pending",
            [self._observer("pending")],
            unit="{event}",
            description="events routed to a subscription and not finished yet",
        )

    async def start(self, bus: EventBus) -> None:
        """Report ``bus``'s counters from now on."""
        if self._bus is not None and self._bus is not bus:
            raise PluginError("an OpenTelemetry plugin serves one bus at a time; give each bus its own")
        self._bus = bus

    async def stop(self, bus: EventBus) -> None:
        """Stop reporting ``bus``'s counters."""
        if self._bus is bus:
            self._bus = None

    # -- publishing ----------------------------------------------------------------

    def _trace_publish(self, call_next: Commit) -> Commit:
        tracer = self._tracer
        sent = self._sent
        duration = self._operation_duration

        async def commit(records: Sequence[Record]) -> None:
            started = time_ns()
            if len(records) == 1:
                [record] = records
                destination: str | None = record.type
                given = self._given(record)
                span = tracer.start_span(
                    f"{_PUBLISH} {destination}",
                    # PRODUCER when its context is the event's creation context, as the conventions say
                    kind=SpanKind.PRODUCER if given is None else SpanKind.CLIENT,
                    attributes=_message_attributes(record, _PUBLISH, "send"),
                    links=None if given is None else (Link(given),),
                    start_time=started,
                )
                if given is None:
                    self._carry(record, span)
            else:  # a batch: a creation context per event, one span for the send
                destination = _common_type(records)
                links = [self._create(record) for record in records]
                span = tracer.start_span(
                    _PUBLISH if destination is None else f"{_PUBLISH} {destination}",
                    kind=SpanKind.CLIENT,
                    attributes=_operation_attributes(_PUBLISH, "send", destination, len(records)),
                    links=links,
                    start_time=started,
                )
            error: str | None = None
            try:
                await call_next(records)
            except Exception as exc:
                error = _failed(span, exc)
                raise
            finally:
                ended = time_ns()
                if len(records) == 1 and records[0].seq:
                    span.set_attribute(_SEQ, records[0].seq)
                span.end(ended)
                measured = _metric_attributes(_PUBLISH, destination, None, error)
                if destination is not None:  # one type: one count
                    sent.add(len(records), measured)
                else:
                    for type_name, count in _count_by_type(records).items():
                        sent.add(count, _metric_attributes(_PUBLISH, type_name, None, error))
                duration.record((ended - started) / _NS_PER_S, {**measured, _OPERATION_TYPE: "send"})

        return commit

    def _create(self, record: Record) -> Link:
        """A ``create`` span for one event of a batch, carried in its headers; the link to it."""
        given = self._given(record)
        if given is not None:
            return Link(given)
        span = self._tracer.start_span(
            f"create {record.type}", kind=SpanKind.PRODUCER, attributes=_message_attributes(record, "create", "create")
        )
        self._carry(record, span)
        span.end()
        return Link(span.get_span_context())

    def _given(self, record: Record) -> SpanContext | None:
        """The creation context ``record``'s headers carry already, if any: a remote producer's,
        through a bridge, or one the caller passed. The conventions say to keep it."""
        if not record.headers:
            return None
        context = trace.get_current_span(self._extract(record.headers)).get_span_context()
        return context if context.is_valid else None

    def _carry(self, record: Record, span: trace.Span) -> None:
        """Write ``span``'s context into ``record``'s headers, beside the caller's."""
        carrier: dict[str, str] = {}
        self._inject(carrier, trace.set_span_in_context(span))
        if carrier:  # nothing to carry when no SDK records the span
            record.headers = MappingProxyType({**record.headers, **carrier})

    # -- delivering ----------------------------------------------------------------

    def _trace_delivery(self, call_next: Handle, subscription: _Named) -> Handle:
        tracer = self._tracer
        consumed = self._consumed
        duration = self._process_duration
        group = subscription.name

        async def handle(record: Record) -> None:
            started = time_ns()
            attributes = _message_attributes(record, "process", "process")
            attributes[_CONSUMER_GROUP] = group
            attributes[_SEQ] = record.seq
            span = tracer.start_span(
                f"process {record.type}",
                context=self._extract(record.headers) if record.headers else _NO_PARENT,
                kind=SpanKind.CONSUMER,
                attributes=attributes,
                start_time=started,
            )
            error: str | None = None
            try:
                with trace.use_span(span, record_exception=False, set_status_on_exception=False):
                    await call_next(record)
            except Exception as exc:  # what escapes is the delivery's final failure, after retries
                error = _failed(span, exc)
                raise
            finally:
                ended = time_ns()
                span.end(ended)
                measured = _metric_attributes("process", record.type, group, error)
                consumed.add(1, measured)
                duration.record((ended - started) / _NS_PER_S, measured)

        return handle

    # -- propagation and the stats' instruments --------------------------------------

    def _inject(self, carrier: dict[str, str], context: otel_context.Context) -> None:
        if self._propagator is None:
            propagate.inject(carrier, context)
        else:
            self._propagator.inject(carrier, context, setter=default_setter)

    def _extract(self, headers: Mapping[str, str]) -> otel_context.Context:
        if self._propagator is None:
            return propagate.extract(headers)
        return self._propagator.extract(headers)

    def _observer(self, field: str) -> _Observe:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            bus = self._bus
            if bus is None:
                return []
            try:
                snapshot = bus.stats()
            except RuntimeError:
                # a periodic reader collects from its own thread: a subscription added at
                # that very moment changes the dict being read; the next collection has it
                return []
            return [
                metrics.Observation(getattr(stats, field), {_SUBSCRIPTION: name}) for name, stats in snapshot.items()
            ]

        return observe


class _Observe(Protocol):
    def __call__(self, options: CallbackOptions, /) -> Iterable[Observation]: ...


def _message_attributes(record: Record, operation: str, kind: str) -> dict[str, AttributeValue]:
    """A span's attributes for an operation on the one event of ``record``."""
    message_id = str(record.event_id)
    correlation = record.ids[1]  # None: the event starts its chain, and is its own correlation id
    return {
        _SYSTEM_KEY: _SYSTEM,
        _OPERATION_NAME: operation,
        _OPERATION_TYPE: kind,
        _DESTINATION: record.type,
        _MESSAGE_ID: message_id,
        _CONVERSATION_ID: message_id if correlation is None else str(record.correlation_id),
    }


def _operation_attributes(operation: str, kind: str, destination: str | None, count: int) -> dict[str, AttributeValue]:
    """A span's attributes for an operation on a batch of ``count`` events (of one ``destination`` or several)."""
    attributes: dict[str, AttributeValue] = {
        _SYSTEM_KEY: _SYSTEM,
        _OPERATION_NAME: operation,
        _OPERATION_TYPE: kind,
        _BATCH_COUNT: count,
    }
    if destination is not None:
        attributes[_DESTINATION] = destination
    return attributes


def _metric_attributes(
    operation: str, destination: str | None, group: str | None, error: str | None
) -> dict[str, AttributeValue]:
    """A measurement's attributes: only low-cardinality ones (no message id, no seq)."""
    attributes: dict[str, AttributeValue] = {_SYSTEM_KEY: _SYSTEM, _OPERATION_NAME: operation}
    if destination is not None:
        attributes[_DESTINATION] = destination
    if group is not None:
        attributes[_CONSUMER_GROUP] = group
    if error is not None:
        attributes[_ERROR_TYPE] = error
    return attributes


def _common_type(records: Sequence[Record]) -> str | None:
    """The type name all ``records`` share, or None when they have several."""
    first = records[0].type
    return first if all(record.type == first for record in records) else None


def _count_by_type(records: Sequence[Record]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in records:
        counts[record.type] = counts.get(record.type, 0) + 1
    return counts


def _failed(span: trace.Span, exc: Exception) -> str:
    """Mark ``span`` as failed with ``exc``; returns its ``error.type``."""
    error = f"{type(exc).__module__}.{type(exc).__qualname__}"  # as a dead letter's error_type
    span.set_attribute(_ERROR_TYPE, error)
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, str(exc)))
    return error
