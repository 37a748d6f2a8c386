"""Runs the Azure Functions Python worker's own indexing of a Function App, as the host would start it.

``python -m tests.app.worker_indexing APP_DIR OUT_JSON``, in a fresh interpreter that has
``azure-functions-runtime`` (the worker library of Python >= 3.13; requirements-worker.txt): it sends
the worker a worker-init request then a functions-metadata request through the library's public
entry points (``azure_functions_runtime.worker_init_request`` and ``functions_metadata_request``,
the calls the worker process makes for the host's gRPC messages) and writes what the host would
receive as JSON to OUT_JSON. A process of its own, because the worker keeps its registry, the
imported ``function_app`` module and its HTTP server in process-wide state.

The host's protobuf classes are not on PyPI (the worker process that hosts the library generates
them), so ``protos`` here is a stand-in: the message types that these two requests construct, each
with the fields that the Functions RPC protocol (FunctionRpc.proto) gives it, and the protocol's
enum numbers. A message type or field the protocol lacks raises, as protobuf would.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import sys
import traceback
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar


class _Message:
    """A protocol message: keyword fields only, each one the protocol defines for it."""

    FIELDS: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, **fields: Any) -> None:
        unknown = set(fields) - self.FIELDS
        if unknown:
            raise ValueError(f"protocol message {type(self).__name__} has no field(s) {sorted(unknown)}")
        self.fields = fields

    def get(self, name: str, default: Any = None) -> Any:
        return self.fields.get(name, default)


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
        # Direction (`in` is a Python keyword: the generated protobuf class spells it `in_`), DataType.
        in_, out, inout = 0, 1, 2
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


def _inside(module: Any, *path: str) -> Any:
    """An attribute the library does not export; a clear failure when it has moved."""
    value = module
    for name in path:
        if not hasattr(value, name):
            raise RuntimeError(
                f"azure_functions_runtime no longer has {module.__name__}.{'.'.join(path)} "
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

    registry = _inside(handle_event, "_functions")
    http_v2_enabled = bool(_inside(http_v2, "HttpV2Registry", "http_v2_enabled")())
    ext_base = _inside(http_v2, "HttpV2Registry", "ext_base")()
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
    try:
        async with asyncio.timeout(10):
            while True:
                try:
                    _, writer = await asyncio.open_connection(host, int(port))
                except OSError:
                    await asyncio.sleep(0.05)
                    continue
                writer.close()
                await writer.wait_closed()
                return True
    except TimeoutError:
        return False


async def index(app_dir: Path) -> dict[str, Any]:
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
    return report


def main(argv: list[str]) -> int:
    app_dir, out = Path(argv[1]).resolve(), Path(argv[2])
    try:
        report = asyncio.run(index(app_dir))
    except Exception:
        report = {"error": traceback.format_exc()}
    out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
