"""Telemetry in Azure, checked in the files that configure it: host.json, the Bicep app settings, the
requirements the worker imports, and the deployable code (which must not install a second pipeline)."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

from tests.infra.bicep_tree import REPO_ROOT, render
from tests.infra.test_bicep_templates import _app_settings

DEPLOYED_CODE = ["function_app.py", "http_api", "travel_agents", "valkey_buffer"]


def _python_files(entries: list[str]) -> list[Path]:
    files: list[Path] = []
    for entry in entries:
        path = REPO_ROOT / entry
        files.extend([path] if path.is_file() else sorted(path.rglob("*.py")))
    return files


def _imported_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
    return modules


def test_host_json_puts_the_host_in_opentelemetry_mode() -> None:
    host = json.loads((REPO_ROOT / "host.json").read_text())

    assert host["telemetryMode"] == "OpenTelemetry"
    # Ignored in OpenTelemetry mode: a sampling section there would only mislead.
    assert "applicationInsights" not in host.get("logging", {})


def test_the_worker_sends_the_apps_telemetry_to_application_insights_with_entra_id(
    templates: dict[str, dict[str, Any]],
) -> None:
    settings = {name: (condition, render(value)) for name, (condition, value) in _app_settings(templates).items()}

    # The worker configures the Azure Monitor distro itself, once, for every invocation...
    assert settings["PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY"] == ("", "true")
    # ...with the connection string of the template's Application Insights...
    assert settings["APPLICATIONINSIGHTS_CONNECTION_STRING"] == ("", "applicationInsightsConnectionString")
    # ...and the exporter authenticates as the app's identity (local auth is off on the resource).
    entra = "ClientId=${identityClientId};Authorization=AAD"
    assert settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == ("", entra)
    # Not the other worker mode (OpenTelemetry without Azure Monitor), nor an OTLP destination too.
    assert "PYTHON_ENABLE_OPENTELEMETRY" not in settings
    assert not [name for name in settings if name.startswith("OTEL_")]


def test_the_worker_finds_the_distro_and_the_app_installs_no_pipeline_of_its_own() -> None:
    requirements = (REPO_ROOT / "requirements.txt").read_text()
    assert re.search(r"^azure-monitor-opentelemetry>=", requirements, re.MULTILINE), (
        "the worker imports azure.monitor.opentelemetry from the app's packages"
    )
    for path in _python_files(DEPLOYED_CODE):
        text = path.read_text()
        for configures in ("configure_azure_monitor", "set_tracer_provider", "set_meter_provider"):
            assert configures not in text, f"{path.relative_to(REPO_ROOT)} calls {configures}: two pipelines"
        sdk = {module for module in _imported_modules(path) if module.startswith("opentelemetry.sdk")}
        assert not sdk, f"{path.relative_to(REPO_ROOT)} imports the SDK {sorted(sdk)}: the API is enough"


def test_valkey_buffer_uses_the_opentelemetry_api_and_no_azure_functions() -> None:
    imported = set().union(*(_imported_modules(path) for path in _python_files(["valkey_buffer"])))

    assert {"opentelemetry"} <= {module.split(".")[0] for module in imported}
    assert not [module for module in imported if module.startswith(("azure.functions", "azurefunctions"))]
