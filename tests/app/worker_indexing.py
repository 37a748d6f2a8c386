"""Runs the Azure Functions Python worker's own indexing of a Function App, as the host would start it.

``python -m tests.app.worker_indexing APP_DIR OUT_JSON [--stream SESSION_ID CORRELATION_ID]``, in a
fresh interpreter that has ``azure-functions-runtime`` (the worker library of Python >= 3.13;
requirements-worker.txt): it sends the worker a worker-init request then a functions-metadata
request through the library's public entry points (``azure_functions_runtime.worker_init_request``
and ``functions_metadata_request``, the calls the worker process makes for the host's gRPC
messages) and writes what the host would receive as JSON to OUT_JSON. With ``--stream`` it then
does what the host does for one HTTP request to ``agent_stream_resume``: the request to the worker's
HTTP server and the invocation request (``azure_functions_runtime.invocation_request``) side by side,
while the app's own buffer writes that turn, and records the events as they arrive. A process of its
own, because the worker keeps its registry, the imported ``function_app`` module and its HTTP server
in process-wide state.

The host's protobuf classes are not on PyPI (the worker process that hosts the library generates
them), so ``protos`` here is a stand-in: the message types of these exchanges, each with the fields
that the Functions RPC protocol (FunctionRpc.proto) gives it, and the protocol's enum numbers. A
message type or field the protocol lacks raises, as protobuf would.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import sys
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

from tests.eventually import eventually


class _Message:
    """A protocol message: keyword fields only, each one the protocol defines for it; read as attributes."""

    FIELDS: ClassVar[frozenset[str]] = frozenset()
    # oneof name -> its member fields (protobuf's WhichOneof).
    ONEOFS: ClassVar[dict[str, frozenset[str]]] = {}

    def __init__(self, **fields: Any) -> None:
        unknown = set(fields) - self.FIELDS
        if unknown:
            raise ValueError(f"protocol message {type(self).__name__} has no field(s) {sorted(unknown)}")
        self.fields = fields

    def __getattr__(self, name: str) -> Any:
        if name in type(self).FIELDS:
            return self.fields.get(name)
        raise AttributeError(f"protocol message {type(self).__name__} has no field {name}")

    def get(self, name: str, default: Any = None) -> Any:
        return self.fields.get(name, default)

    def WhichOneof(self, oneof: str) -> str | None:  # protobuf's name
        members = [name for name in self.ONEOFS[oneof] if name in self.fields]
        return members[0] if members else None


class _Protos:
    """The message types of the worker-init and functions-metadata exchanges (FunctionRpc.proto)."""

    class StatusResult(_Message):
        FIELDS = frozenset({"status", "result", "exception", "logs"})
        Failure, Success, Cancelled = 0, 1, 2

    class RpcException(_Message):
        FIELDS = frozenset({"source", "stack_trace", "message", "is_user_exception", "type"})

    class WorkerMetadata(_Message):
        FIELDS = frozenset({"runtime_name", "runtime_version", "worker_version", "worker_bitness", "custom_properties"})

    class WorkerInitResponse(_Message):
        FIELDS = frozenset({"worker_version", "capabilities", "result", "worker_metadata"})

    class BindingInfo(_Message):
        FIELDS = frozenset({"type", "direction", "data_type", "properties"})
        # Direction: in = 0 (a Python keyword; the library compares with the other two), out, inout.
        out, inout = 1, 2
        # DataType.
        undefined, string, binary, stream = 0, 1, 2, 3

    class RpcRetryOptions(_Message):
        FIELDS = frozenset(
            {"max_retry_count", "delay_interval", "minimum_interval", "maximum_interval", "retry_strategy"}
        )

    class RpcFunctionMetadata(_Message):
        FIELDS = frozenset(
            {
                "name",
                "directory",
                "script_file",
                "entry_point",
                "bindings",
                "is_proxy",
                "status",
                "language",
                "raw_bindings",
                "function_id",
                "managed_dependency_enabled",
                "retry_options",
                "properties",
            }
        )

    class FunctionMetadataResponse(_Message):
        FIELDS = frozenset({"function_metadata_results", "result", "use_default_metadata_indexing"})

    # An invocation: what the host sends (the request and its input bindings) and what the worker answers.
    class RpcHttp(_Message):
        FIELDS = frozenset(
            {
                "method",
                "url",
                "headers",
                "body",
                "params",
                "status_code",
                "query",
                "enable_content_negotiation",
                "rawBody",
                "identities",
                "cookies",
                "nullable_headers",
                "nullable_params",
                "nullable_query",
            }
        )

    class TypedData(_Message):
        _DATA = frozenset(
            {
                "string",
                "json",
                "bytes",
                "stream",
                "http",
                "int",
                "double",
                "collection_bytes",
                "collection_string",
                "collection_double",
                "collection_sint64",
                "model_binding_data",
                "collection_model_binding_data",
            }
        )
        FIELDS = _DATA
        ONEOFS: ClassVar[dict[str, frozenset[str]]] = {"data": _DATA}

    class ParameterBinding(_Message):
        FIELDS = frozenset({"name", "data", "rpc_shared_memory"})
        ONEOFS: ClassVar[dict[str, frozenset[str]]] = {"rpc_data": frozenset({"data", "rpc_shared_memory"})}

    class InvocationRequest(_Message):
        FIELDS = frozenset(
            {"invocation_id", "function_id", "input_data", "trigger_metadata", "trace_context", "retry_context"}
        )

    class RpcTraceContext(_Message):
        FIELDS = frozenset({"trace_parent", "trace_state", "attributes"})

    class RetryContext(_Message):
        FIELDS = frozenset({"retry_count", "max_retry_count", "exception"})

    class InvocationResponse(_Message):
        FIELDS = frozenset({"invocation_id", "output_data", "return_value", "result", "trace_context"})

    def __getattr__(self, name: str) -> Any:
        # Only reached for a message type not defined above: the library now builds something more
        # while indexing, which this stand-in (and so this test) would have to learn first.
        raise AttributeError(
            f"azure-functions-runtime asked for protos.{name}, which tests/app/worker_indexing.py does not define: "
            "the worker's indexing now sends the host another message type"
        )


def _host_request(app_dir: Path, protos: _Protos) -> Any:
    """What the worker process hands the library for a host message: the message and the ``protos`` module.

    The shape (``request.request.worker_init_request`` and ``request.properties``) is the worker process's
    contract with the library, read from the library's handlers; it is not documented elsewhere.
    """
    init = SimpleNamespace(capabilities={}, function_app_directory=str(app_dir))
    return SimpleNamespace(
        request=SimpleNamespace(worker_init_request=init, functions_metadata_request=init),
        properties={"host": "127.0.0.1", "protos": protos},
    )


def _status(result: _Message | None) -> dict[str, Any]:
    if result is None:
        return {"status": None, "exception": None}
    exception = result.get("exception")
    return {
        "status": {0: "Failure", 1: "Success", 2: "Cancelled"}.get(result.get("status"), result.get("status")),
        "exception": None if exception is None else f"{exception.get('message')}\n{exception.get('stack_trace')}",
    }


def _binding_info(binding: _Message) -> dict[str, Any]:
    return {"type": binding.get("type"), "direction": binding.get("direction"), "data_type": binding.get("data_type")}


def _type_name(pytype: Any) -> str | None:
    return None if pytype is None else f"{pytype.__module__}.{pytype.__qualname__}"


def reach_inside(module: Any, *path: str) -> Any:
    """An attribute the library does not export; a clear failure when it has moved."""
    value = module
    for name in path:
        if not hasattr(value, name):
            raise RuntimeError(
                f"the worker library no longer has {module.__name__}.{'.'.join(path)} "
                f"(azure-functions-runtime {importlib.metadata.version('azure-functions-runtime')}): "
                "update tests/app/worker_indexing.py, which reaches inside the worker there"
            )
        value = getattr(value, name)
    return value


def _worker_view(function_ids: Mapping[str, str]) -> dict[str, Any]:
    """How the worker will invoke each function: reached inside the library, which exports no such view.

    ``handle_event._functions`` is the registry that the worker's invocation handler reads, and
    ``http_v2.HttpV2Registry`` decides whether an invocation goes through the HTTP streaming proxy
    (``invocation_request``: ``fi.is_http_func and HttpV2Registry.http_v2_enabled()``).
    """
    import azure_functions_runtime.handle_event as handle_event
    import azure_functions_runtime.http_v2 as http_v2

    registry = reach_inside(handle_event, "_functions")
    http_v2_enabled = bool(reach_inside(http_v2, "HttpV2Registry", "http_v2_enabled")())
    ext_base = reach_inside(http_v2, "HttpV2Registry", "ext_base")()
    view: dict[str, Any] = {
        "http_v2_enabled": http_v2_enabled,
        "http_extension_module": ext_base.ModuleTrackerMeta.get_module() if ext_base is not None else None,
        "functions": {},
    }
    for name, function_id in function_ids.items():
        info = registry.get_function(function_id)
        if info is None:
            raise RuntimeError(f"the worker's registry has no function {name} ({function_id})")
        trigger = (info.trigger_metadata or {}).get("param_name")
        view["functions"][name] = {
            "is_http_func": info.is_http_func,
            "served_through_http_proxy": bool(info.is_http_func and http_v2_enabled),
            "is_async": info.is_async,
            "trigger_param": trigger,
            "input_types": {
                param: {"binding": type_info.binding_name, "pytype": _type_name(type_info.pytype)}
                for param, type_info in info.input_types.items()
            },
            "return_pytype": None if info.return_type is None else _type_name(info.return_type.pytype),
        }
    return view


async def _listening(uri: str) -> bool:
    """Whether the worker's HTTP server (the host's proxy target) accepts connections at ``uri`` within 10 s."""
    host, port = uri.removeprefix("http://").rsplit(":", 1)

    async def accepts() -> bool:
        try:
            _, writer = await asyncio.open_connection(host, int(port))
        except OSError:
            return False
        writer.close()
        await writer.wait_closed()
        return True

    try:
        await eventually(accepts, timeout=10, interval=0.05)
    except AssertionError:
        return False
    return True


def _invocation(
    protos: _Protos,
    function_id: str,
    invocation_id: str,
    url: str,
    route_params: dict[str, str],
    query: dict[str, str],
    client_binding: str,
) -> Any:
    """The host's invocation request for an HTTP GET with a durable client binding (``client``).

    With the worker's HTTP server in use the request itself goes to that server; the invocation
    carries the route parameters (the worker asked for them: ``RequiresRouteParameters``). Wrapped
    as the worker process hands it to ``invocation_request`` (see ``_host_request``).
    """
    http = protos.RpcHttp(method="GET", url=url, headers={}, body=protos.TypedData(), params=route_params, query=query)
    invocation = protos.InvocationRequest(
        invocation_id=invocation_id,
        function_id=function_id,
        input_data=[
            protos.ParameterBinding(name="req", data=protos.TypedData(http=http)),
            protos.ParameterBinding(name="client", data=protos.TypedData(string=client_binding)),
        ],
        trigger_metadata={},
        trace_context=protos.RpcTraceContext(trace_parent="", trace_state="", attributes={}),
        retry_context=protos.RetryContext(retry_count=0, max_retry_count=0, exception=None),
    )
    return SimpleNamespace(request=SimpleNamespace(invocation_request=invocation), properties={})


async def stream_through_worker(
    protos: _Protos, http_uri: str, function_id: str, session_id: str, correlation_id: str
) -> dict[str, Any]:
    """One resume request for a turn, served by the worker while the app's own callback writes that turn.

    Two chunks are written first; once both have arrived through the worker's HTTP server the third
    and the turn's end are written, so only a response that streams can pass on that third chunk.
    """
    import azure_functions_runtime
    import httpx

    from tests.buffer.helpers import context, response, update

    app = sys.modules["function_app"]
    ctx = context(session_id, correlation_id, agent="TravelAgent")
    pieces = ["Lisbon ", "in three ", "days."]
    for piece in pieces[:2]:
        await app.buffer.on_streaming_response_update(update(piece), ctx)

    invocation_id = "3f1c1d2e-0000-4000-8000-000000000001"
    path = f"/api/agent/stream/{session_id}"
    # What the durable extension passes a client binding; nothing here asks the durable backend.
    client_binding = json.dumps(
        {"taskHubName": "agentslocal", "creationUrls": {}, "managementUrls": {}, "rpcBaseUrl": "http://127.0.0.1:9/"}
    )
    invocation = _invocation(
        protos,
        function_id,
        invocation_id,
        url=f"http://localhost:7071{path}?correlation_id={correlation_id}",
        route_params={"session_id": session_id},
        query={"correlation_id": correlation_id},
        client_binding=client_binding,
    )
    started = time.monotonic()
    events: list[dict[str, Any]] = []
    report: dict[str, Any] = {"events": events}

    async def read_events() -> None:
        async with (
            httpx.AsyncClient(base_url=http_uri, timeout=30) as http,
            http.stream(
                "GET",
                path,
                params={"correlation_id": correlation_id},
                headers={"x-ms-invocation-id": invocation_id, "accept": "text/event-stream"},
            ) as streamed,
        ):
            report["status_code"] = streamed.status_code
            report["content_type"] = streamed.headers.get("content-type")
            event: dict[str, Any] = {}
            async for line in streamed.aiter_lines():
                if line:
                    field, _, value = line.partition(":")
                    event[field] = value.removeprefix(" ")
                    continue
                if "data" in event:
                    event["seconds"] = time.monotonic() - started
                    events.append(event)
                    messages = [e for e in events if e.get("event", "message") == "message"]
                    if len(messages) == 2 and "rest_written" not in report:
                        await app.buffer.on_streaming_response_update(update(pieces[2]), ctx)
                        await app.buffer.on_agent_response(response("".join(pieces)), ctx)
                        report["rest_written"] = time.monotonic() - started
                event = {}

    # The host sends the request to the worker's HTTP server and the invocation over gRPC at once.
    reader = asyncio.create_task(read_events())
    answer = await azure_functions_runtime.invocation_request(invocation)
    report["invocation"] = {**_status(answer.get("result")), "seconds": time.monotonic() - started}
    await asyncio.wait_for(reader, 60)
    await app.buffer.aclose()
    return report


async def index(app_dir: Path, stream: tuple[str, str] | None = None) -> dict[str, Any]:
    """Send the worker init and metadata requests for ``app_dir``; what the host would receive."""
    import azure_functions_runtime

    # The worker process puts the app's directory first on sys.path before the library imports it.
    sys.path.insert(0, str(app_dir))
    protos = _Protos()
    request = _host_request(app_dir, protos)
    report: dict[str, Any] = {
        "versions": {
            name: importlib.metadata.version(name)
            for name in ("azure-functions-runtime", "azure-functions", "azurefunctions-extensions-base")
        }
    }

    init = await azure_functions_runtime.worker_init_request(request)
    capabilities = dict(init.get("capabilities") or {})
    report["init"] = {**_status(init.get("result")), "capabilities": capabilities}
    if report["init"]["status"] != "Success":
        return report
    if "HttpUri" in capabilities:
        report["init"]["http_uri_listening"] = await _listening(capabilities["HttpUri"])

    metadata = await azure_functions_runtime.functions_metadata_request(request)
    functions = metadata.get("function_metadata_results") or []
    report["metadata"] = {
        **_status(metadata.get("result")),
        "use_default_metadata_indexing": metadata.get("use_default_metadata_indexing"),
        "functions": {
            function.get("name"): {
                "function_id": function.get("function_id"),
                "script_file": function.get("script_file"),
                "entry_point": function.get("entry_point"),
                "language": function.get("language"),
                "properties": dict(function.get("properties") or {}),
                "bindings": {name: _binding_info(info) for name, info in (function.get("bindings") or {}).items()},
                "raw_bindings": [json.loads(raw) for raw in function.get("raw_bindings") or []],
            }
            for function in functions
        },
    }
    report["worker"] = _worker_view(
        {name: spec["function_id"] for name, spec in report["metadata"]["functions"].items()}
    )
    if stream is not None:
        try:
            report["stream"] = await stream_through_worker(
                protos,
                capabilities["HttpUri"],
                report["metadata"]["functions"]["agent_stream_resume"]["function_id"],
                *stream,
            )
        except Exception:
            report["stream"] = {"error": traceback.format_exc()}
    return report


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.app.worker_indexing")
    parser.add_argument("app_dir", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--stream", nargs=2, metavar=("SESSION_ID", "CORRELATION_ID"))
    args = parser.parse_args(argv[1:])
    try:
        report = asyncio.run(index(args.app_dir.resolve(), tuple(args.stream) if args.stream else None))
    except Exception:
        report = {"error": traceback.format_exc()}
    args.out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
