"""``python -m devhost`` honours the standard ``OTEL_*`` variables: console exporters print a turn's spans
and metrics, OTLP exporters send spans, metrics and logs (with their trace ids) to a collector."""

from __future__ import annotations

import json
import shlex
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from tests.e2e.devhost_process import PROJECT_ROOT, DevHostProcess, run_devhost, scrubbed_environment

TRACE_ID = "5b8efff798038103d269b633813fc60c"
TRACEPARENT = f"00-{TRACE_ID}-eee19b7ec3c1b174-01"
TURN_SPANS = {"POST /api/agents/{name}/stream", "invoke_agent TravelAgent", "agent_stream.write", "agent_stream.read"}
TURN_METRICS = {
    "agent_stream.chunks.written",
    "agent_stream.write.duration",
    "agent_stream.turn.time_to_first_chunk",
    "agent_stream.readers.active",
    "agent_stream.delivery.lag",
}


def _stream_one_turn(host: DevHostProcess) -> str:
    """POST /stream with a traceparent, read to the end; the turn's correlation id."""
    with (
        httpx.Client(timeout=30) as client,
        client.stream(
            "POST",
            f"{host.api}/agents/TravelAgent/stream",
            json={"message": "Three days in Lisbon?"},
            headers={"traceparent": TRACEPARENT},
        ) as response,
    ):
        body = "".join(response.iter_text())
    assert "event: done" in body
    return response.headers["x-correlation-id"]


def _json_objects(text: str) -> Iterator[dict[str, Any]]:
    """The JSON documents the console exporters print, among the host's other output lines."""
    decoder = json.JSONDecoder()
    position = text.find("{")
    while position >= 0:
        try:
            document, end = decoder.raw_decode(text, position)
        except ValueError:
            position = text.find("{", position + 1)
            continue
        if isinstance(document, dict):
            yield document
        position = text.find("{", end)


def _metric_names(document: dict[str, Any]) -> set[str]:
    return {
        metric["name"]
        for resource in document.get("resource_metrics", [])
        for scope in resource["scope_metrics"]
        for metric in scope["metrics"]
    }


def _documented_console_command() -> dict[str, str]:
    """The settings of the first command of docs/observability.md, "Locally" (``OTEL_...=console ... -m devhost``)."""
    section = (PROJECT_ROOT / "docs" / "observability.md").read_text().split("\n## Locally\n", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    command = next(line for line in block.splitlines() if "-m devhost" in line and not line.startswith("#"))
    words = shlex.split(command)
    assert words[-3:] == [".venv/bin/python", "-m", "devhost"], command
    return dict(word.split("=", 1) for word in words[:-3])


def test_the_documented_console_command_prints_a_turns_spans_and_metrics(devhost_workdir: Path) -> None:
    env = {**_documented_console_command(), "SCRIPTED_CHUNK_DELAY_MS": "5"}
    assert env["OTEL_TRACES_EXPORTER"] == env["OTEL_METRICS_EXPORTER"] == "console"
    host = DevHostProcess.start(devhost_workdir, env=env, name="otel-console")
    try:
        assert "Telemetry traces -> console; metrics -> console every 10 s" in host.log()
        correlation_id = _stream_one_turn(host)
    finally:
        assert host.stop() == 0  # Ctrl-C exports the metrics gathered so far
    documents = list(_json_objects(host.log()))

    spans = [d for d in documents if "context" in d and "name" in d]
    of_turn = {s["name"]: s for s in spans if s["context"]["trace_id"] == f"0x{TRACE_ID}"}
    assert set(of_turn) >= TURN_SPANS, f"spans of the turn's trace: {sorted(of_turn)}"
    assert of_turn["agent_stream.write"]["attributes"]["agent_stream.correlation_id"] == correlation_id
    printed_metrics = set().union(*(_metric_names(d) for d in documents))
    assert printed_metrics >= TURN_METRICS, sorted(printed_metrics)


class _Collector(
    trace_service_pb2_grpc.TraceServiceServicer,
    metrics_service_pb2_grpc.MetricsServiceServicer,
    logs_service_pb2_grpc.LogsServiceServicer,
):
    """An OTLP/gRPC collector that keeps what it is sent."""

    def __init__(self) -> None:
        self.spans: list[Any] = []
        self.metric_names: set[str] = set()
        self.logs: list[Any] = []
        self._lock = threading.Lock()

    def Export(self, request: Any, context: Any) -> Any:
        with self._lock:
            if isinstance(request, trace_service_pb2.ExportTraceServiceRequest):
                for resource in request.resource_spans:
                    for scope in resource.scope_spans:
                        self.spans.extend(scope.spans)
                return trace_service_pb2.ExportTraceServiceResponse()
            if isinstance(request, metrics_service_pb2.ExportMetricsServiceRequest):
                for resource in request.resource_metrics:
                    for scope in resource.scope_metrics:
                        self.metric_names.update(metric.name for metric in scope.metrics)
                return metrics_service_pb2.ExportMetricsServiceResponse()
            for resource in request.resource_logs:
                for scope in resource.scope_logs:
                    self.logs.extend(scope.log_records)
            return logs_service_pb2.ExportLogsServiceResponse()


@pytest.fixture
def collector() -> Iterator[tuple[_Collector, int]]:
    collector = _Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(collector, server)
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(collector, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield collector, port
    server.stop(grace=None)


def test_otlp_exporters_send_spans_metrics_and_logs_with_trace_ids_to_a_collector(
    devhost_workdir: Path, collector: tuple[_Collector, int]
) -> None:
    received, port = collector
    env = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_LOGS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_SERVICE_NAME": "devhost-under-test",
        "SCRIPTED_CHUNK_DELAY_MS": "5",
    }
    host = DevHostProcess.start(devhost_workdir, env=env, args=["-v"], name="otel-otlp")
    try:
        assert "Telemetry traces -> otlp (grpc); metrics -> otlp (grpc) every 10 s; logs -> otlp (grpc)" in host.log()
        correlation_id = _stream_one_turn(host)
    finally:
        assert host.stop() == 0  # the shutdown exports what is pending

    of_turn = {span.name: span for span in received.spans if span.trace_id.hex() == TRACE_ID}
    assert set(of_turn) >= TURN_SPANS, f"spans of the turn's trace: {sorted(of_turn)}"
    assert received.metric_names >= TURN_METRICS, sorted(received.metric_names)
    # The route's log line about the turn carries the route span's ids.
    route = of_turn["POST /api/agents/{name}/stream"]
    lines = [(log.body.string_value, log) for log in received.logs]
    started = [log for line, log in lines if line.startswith("Started turn") and correlation_id in line]
    assert [(log.trace_id, log.span_id) for log in started] == [(route.trace_id, route.span_id)]


def test_an_exporter_the_host_does_not_have_is_refused_in_one_line() -> None:
    result = run_devhost([], scrubbed_environment({"OTEL_TRACES_EXPORTER": "zipkin"}))

    assert result.returncode == 2
    assert result.stderr.strip() == (
        "devhost: OTEL_TRACES_EXPORTER=zipkin: the local host has the console, otlp, none exporters"
    )
