"""local.settings.sample.json names exactly the settings the app reads, with working local defaults."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

from http_api import RunInputSettings, StreamSettings
from tests.app.app_harness import ROOT
from travel_agents import ModelSettings, max_revisions_from_env
from valkey_buffer import ValkeySettings

# Read by the Functions host and the Python worker, not by our code.
PLATFORM_SETTINGS = {"FUNCTIONS_WORKER_RUNTIME", "PYTHON_ENABLE_INIT_INDEXING", "AzureWebJobsStorage"}
APP_CODE = ["function_app.py", "http_api", "travel_agents", "valkey_buffer"]


class RecordingEnviron(Mapping[str, str]):
    """An environment that remembers every name the code looks up."""

    def __init__(self, values: Mapping[str, str] | None = None) -> None:
        self.values = dict(values or {})
        self.read: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.read.add(name)
        return self.values[name]

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        self.read.add(name)
        return self.values.get(name, default)

    def __contains__(self, name: object) -> bool:
        if isinstance(name, str):
            self.read.add(name)
        return name in self.values

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)


def _sample_values() -> dict[str, str]:
    return json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]


def _read_by_settings_classes(values: Mapping[str, str] | None = None) -> set[str]:
    environ = RecordingEnviron(values)
    ValkeySettings.from_env(environ)
    ModelSettings.from_env(environ)
    StreamSettings.from_env(environ)
    RunInputSettings.from_env(environ)
    max_revisions_from_env(environ)
    return environ.read


def _referenced_by_host_json() -> set[str]:
    return set(re.findall(r"%([A-Za-z0-9_]+)%", (ROOT / "host.json").read_text()))


def _environment_names_in_code() -> set[str]:
    """Upper-case names the code passes to an environment lookup (a guard against a setting read elsewhere)."""
    pattern = re.compile(r"""(?:environ|env)(?:\.get\(|\[)\s*["']([A-Z][A-Z0-9_]+)["']""")
    names: set[str] = set()
    for entry in APP_CODE:
        path = ROOT / entry
        for file in [path] if path.is_file() else sorted(Path(path).rglob("*.py")):
            names |= set(pattern.findall(file.read_text()))
    return names


def test_every_setting_in_the_sample_is_read_and_every_read_setting_is_in_the_sample() -> None:
    sample = set(_sample_values())
    read = _read_by_settings_classes() | _referenced_by_host_json() | PLATFORM_SETTINGS

    assert sample - read == set(), "settings in the sample that nothing reads"
    assert read - sample == set(), "settings the app reads that the sample lacks"
    assert _environment_names_in_code() <= sample


def test_the_sample_values_are_valid_local_defaults_without_secrets() -> None:
    values = _sample_values()

    valkey = ValkeySettings.from_env(values)
    model = ModelSettings.from_env(values)
    streams = StreamSettings.from_env(values)
    run_input = RunInputSettings.from_env(values)
    assert max_revisions_from_env(values) == 3

    assert (valkey.host, valkey.port, valkey.tls, valkey.cluster, valkey.auth) == (
        "localhost",
        6379,
        False,
        False,
        "password",
    )
    assert valkey.password is None
    assert not model.uses_azure_openai, "the sample runs the offline scripted model"
    assert (streams.max_duration_seconds, streams.heartbeat_seconds) == (200, 15)
    assert not run_input.allow_system_role_messages, "clients may not send system messages unless allowed"
    assert values["AzureWebJobsStorage"] == "UseDevelopmentStorage=true"
    assert values["PYTHON_ENABLE_INIT_INDEXING"] == "1"
    assert values["FUNCTIONS_WORKER_RUNTIME"] == "python"
    assert not any(re.search(r"(?i)(key|secret|password)=", value) for value in values.values())


def test_host_json_uses_the_bundle_range_and_the_task_hub_setting() -> None:
    host = json.loads((ROOT / "host.json").read_text())

    assert host["version"] == "2.0"
    assert host["extensionBundle"] == {"id": "Microsoft.Azure.Functions.ExtensionBundle", "version": "[4.*, 5.0.0)"}
    assert host["extensions"]["durableTask"]["hubName"] == "%TASKHUB_NAME%"
    assert host["extensions"]["durableTask"]["storageProvider"]["type"] == "AzureStorage"
    assert host["extensions"]["http"]["routePrefix"] == "api"


def test_docker_compose_serves_valkey_and_azurite_on_the_sample_ports() -> None:
    compose = (ROOT / "docker-compose.yml").read_text()
    values = _sample_values()

    assert f'"127.0.0.1:{values["VALKEY_PORT"]}:6379"' in compose
    for port in (10000, 10001, 10002):  # Azurite blob, queue, table: what UseDevelopmentStorage=true expects
        assert f'"127.0.0.1:{port}:{port}"' in compose
