"""devhost's reading of the Function App: route templates as the Functions host matches them, handlers as indexed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from devhost._routing import RouteTemplate
from tests.e2e.devhost_process import PROJECT_ROOT


@pytest.mark.parametrize(
    ("template", "path", "expected"),
    [
        ("agents/{name}/run", "/api/agents/TravelAgent/run", {"name": "TravelAgent"}),
        ("agents/{name}/run", "/api/AGENTS/x/RUN", {"name": "x"}),  # literals match case-insensitively
        ("agent/stream/{session_id}", "/api/agent/stream/a%2Fb", {"session_id": "a/b"}),  # %2F stays inside
        ("agent/stream/{session_id}", "/api/agent/stream/", None),
        ("agent/stream/{session_id}", "/api/agent/stream/a/b", None),
        ("agents/{name}/run", "/agents/x/run", None),  # the route prefix is required
        ("items/{id:int}", "/api/items/42", {"id": "42"}),
        ("items/{id:int}", "/api/items/x", None),
        ("items/{id?}", "/api/items", {}),
        ("files/{*rest}", "/api/files/a/b/c", {"rest": "a/b/c"}),
    ],
)
def test_route_templates_match_like_the_functions_host(template: str, path: str, expected: dict | None) -> None:
    assert RouteTemplate(template, "api").match(path) == expected


def test_literal_routes_win_over_parameters() -> None:
    routes = sorted([RouteTemplate("agents/{name}"), RouteTemplate("agents/health")], key=lambda r: r.precedence)
    assert routes[0].template == "/api/agents/health"


# In a child process: get_functions() may be called once per app, and other tests index this one.
_INDEX_SCRIPT = """
import json, function_app
from devhost._functions_http import http_functions_of
functions, others = http_functions_of(function_app.app)
print(json.dumps({
    "routes": {f.route.template: {
        "methods": sorted(f.methods),
        "clients": f.durable_client_params,
        "handler": f"{f.handler.__module__}.{f.handler.__code__.co_name}",
    } for f in functions},
    "others": others,
}))
"""


def test_handlers_are_the_ones_the_app_registered_unwrapped_from_the_durable_client_middleware() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _INDEX_SCRIPT], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    index = json.loads(result.stdout.strip().splitlines()[-1])
    run = index["routes"]["/api/agents/{name}/run"]
    assert run["methods"] == ["POST"] and run["clients"] == ["client"]
    # azure-functions-durable wraps the handler in `df_client_middleware` (it builds the rich client
    # from the extension's JSON) and keeps the user's function as `client_function`: devhost calls
    # that very function and hands it the shim.
    assert run["handler"] == "function_app.agent_run"
    resume = index["routes"]["/api/agent/stream/{session_id}"]
    assert resume["methods"] == ["GET"] and resume["clients"] == ["client"]
    health = index["routes"]["/api/health"]
    assert health["methods"] == ["GET"] and health["clients"] == []
    assert resume["handler"] == "function_app.agent_stream_resume"
    assert any(name.startswith("dafx-") for name in index["others"])
