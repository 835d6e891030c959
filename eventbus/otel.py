"""OpenTelemetry for a bus: a span per publish and per delivery, and its counters as metrics.

```python
from eventbus import EventBus
from eventbus.otel import OpenTelemetry     # pip install 'eventbus[otel]'

bus = EventBus(store="sqlite:///events.db", plugins=[OpenTelemetry()])
```

- **Traces.** Each published event gets a ``publish <type>`` span (kind
  ``PRODUCER``), a child of whatever span is current where ``publish`` is
  called. Its trace context is written into the record's headers (W3C
  ``traceparent``, by the configured propagator) *before* the append, so it is
  stored with the event. Each delivery gets a ``process <type>`` span (kind
  ``CONSUMER``) whose parent is read back from those headers: a handler's span
  is the child of the publisher's, also when it runs in another process or
  replays the record days later. Spans published from a handler are children
  of its ``process`` span, so a causation chain is one trace.
- **Metrics.** Observable instruments read `EventBus.stats` when the metric
  reader collects: ``eventbus.deliveries.delivered``, ``.failed``,
  ``.dead_lettered`` and ``.dropped`` (counters) and ``.pending`` (an
  up-down counter), each with the ``eventbus.subscription`` attribute.
  Nothing is counted twice: the bus already counts, the instruments only read.

Only the OpenTelemetry API is imported; the application chooses the SDK,
exporters and propagators (the global ones by default).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol

from . import Handle, Plugin, PluginError, Record, __version__
from .middleware import Commit

try:
    from opentelemetry import context as otel_context
    from opentelemetry import metrics, propagate, trace
    from opentelemetry.propagators.textmap import TextMapPropagator
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError as exc:  # pragma: no cover - depends on what is installed
    raise ImportError("eventbus.otel needs OpenTelemetry: pip install 'eventbus[otel]'") from exc

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
    from opentelemetry.trace import TracerProvider

    from .bus import EventBus

__all__ = ["INSTRUMENTATION_NAME", "OpenTelemetry"]

INSTRUMENTATION_NAME = "eventbus"
"""The name of the tracer and meter (the instrumentation scope)."""

_SYSTEM = "eventbus"
_SUBSCRIPTION = "eventbus.subscription"


class _Named(Protocol):
    """What the delivery middleware needs of its subscription: its name."""

    @property
    def name(self) -> str: ...


class OpenTelemetry(Plugin):
    """A bus plugin that traces publishes and deliveries and reports the bus's counters.

    One instance serves one bus at a time. Its ``middleware`` and
    ``publish_middleware`` can also be given to ``EventBus(...)`` directly, for
    traces without metrics.

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

    def _trace_publish(self, call_next: Commit) -> Commit:
        tracer = self._tracer

        async def commit(records: Sequence[Record]) -> None:
            spans: list[trace.Span] = []
            for record in records:
                span = tracer.start_span(
                    f"publish {record.type}",
                    kind=SpanKind.PRODUCER,
                    attributes={
                        "messaging.system": _SYSTEM,
                        "messaging.operation.type": "send",
                        "messaging.destination.name": record.type,
                        "messaging.message.id": str(record.event_id),
                    },
                )
                carrier: dict[str, str] = {}
                self._inject(carrier, trace.set_span_in_context(span))
                if carrier:  # nothing to carry when no SDK records the span
                    record.headers = MappingProxyType({**record.headers, **carrier})
                spans.append(span)
            try:
                await call_next(records)
            except Exception as exc:
                for span in spans:
                    _failed(span, exc)
                raise
            finally:
                for span, record in zip(spans, records, strict=True):
                    if record.seq:
                        span.set_attribute("eventbus.seq", record.seq)
                    span.end()

        return commit

    def _trace_delivery(self, call_next: Handle, subscription: _Named) -> Handle:
        tracer = self._tracer
        name = subscription.name

        async def handle(record: Record) -> None:
            parent = self._extract(record.headers)
            with tracer.start_as_current_span(
                f"process {record.type}",
                context=parent,
                kind=SpanKind.CONSUMER,
                attributes={
                    "messaging.system": _SYSTEM,
                    "messaging.operation.type": "process",
                    "messaging.destination.name": record.type,
                    "messaging.message.id": str(record.event_id),
                    "messaging.consumer.group.name": name,
                    "eventbus.seq": record.seq,
                },
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                try:
                    await call_next(record)
                except Exception as exc:  # what escapes is the delivery's final failure, after retries
                    _failed(span, exc)
                    raise

        return handle

    def _inject(self, carrier: dict[str, str], context: otel_context.Context) -> None:
        if self._propagator is None:
            propagate.inject(carrier, context)
        else:
            self._propagator.inject(carrier, context)

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


def _failed(span: trace.Span, exc: BaseException) -> None:
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
