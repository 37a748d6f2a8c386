"""function_app.py indexed by the real Azure Functions Python worker library, as the host would receive it.

``app.get_functions()`` (test_app_function_index.py) is what the SDK declares; this is what the worker
makes of it: ``azure-functions-runtime`` (Python >= 3.13) handles a worker-init and a functions-metadata
request for this directory, with the app settings of local.settings.sample.json
(``PYTHON_ENABLE_INIT_INDEXING=1``), in a process of its own (tests/app/worker_indexing.py), then serves
one streaming request through its HTTP server as the host would send it. Where the library exports
nothing to read (how it will invoke a function), that module reaches inside it and fails, naming
what moved, if it has.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.app.app_harness import ROOT
from tests.app.test_app_function_index import (
    EXPECTED_ACTIVITIES,
    EXPECTED_HTTP,
    EXPECTED_ORCHESTRATORS,
    EXPECTED_WORKFLOW_ENTITIES,
    FRAMEWORK_WORKFLOW_ROUTES,
)
from tests.valkey_servers import ValkeyProcess

if sys.version_info < (3, 13):
    pytest.skip(
        f"azure-functions-runtime (the Functions worker library) needs Python >= 3.13, this is "
        f"{sys.version_info.major}.{sys.version_info.minor}",
        allow_module_level=True,
    )
if importlib.util.find_spec("azure_functions_runtime") is None:
    _reason = "azure-functions-runtime is not installed: pip install -r requirements-worker.txt"
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"{_reason}; CI=true, where the worker-indexing test must run", pytrace=False)
    pytest.skip(_reason, allow_module_level=True)

from azurefunctions.extensions.http.fastapi import Request, Response

EXPECTED_ENTITIES = {"dafx-TravelAgent"} | EXPECTED_WORKFLOW_ENTITIES
# FunctionRpc.proto's BindingInfo.Direction.
IN, OUT = 0, 1


def _type_name(pytype: type) -> str:
    return f"{pytype.__module__}.{pytype.__qualname__}"


def run_worker_indexing(
    app_dir: Path, out_dir: Path, *extra: str, settings: dict[str, str] | None = None
) -> dict[str, Any]:
    """Index ``app_dir`` with the worker library in a fresh interpreter, with the sample's app settings."""
    sample = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    assert sample["PYTHON_ENABLE_INIT_INDEXING"] == "1"
    out = out_dir / "worker_index.json"
    result = subprocess.run(
        [sys.executable, "-m", "tests.app.worker_indexing", str(app_dir), str(out), *extra],
        cwd=ROOT,
        env={**os.environ, **sample, **(settings or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and out.exists(), result.stdout + result.stderr
    report: dict[str, Any] = json.loads(out.read_text())
    assert "error" not in report, report["error"]
    return report


SESSION_ID, CORRELATION_ID = "s-worker-proxy", "c-worker-proxy"


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory, valkey_server: ValkeyProcess) -> dict[str, Any]:
    """The worker's start on this app, then one resume request served through it (``--stream``)."""
    report = run_worker_indexing(
        ROOT,
        tmp_path_factory.mktemp("worker_index"),
        "--stream",
        SESSION_ID,
        CORRELATION_ID,
        settings={"VALKEY_HOST": valkey_server.host, "VALKEY_PORT": str(valkey_server.port)},
    )
    assert report["init"]["status"] == "Success", report["init"]["exception"]
    assert report["metadata"]["status"] == "Success", report["metadata"]["exception"]
    return report


def test_the_worker_indexes_at_init_and_starts_its_http_streaming_proxy(indexed: dict[str, Any]) -> None:
    capabilities = indexed["init"]["capabilities"]

    # The host proxies HTTP requests to this address instead of sending them over gRPC.
    assert capabilities["HttpUri"].startswith("http://127.0.0.1:")
    assert indexed["init"]["http_uri_listening"] is True
    assert capabilities["RequiresRouteParameters"] == "true"
    assert indexed["worker"]["http_v2_enabled"] is True
    assert indexed["worker"]["http_extension_module"].startswith("azurefunctions.extensions.http.fastapi")
    # The worker indexed the app itself; the host is not to read function.json files.
    assert indexed["metadata"]["use_default_metadata_indexing"] is False


def test_the_host_receives_every_function_and_nothing_else(indexed: dict[str, Any]) -> None:
    functions = indexed["metadata"]["functions"]

    assert set(functions) == set(EXPECTED_HTTP) | EXPECTED_ENTITIES | EXPECTED_ACTIVITIES | EXPECTED_ORCHESTRATORS
    # The workflow's built-in func.HttpRequest routes are not among them (see StreamingAgentFunctionApp).
    assert not FRAMEWORK_WORKFLOW_ROUTES & set(functions)
    for name, spec in functions.items():
        assert (spec["script_file"], spec["entry_point"], spec["language"]) == ("function_app.py", name, "python")
        assert spec["properties"] == {"worker_indexed": "True"}, name


def test_every_http_function_reaches_the_host_with_its_route_methods_auth_level_and_bindings(
    indexed: dict[str, Any],
) -> None:
    functions = indexed["metadata"]["functions"]

    for name, (route, methods, auth_level, durable_client) in EXPECTED_HTTP.items():
        raw = {binding["type"]: binding for binding in functions[name]["raw_bindings"]}
        trigger = raw["httpTrigger"]
        assert (trigger["name"], trigger["direction"]) == ("req", "IN"), name
        assert (trigger["route"], trigger["methods"], trigger["authLevel"]) == (route, methods, auth_level), name
        assert (raw["http"]["name"], raw["http"]["direction"]) == ("$return", "OUT"), name

        expected = {"req": ("httpTrigger", IN), "$return": ("http", OUT)}
        if durable_client:
            assert (raw["durableClient"]["name"], raw["durableClient"]["direction"]) == ("client", "IN"), name
            expected["client"] = ("durableClient", IN)
        else:
            assert "durableClient" not in raw, name
        assert len(raw) == len(functions[name]["raw_bindings"]) == len(expected), name
        bindings = {b: (info["type"], info["direction"]) for b, info in functions[name]["bindings"].items()}
        assert bindings == expected, name


def test_every_http_function_is_served_through_the_streaming_proxy_with_the_fastapi_types(
    indexed: dict[str, Any],
) -> None:
    worker = indexed["worker"]["functions"]

    for name, (_, _, _, durable_client) in EXPECTED_HTTP.items():
        function = worker[name]
        assert function["is_http_func"] and function["served_through_http_proxy"], name
        assert function["is_async"], name
        assert function["trigger_param"] == "req", name
        assert function["input_types"]["req"] == {"binding": "httpTrigger", "pytype": _type_name(Request)}, name
        assert function["return_pytype"] == _type_name(Response), name
        # The durable client is accepted next to the streaming request: an input the worker passes in.
        assert ("client" in function["input_types"]) is durable_client, name
        assert set(function["input_types"]) == ({"req", "client"} if durable_client else {"req"}), name


def test_each_agent_reaches_the_host_as_its_durable_entity_trigger(indexed: dict[str, Any]) -> None:
    functions = indexed["metadata"]["functions"]

    for name in EXPECTED_ENTITIES:
        assert functions[name]["raw_bindings"] == [
            {"direction": "IN", "type": "entityTrigger", "name": "context", "entityName": name}
        ]
        assert functions[name]["bindings"] == {"context": {"type": "entityTrigger", "direction": IN, "data_type": None}}
        entity = indexed["worker"]["functions"][name]
        assert not entity["is_http_func"] and not entity["served_through_http_proxy"]


def test_a_turn_streams_live_through_the_workers_http_server(indexed: dict[str, Any]) -> None:
    stream = indexed["stream"]
    assert "error" not in stream, stream.get("error")

    assert stream["invocation"]["status"] == "Success", stream["invocation"]["exception"]
    assert stream["status_code"] == 200
    assert stream["content_type"].startswith("text/event-stream")
    events = stream["events"]
    assert [(event.get("event"), event["data"]) for event in events] == [
        ("message", "Lisbon "),
        ("message", "in three "),
        ("message", "days."),
        ("done", ""),
    ]
    ids = [tuple(int(part) for part in event["id"].split("-")) for event in events]
    assert ids == sorted(set(ids)), "each event carries its Valkey entry id, in order"
    # The rest of the turn was written only once its first two chunks had come through: the worker
    # answered the invocation at once and streamed the body while the turn went on.
    assert stream["invocation"]["seconds"] < stream["rest_written"] < events[2]["seconds"]
    assert events[1]["seconds"] < stream["rest_written"]


def test_a_worker_internal_that_has_moved_fails_naming_it() -> None:
    import azure_functions_runtime.handle_event as handle_event

    from tests.app.worker_indexing import reach_inside

    assert reach_inside(handle_event, "_functions") is handle_event._functions
    with pytest.raises(RuntimeError, match=r"handle_event\._registry_that_moved .*reaches inside the worker"):
        reach_inside(handle_event, "_registry_that_moved")


def test_the_worker_refuses_a_classic_http_request_next_to_streaming_routes(tmp_path: Path) -> None:
    # The control that shows this indexing checks something: one func.HttpRequest route next to a
    # streaming one, which the platform does not support, fails the worker's start.
    app_dir = tmp_path / "mixed_app"
    app_dir.mkdir()
    (app_dir / "function_app.py").write_text(
        textwrap.dedent(
            """
            import azure.functions as func
            from azurefunctions.extensions.http.fastapi import Request, Response

            app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


            @app.route(route="streaming")
            async def streaming(req: Request) -> Response:
                return Response("ok")


            @app.route(route="classic")
            def classic(req: func.HttpRequest) -> func.HttpResponse:
                return func.HttpResponse("ok")
            """
        )
    )

    report = run_worker_indexing(app_dir, tmp_path)

    assert report["init"]["status"] == "Failure"
    assert "classic" in report["init"]["exception"]
    assert "HttpRequest" in report["init"]["exception"]
    assert "metadata" not in report
