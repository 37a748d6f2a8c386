"""OpenTelemetry for the tests: the SDK installed once per session, spans kept in memory, metrics read on demand.

OpenTelemetry's global providers can be set once per process, so the first test that asks for
``otel`` installs them for the rest of the session; spans are kept only while a test captures, and
metrics are compared as differences between two snapshots (the SDK's sums are cumulative).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader, NumberDataPoint
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from tests.eventually import eventually


class _CapturingExporter(SpanExporter):
    def __init__(self) -> None:
        self.capturing = False
        self.spans: list[ReadableSpan] = []
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            if self.capturing:
                self.spans.extend(spans)
        return SpanExportResult.SUCCESS


@dataclass(frozen=True)
class Point:
    """One metric's data point: a sum (counters) or a count and a sum (histograms)."""

    value: float = 0.0
    count: int = 0
    total: float = 0.0


# (metric name, attributes as a sorted tuple) -> its point
Snapshot = dict[tuple[str, tuple[tuple[str, Any], ...]], Point]


class OtelCapture:
    """The session's SDK: finished spans of the running test, and metric snapshots."""

    def __init__(self) -> None:
        self._exporter = _CapturingExporter()
        self._reader = InMemoryMetricReader()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(self._exporter))
        trace.set_tracer_provider(tracer_provider)
        metrics.set_meter_provider(MeterProvider(metric_readers=[self._reader]))
        if trace.get_tracer_provider() is not tracer_provider:
            raise RuntimeError("another OpenTelemetry tracer provider was installed before the tests' one")

    def start(self) -> None:
        """Keep the spans that end from now on (and forget earlier ones)."""
        with self._exporter._lock:
            self._exporter.spans = []
            self._exporter.capturing = True

    def stop(self) -> None:
        with self._exporter._lock:
            self._exporter.capturing = False
            self._exporter.spans = []

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        """Finished spans so far, optionally those with ``name``."""
        with self._exporter._lock:
            spans = list(self._exporter.spans)
        return [span for span in spans if name is None or span.name == name]

    async def wait_for_span(
        self, predicate: Callable[[ReadableSpan], bool], *, within: float = 10.0, what: str = "a span"
    ) -> ReadableSpan:
        """The first finished span that ``predicate`` accepts, waiting up to ``within`` seconds for it
        (without blocking the loop: spans may end in tasks of the test's own loop)."""
        return await eventually(
            lambda: next((span for span in self.spans() if predicate(span)), None),
            timeout=within,
            interval=0.02,
            message=lambda: f"{what} did not end; spans that did: {sorted({span.name for span in self.spans()})}",
        )

    def snapshot(self) -> Snapshot:
        """Every data point of every metric now (cumulative since the SDK was installed)."""
        points: Snapshot = {}
        data = self._reader.get_metrics_data()
        for resource_metrics in data.resource_metrics if data else ():
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    for point in metric.data.data_points:
                        key = (metric.name, tuple(sorted((point.attributes or {}).items())))
                        if isinstance(point, HistogramDataPoint):
                            points[key] = Point(count=point.count, total=point.sum)
                        elif isinstance(point, NumberDataPoint):
                            points[key] = Point(value=point.value)
        return points


def delta(before: Snapshot, after: Snapshot, name: str, attributes: Mapping[str, Any] | None = None) -> Point:
    """How much metric ``name`` moved between two snapshots, summed over the points whose attributes
    include ``attributes`` (all of its points without it)."""
    wanted = dict(attributes or {})
    value, count, total = 0.0, 0, 0.0
    for key, point in after.items():
        metric, attrs = key
        if metric != name or any(dict(attrs).get(k) != v for k, v in wanted.items()):
            continue
        old = before.get(key, Point())
        value += point.value - old.value
        count += point.count - old.count
        total += point.total - old.total
    return Point(value=value, count=count, total=total)


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


class SpanRecordingHandler(logging.Handler):
    """Keeps each log record's message with the span that was current when it was logged."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[tuple[str, trace.SpanContext]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.getMessage(), trace.get_current_span().get_span_context()))


@contextlib.contextmanager
def recording_log(name: str, level: int = logging.DEBUG) -> Iterator[SpanRecordingHandler]:
    """Record what logger ``name`` logs (at ``level`` and above) with the span current at the time."""
    handler = SpanRecordingHandler()
    logger = logging.getLogger(name)
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
