"""OpenTelemetry for the local host, configured from the standard ``OTEL_*`` environment variables.

``OTEL_TRACES_EXPORTER``, ``OTEL_METRICS_EXPORTER`` and ``OTEL_LOGS_EXPORTER`` each name ``console``,
``otlp`` or ``none`` (or a comma-separated list). The OTLP exporters read their own variables
(``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_PROTOCOL`` = ``grpc`` (the default here, as in
the Python SDK) or ``http/protobuf``, ``OTEL_EXPORTER_OTLP_HEADERS``...), the resource reads
``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES``, and metrics are exported every
``OTEL_METRIC_EXPORT_INTERVAL`` milliseconds. ``OTEL_SDK_DISABLED=true`` turns it all off.

Two deliberate differences from the SDK's auto-configuration: an unset exporter variable means
``none`` (a local run sends nothing anywhere unless asked), and metrics are exported every 10 s by
default instead of every 60 s, so a turn's metrics show up while one looks.

In Azure none of this runs: the Functions Python worker configures Azure Monitor (see docs/observability.md).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import metrics, trace

EXPORTER_VARIABLES = ("OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER", "OTEL_LOGS_EXPORTER")
DEFAULT_METRIC_EXPORT_INTERVAL_MS = 10_000
DEFAULT_SERVICE_NAME = "devhost"
_KNOWN_EXPORTERS = ("console", "otlp", "none")


class TelemetryConfigError(ValueError):
    """An ``OTEL_*`` variable asks for something the local host cannot do, said in one sentence."""


@dataclass
class HostTelemetry:
    """The SDK providers the local host installed; :meth:`shutdown` flushes and stops them."""

    traces: list[str]
    metrics: list[str]
    logs: list[str]
    metric_interval_ms: int
    protocol: str
    _providers: list[Any] = field(default_factory=list)
    _log_handler: logging.Handler | None = None

    def describe(self) -> str:
        """One line for the banner: where each signal goes."""
        parts = []
        for name, exporters in (("traces", self.traces), ("metrics", self.metrics), ("logs", self.logs)):
            if exporters:
                shown = ", ".join(f"otlp ({self.protocol})" if e == "otlp" else e for e in exporters)
                every = f" every {self.metric_interval_ms / 1000:g} s" if name == "metrics" else ""
                parts.append(f"{name} -> {shown}{every}")
        return "; ".join(parts)

    def shutdown(self) -> None:
        """Export what is pending (the last metrics included) and stop the providers. Never raises."""
        if self._log_handler is not None:
            logging.getLogger().removeHandler(self._log_handler)
        for provider in self._providers:
            try:
                provider.shutdown()
            except Exception:  # a collector that went away must not keep the host from stopping
                logging.getLogger("devhost").warning("Telemetry shutdown failed", exc_info=True)


def configure_telemetry(environ: Mapping[str, str]) -> HostTelemetry | None:
    """Install OpenTelemetry SDK providers as the ``OTEL_*`` variables ask; ``None`` when they ask for none.

    Args:
        environ: The environment (``os.environ``).

    Returns:
        The installed telemetry, or ``None`` when no exporter is asked for (or ``OTEL_SDK_DISABLED``).

    Raises:
        TelemetryConfigError: If a variable names an exporter or a protocol the local host does not have.
    """
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    traces, metric_exporters, logs = (_exporters(environ, name) for name in EXPORTER_VARIABLES)
    if not (traces or metric_exporters or logs):
        return None
    protocol = environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc").strip().lower() or "grpc"
    if protocol not in ("grpc", "http/protobuf"):
        raise TelemetryConfigError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: use grpc or http/protobuf")
    interval = _interval(environ)

    from opentelemetry.sdk.resources import Resource

    named = "OTEL_SERVICE_NAME" in environ or "service.name=" in environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    resource = Resource.create({} if named else {"service.name": DEFAULT_SERVICE_NAME})
    telemetry = HostTelemetry(traces, metric_exporters, logs, interval, protocol)
    if traces:
        telemetry._providers.append(_tracer_provider(traces, protocol, resource))
    if metric_exporters:
        telemetry._providers.append(_meter_provider(metric_exporters, protocol, resource, interval))
    if logs:
        provider, handler = _logger_provider(logs, protocol, resource)
        telemetry._providers.append(provider)
        telemetry._log_handler = handler
    return telemetry


class TraceIdsLogFilter(logging.Filter):
    """Adds ``trace_ids`` to every record: `` trace_id=... span_id=...`` when a span is current, else empty.

    Installed on the local host's console handler, whose format shows it: a log line can be found
    in the trace viewer by its ids, and the other way round.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        record.trace_ids = (
            f" trace_id={context.trace_id:032x} span_id={context.span_id:016x}" if context.is_valid else ""
        )
        return True


def _exporters(environ: Mapping[str, str], variable: str) -> list[str]:
    names = [part.strip().lower() for part in environ.get(variable, "").split(",") if part.strip()]
    unknown = [name for name in names if name not in _KNOWN_EXPORTERS]
    if unknown:
        raise TelemetryConfigError(
            f"{variable}={','.join(unknown)}: the local host has the {', '.join(_KNOWN_EXPORTERS)} exporters"
        )
    return [name for name in dict.fromkeys(names) if name != "none"]


def _interval(environ: Mapping[str, str]) -> int:
    raw = environ.get("OTEL_METRIC_EXPORT_INTERVAL", "").strip()
    if not raw:
        return DEFAULT_METRIC_EXPORT_INTERVAL_MS
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise TelemetryConfigError(f"OTEL_METRIC_EXPORT_INTERVAL={raw!r} must be a positive number of milliseconds")
    return value


def _tracer_provider(exporters: list[str], protocol: str, resource: Any) -> Any:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor

    provider = TracerProvider(resource=resource)
    for name in exporters:
        if name == "console":
            # Printed as each span ends: a turn's spans show up while it streams.
            provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
        elif protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter

            provider.add_span_processor(BatchSpanProcessor(HttpSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider


def _meter_provider(exporters: list[str], protocol: str, resource: Any, interval_ms: int) -> Any:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, MetricExporter, PeriodicExportingMetricReader

    readers = []
    for name in exporters:
        exporter: MetricExporter
        if name == "console":
            exporter = ConsoleMetricExporter()
        elif protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

            exporter = OTLPMetricExporter()
        else:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter

            exporter = HttpMetricExporter()
        readers.append(PeriodicExportingMetricReader(exporter, export_interval_millis=interval_ms))
    provider = MeterProvider(resource=resource, metric_readers=readers)
    metrics.set_meter_provider(provider)
    return provider


def _logger_provider(exporters: list[str], protocol: str, resource: Any) -> tuple[Any, logging.Handler]:
    from opentelemetry.instrumentation.logging.handler import LoggingHandler

    from ._compat import (
        BatchLogRecordProcessor,
        ConsoleLogRecordExporter,
        LoggerProvider,
        SimpleLogRecordProcessor,
        otlp_log_exporter,
        set_logger_provider,
    )

    provider = LoggerProvider(resource=resource)
    for name in exporters:
        if name == "console":
            provider.add_log_record_processor(SimpleLogRecordProcessor(ConsoleLogRecordExporter()))
        else:
            provider.add_log_record_processor(BatchLogRecordProcessor(otlp_log_exporter(protocol)()))
    set_logger_provider(provider)
    # Every record that reaches the root logger's level is exported with the span current when it was logged.
    handler = LoggingHandler(logger_provider=provider)
    logging.getLogger().addHandler(handler)
    return provider, handler
