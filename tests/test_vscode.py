"""The VS Code and dev container files parse, and every task and launch configuration names something that exists."""

from __future__ import annotations

import importlib.util
import itertools
import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from devhost._cli import _parse as parse_devhost_args
from tests.jsonc import load_jsonc, strip_jsonc
from tests.vscode_config import (
    ATTACH_CONFIGURATION,
    DEVCONTAINER,
    LOCAL_HOST_CONFIGURATION,
    ROOT,
    VENV_PYTHON,
    VSCODE,
    launch_configurations,
    substitute,
    tasks,
)
from valkey_buffer import ValkeySettings

JSONC_FILES = [
    VSCODE / "launch.json",
    VSCODE / "tasks.json",
    VSCODE / "settings.json",
    VSCODE / "extensions.json",
    DEVCONTAINER / "devcontainer.json",
]
RECOMMENDED_EXTENSIONS = {
    "ms-azuretools.vscode-azurefunctions",  # Azure Functions
    "ms-python.python",
    "ms-python.debugpy",  # the "debugpy" debug type of launch.json
    "ms-azuretools.vscode-bicep",
    "humao.rest-client",  # demo.http
}
DEVCONTAINER_COMPOSE = DEVCONTAINER / "docker-compose.devcontainer.yml"


# ----- the tolerant loader -----


def test_jsonc_loader_drops_comments_and_trailing_commas_but_not_string_contents() -> None:
    text = """// a comment
    {
      "url": "http://x//y", /* block
      comment */ "list": [1, 2,],  // trailing comma
      "quote": "a \\" // b",
    }
    """
    assert json.loads(strip_jsonc(text)) == {"url": "http://x//y", "list": [1, 2], "quote": 'a " // b'}


def test_jsonc_loader_refuses_what_vscode_would_refuse(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{\n  // fine\n  "a": 1\n  "b": 2\n}\n')
    with pytest.raises(ValueError, match=r"broken\.json: line 4"):
        load_jsonc(broken)


@pytest.mark.parametrize("path", JSONC_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_vscode_and_devcontainer_json_file_parses(path: Path) -> None:
    assert isinstance(load_jsonc(path), dict)


def test_no_other_json_file_sits_in_vscode_or_devcontainer() -> None:
    # A file added later is covered by the parse test above only if it is listed there.
    assert set(VSCODE.glob("*.json")) | set(DEVCONTAINER.glob("*.json")) == set(JSONC_FILES)


# ----- launch.json -----


def test_local_host_configuration_runs_devhost_under_debugpy_with_the_workspace_venv() -> None:
    configuration = launch_configurations()[LOCAL_HOST_CONFIGURATION]
    assert (configuration["type"], configuration["request"]) == ("debugpy", "launch")
    assert configuration["python"] == f"${{workspaceFolder}}/{VENV_PYTHON}"
    assert configuration.get("cwd", "${workspaceFolder}") == "${workspaceFolder}"
    module = configuration["module"]
    assert (ROOT / module / "__main__.py").is_file(), f"python -m {module} has nothing to run"
    parse_devhost_args(configuration.get("args", []))  # devhost's own command line accepts them (exits if not)
    # Its settings are ones the app reads, with values it accepts.
    sample = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    env = configuration.get("env", {})
    assert set(env) <= set(sample), f"not settings of the app: {set(env) - set(sample)}"
    ValkeySettings.from_env(env)
    assert configuration.get("onTerminate") == "KeyboardInterrupt", "Stop would kill the host instead of stopping it"


def test_attach_configuration_is_the_azure_functions_extensions_own() -> None:
    configuration = launch_configurations()[ATTACH_CONFIGURATION]
    assert (configuration["type"], configuration["request"]) == ("debugpy", "attach")
    assert configuration["connect"] == {"host": "localhost", "port": 9091}
    assert configuration["preLaunchTask"] == "func: host start"
    assert configuration["preLaunchTask"] in tasks()


# ----- tasks.json -----


def _commands(shell_line: str) -> list[list[str]]:
    """The simple commands of a shell line (split at ``&&``, ``||``, ``;``), shell keywords dropped."""
    lexer = shlex.shlex(shell_line, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token in {";", "&&", "||"}:
            commands.append([])
        elif token not in {"if", "then", "else", "fi"}:
            commands[-1].append(token)
    return [c for c in commands if c]


def _module_exists(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    if path.with_suffix(".py").is_file() or (path / "__main__.py").is_file():
        return True
    return "." not in name and importlib.util.find_spec(name) is not None  # pip, venv, pytest


def _names_in(command: list[str]) -> list[str]:
    """What a command names that must exist: modules (``-m``), files (``-r``, ``cp``'s source, compose's file).

    Raises:
        AssertionError: When a named thing does not exist.
    """
    named: list[str] = []
    for flag, value in itertools.pairwise(command):
        if flag == "-m":
            assert _module_exists(value), f"no module {value!r} for {shlex.join(command)!r}"
            named.append(value)
        elif flag == "-r":
            assert (ROOT / value).is_file(), f"no file {value!r} for {shlex.join(command)!r}"
            named.append(value)
    if command[:2] == ["docker", "compose"]:
        assert (ROOT / "docker-compose.yml").is_file()
        named.append("docker-compose.yml")
    if command[0] == "cp":
        assert (ROOT / command[-2]).is_file(), f"no file {command[-2]!r} to copy"
        named.append(command[-2])
    return named


def test_every_task_names_a_command_module_or_file_that_exists() -> None:
    all_tasks = tasks()
    for label, task in all_tasks.items():
        for dependency in task.get("dependsOn", []):
            assert dependency in all_tasks, f"{label!r} depends on a task that does not exist: {dependency!r}"
        if task.get("type") == "func":
            assert task["command"] == "host start"
            assert (ROOT / "host.json").is_file() and (ROOT / "function_app.py").is_file()
            continue
        if "command" not in task:
            assert task.get("dependsOn"), f"{label!r} runs nothing"
            continue
        assert task["type"] == "shell", label
        named: list[str] = []
        for command in _commands(task["command"]):
            program = command[0]
            assert program in {VENV_PYTHON, "python3", "docker", "test", "cp", "echo", "["}, (label, program)
            named += _names_in(command)
        assert named, f"{label!r} names no module or file of this repository"


def test_tasks_cover_the_venv_func_start_tests_and_benchmarks() -> None:
    lines = {label: task.get("command", "") for label, task in tasks().items()}

    def one_running(fragment: str) -> str:
        found = [label for label, command in lines.items() if fragment in command]
        assert found, f"no task runs {fragment!r}"
        return found[0]

    assert "python3 -m venv .venv" in lines[one_running("-r requirements-dev.txt")]
    func_start = tasks()["func: host start"]
    assert func_start["isBackground"] and func_start["problemMatcher"] == "$func-python-watch"
    assert one_running("-r requirements.txt") in func_start["dependsOn"]
    assert one_running("docker compose up -d") in func_start["dependsOn"]
    assert one_running("cp local.settings.sample.json local.settings.json") in func_start["dependsOn"]
    assert func_start.get("dependsOrder") == "sequence", "func must not start before Valkey and Azurite"
    assert tasks()[one_running(f"{VENV_PYTHON} -m pytest")]["group"]["kind"] == "test"
    for benchmark in ("bench.bench_buffer", "bench.bench_live_path", "bench.bench_devhost"):
        one_running(f"{VENV_PYTHON} -m {benchmark}")


# ----- settings.json, extensions.json, requirements -----


def test_settings_are_the_azure_functions_extensions_keys_for_this_project() -> None:
    settings = load_jsonc(VSCODE / "settings.json")
    assert settings["azureFunctions.projectLanguage"] == "Python"
    assert settings["azureFunctions.projectLanguageModel"] == 2
    assert settings["azureFunctions.projectRuntime"] == "~4"
    assert settings["azureFunctions.pythonVenv"] == VENV_PYTHON.split("/")[0]
    assert settings["azureFunctions.deploySubpath"] == "."
    assert settings["azureFunctions.scmDoBuildDuringDeployment"] is True
    assert substitute(settings["python.defaultInterpreterPath"]) == str(ROOT / VENV_PYTHON)


def test_recommended_extensions_are_the_ones_the_files_need() -> None:
    assert set(load_jsonc(VSCODE / "extensions.json")["recommendations"]) == RECOMMENDED_EXTENSIONS
    assert (ROOT / "demo.http").is_file() and any((ROOT / "infra").glob("*.bicep"))


def test_debugpy_is_a_dev_requirement_with_a_version_range() -> None:
    lines = [line.split("#")[0].strip() for line in (ROOT / "requirements-dev.txt").read_text().splitlines()]
    assert any(re.fullmatch(r"debugpy>=[\d.]+,<\d+", line) for line in lines), "debugpy>=X,<Y missing"


def test_funcignore_keeps_editor_and_dev_container_files_out_of_the_package() -> None:
    ignored = (ROOT / ".funcignore").read_text().splitlines()
    assert ".vscode/" in ignored and ".devcontainer/" in ignored


# ----- the dev container -----


class _ComposeLoader(yaml.SafeLoader):
    """YAML with Compose's merge tags (``!reset``, ``!override``) read as plain values."""


_ComposeLoader.add_constructor("!reset", lambda loader, node: None)
_ComposeLoader.add_constructor("!override", lambda loader, node: loader.construct_sequence(node))


def _compose(path: Path) -> dict[str, Any]:
    return yaml.load(path.read_text(), Loader=_ComposeLoader)


def test_devcontainer_runs_python_312_next_to_docker_composes_valkey_and_azurite() -> None:
    devcontainer = load_jsonc(DEVCONTAINER / "devcontainer.json")
    files = [DEVCONTAINER / f for f in devcontainer["dockerComposeFile"]]
    assert [f.resolve() for f in files] == [ROOT / "docker-compose.yml", DEVCONTAINER_COMPOSE]
    base, override = _compose(files[0])["services"], _compose(files[1])["services"]
    app = override[devcontainer["service"]]
    assert re.search(r"python:(\d-)?3\.12\b", app["image"]), app["image"]
    assert app["volumes"] == [f".:{devcontainer['workspaceFolder']}:cached"], "paths are relative to the first file"
    # Valkey and Azurite are reused from docker-compose.yml, on the app's network (localhost), unpublished.
    assert {"valkey", "azurite"} <= set(base)
    for name in ("valkey", "azurite"):
        assert override[name] == {"network_mode": f"service:{devcontainer['service']}", "ports": None}
    assert "!reset []" in DEVCONTAINER_COMPOSE.read_text()


def test_devcontainer_has_core_tools_azd_the_extensions_and_the_venv() -> None:
    devcontainer = load_jsonc(DEVCONTAINER / "devcontainer.json")
    features = set(devcontainer["features"])
    assert any("azure-functions-core-tools" in f for f in features), features
    assert any(f.startswith("ghcr.io/azure/azure-dev/azd") for f in features), features
    assert set(devcontainer["customizations"]["vscode"]["extensions"]) == RECOMMENDED_EXTENSIONS
    assert "-r requirements-dev.txt" in devcontainer["postCreateCommand"]
    for command in _commands(devcontainer["postCreateCommand"].replace("(", " ").replace(")", " ")):
        _names_in(command)
    port = json.loads((ROOT / "local.settings.sample.json").read_text())["Host"]["LocalHttpPort"]
    assert port in devcontainer["forwardPorts"]
    # The compose task skips `docker compose up` (there is no Docker inside) when this is set.
    (variable,) = devcontainer["containerEnv"]
    assert f"${variable}" in tasks()["docker compose up (Valkey, Azurite)"]["command"]
