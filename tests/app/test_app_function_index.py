"""function_app as the Python worker indexes it: routes, methods, auth levels, bindings, entities."""

from __future__ import annotations

import inspect
import json
import os
import socket
import subprocess
import sys
import textwrap
import uuid
from types import ModuleType
from typing import Any

import azure.functions as func
import pytest
from fastapi import Request as FastApiRequest

from tests.app.app_harness import ROOT, indexed_functions, load_function_app
from travel_agents import TurnCanceller, TurnFailureReporter

EXPECTED_HTTP = {
    # function name: (route, methods, auth level, takes a durable client)
    "agent_run": ("agents/{name}/run", ["POST"], "FUNCTION", True),
    "agent_stream": ("agents/{name}/stream", ["POST"], "FUNCTION", True),
    "agent_ag_ui": ("agents/{name}/ag-ui", ["POST"], "FUNCTION", True),
    "agent_stream_resume": ("agent/stream/{session_id}", ["GET"], "FUNCTION", True),
    "agent_turn_status": ("agents/{name}/sessions/{session_id}/turns/{correlation_id}", ["GET"], "FUNCTION", True),
    "agent_stream_with_token": ("streams/{session_id}", ["GET"], "ANONYMOUS", True),
    "agent_session": ("agents/{name}/sessions/{session_id}", ["GET"], "FUNCTION", True),
    "agent_turn_cancel": (
        "agents/{name}/sessions/{session_id}/turns/{correlation_id}/cancel",
        ["POST"],
        "FUNCTION",
        True,
    ),
    "workflow_run": ("workflow/{name}/run", ["POST"], "FUNCTION", True),
    "workflow_status": ("workflow/{name}/status/{instanceId}", ["GET"], "FUNCTION", True),
    "workflow_respond": ("workflow/{name}/respond/{instanceId}/{requestId}", ["POST"], "FUNCTION", True),
    "workflow_cancel": ("workflow/{name}/cancel/{instanceId}", ["POST"], "FUNCTION", True),
    "workflow_stream": ("workflow/{name}/stream/{instanceId}", ["GET"], "FUNCTION", True),
    "workflow_ag_ui": ("workflow/{name}/ag-ui", ["POST"], "FUNCTION", True),
    "health": ("health", ["GET"], "ANONYMOUS", False),
    "chat_page": ("chat", ["GET"], "ANONYMOUS", False),
    "workflow_page": ("workflow/{name}/page", ["GET"], "ANONYMOUS", False),
}


# The workflow trip_planner: its agents' entities, its other executors' activities, its orchestrator.
EXPECTED_WORKFLOW_ENTITIES = {
    "dafx-trip_planner-DestinationResearcher",
    "dafx-trip_planner-BudgetPlanner",
    "dafx-trip_planner-PlanWriter",
}
EXPECTED_ACTIVITIES = {"dafx-trip_planner-intake", "dafx-trip_planner-brief", "dafx-trip_planner-approval"}
EXPECTED_ORCHESTRATORS = {"dafx-trip_planner"}
# What AgentFunctionApp registers for a workflow on its own: func.HttpRequest routes, kept out of this app.
FRAMEWORK_WORKFLOW_ROUTES = {"dafx-trip_planner-start", "dafx-trip_planner-status", "dafx-trip_planner-respond"}


@pytest.fixture(scope="module")
def indexed() -> tuple[ModuleType, dict[str, dict[str, Any]]]:
    """A fresh load of function_app.py and its functions' function.json, keyed by function name."""
    module = load_function_app({}, f"function_app_indexed_{uuid.uuid4().hex[:8]}")
    functions = {
        function.get_function_name(): json.loads(function.get_function_json())
        for function in indexed_functions(module.app)
    }
    return module, functions


def test_every_route_is_indexed_with_its_methods_auth_level_and_bindings(
    indexed: tuple[ModuleType, dict[str, dict[str, Any]]],
) -> None:
    _, functions = indexed
    http = {name: spec for name, spec in functions.items() if not name.startswith("dafx-")}

    assert set(http) == set(EXPECTED_HTTP)
    for name, (route, methods, auth_level, durable_client) in EXPECTED_HTTP.items():
        bindings = {binding["type"]: binding for binding in http[name]["bindings"]}
        trigger = bindings["httpTrigger"]
        assert (trigger["route"], trigger["methods"], trigger["authLevel"]) == (route, methods, auth_level), name
        assert bindings["http"]["direction"] == "OUT"
        assert ("durableClient" in bindings) is durable_client, name


def test_one_entity_trigger_per_agent(indexed: tuple[ModuleType, dict[str, dict[str, Any]]]) -> None:
    module, functions = indexed
    entities = {
        name: [binding["entityName"] for binding in spec["bindings"] if binding["type"] == "entityTrigger"]
        for name, spec in functions.items()
        if any(binding["type"] == "entityTrigger" for binding in spec["bindings"])
    }

    expected = {f"dafx-{agent.name}" for agent in module.agents} | EXPECTED_WORKFLOW_ENTITIES
    assert entities == {name: [name] for name in expected}
    assert [agent.name for agent in module.agents] == ["TravelAgent"]


def test_the_workflow_is_its_orchestrator_and_activities_without_the_frameworks_http_routes(
    indexed: tuple[ModuleType, dict[str, dict[str, Any]]],
) -> None:
    module, functions = indexed
    triggers = {name: spec["bindings"][0]["type"] for name, spec in functions.items()}

    assert {n for n, t in triggers.items() if t == "orchestrationTrigger"} == EXPECTED_ORCHESTRATORS
    assert {n for n, t in triggers.items() if t == "activityTrigger"} == EXPECTED_ACTIVITIES
    assert not FRAMEWORK_WORKFLOW_ROUTES & set(functions)
    assert list(module.app.workflows) == ["trip_planner"]


def test_agent_function_app_alone_would_register_the_frameworks_workflow_routes() -> None:
    # The control: without StreamingAgentFunctionApp, the func.HttpRequest routes come back whatever
    # enable_http_endpoints says (1.0.0b260922), which is what the test above shows absent.
    from agent_framework_azurefunctions import AgentFunctionApp

    from travel_agents import ModelSettings, build_workflows, create_chat_client

    class _Sink:
        async def write_error(self, *args: Any, **kwargs: Any) -> None: ...

    workflows = build_workflows(create_chat_client(ModelSettings.from_env({})), buffer=_Sink())  # type: ignore[arg-type]
    plain = AgentFunctionApp(workflows=workflows, enable_http_endpoints=False, enable_health_check=False)
    names = {function.get_function_name() for function in indexed_functions(plain)}
    assert names >= FRAMEWORK_WORKFLOW_ROUTES


def test_no_function_takes_a_classic_http_request(indexed: tuple[ModuleType, dict[str, dict[str, Any]]]) -> None:
    module, _ = indexed
    for function in indexed_functions(module.app):
        handler = function.get_user_function()
        handler = getattr(handler, "client_function", handler)
        annotations = [parameter.annotation for parameter in inspect.signature(handler).parameters.values()]
        assert func.HttpRequest not in annotations, function.get_function_name()
        assert "HttpRequest" not in {getattr(a, "__name__", a) for a in annotations}
        if function.get_trigger().type == "httpTrigger":
            assert FastApiRequest in annotations, "HTTP streaming needs the FastAPI request type"


def test_the_buffer_is_every_agents_callback_failure_sink_and_cancellation_source(
    indexed: tuple[ModuleType, dict[str, dict[str, Any]]],
) -> None:
    module, _ = indexed

    assert module.app.default_callback is module.buffer
    assert module.app.enable_http_endpoints is False
    assert module.app.enable_health_check is False
    workflow_agents = [
        executor.agent for executor in module.workflows[0].executors.values() if hasattr(executor, "agent")
    ]
    assert len(workflow_agents) == 3
    for agent in [*module.agents, *workflow_agents]:
        reporters = [m for m in agent.agent_middleware if isinstance(m, TurnFailureReporter)]
        assert len(reporters) == 1
        assert reporters[0].sink is module.buffer
        cancellers = [m for m in agent.agent_middleware if isinstance(m, TurnCanceller)]
        assert len(cancellers) == 1
        assert cancellers[0].source is module.buffer


def test_importing_function_app_connects_to_nothing() -> None:
    # Valkey and Azure OpenAI both point at a socket that records every connection attempt.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(0.5)
        port = listener.getsockname()[1]
        environ = {
            **os.environ,
            "VALKEY_HOST": "127.0.0.1",
            "VALKEY_PORT": str(port),
            "AZURE_OPENAI_ENDPOINT": f"http://127.0.0.1:{port}/",
            "AZURE_OPENAI_DEPLOYMENT": "gpt-test",
            "PYTHONPATH": str(ROOT),
        }
        script = textwrap.dedent(
            """
            import function_app
            names = sorted(f.get_function_name() for f in function_app.app.get_functions())
            print(type(function_app.agents[0].client).__name__, len(names))
            """
        )
        result = subprocess.run(
            [sys.executable, "-c", script], cwd=ROOT, env=environ, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr
        with pytest.raises(TimeoutError):
            listener.accept()
    durable = EXPECTED_WORKFLOW_ENTITIES | EXPECTED_ACTIVITIES | EXPECTED_ORCHESTRATORS
    assert result.stdout.split() == ["OpenAIChatCompletionClient", str(len(EXPECTED_HTTP) + 1 + len(durable))]


def test_importing_function_app_freezes_its_heap_and_makes_young_collections_rarer() -> None:
    # In a process of its own: the tuning is process-wide (and this test process imports the app too).
    script = textwrap.dedent(
        """
        import gc
        print(gc.get_threshold()[0], gc.get_freeze_count())
        import function_app
        from valkey_buffer._collector import DEFAULT_FIRST_THRESHOLD
        print(gc.get_threshold()[0], gc.get_freeze_count(), DEFAULT_FIRST_THRESHOLD)
        """
    )
    environ = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=environ, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    before, after = (line.split() for line in result.stdout.splitlines())
    threshold, frozen, expected = (int(value) for value in after)
    assert int(before[0]) < expected  # Python's own: 700, or 2,000 from Python 3.13
    assert threshold == expected
    assert frozen > int(before[1]) + 10_000  # the app's imports, out of every collection's way
