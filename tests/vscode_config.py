"""The VS Code files of this repository (``.vscode/``, ``.devcontainer/``) as the tests read them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.jsonc import load_jsonc

ROOT = Path(__file__).resolve().parent.parent
VSCODE = ROOT / ".vscode"
DEVCONTAINER = ROOT / ".devcontainer"

LOCAL_HOST_CONFIGURATION = "Local host (no Azure tooling)"
ATTACH_CONFIGURATION = "Attach to Python Functions"

# Where every task and launch configuration expects the virtual environment's interpreter.
VENV_PYTHON = ".venv/bin/python"


def launch_configurations() -> dict[str, dict[str, Any]]:
    """``.vscode/launch.json``'s configurations by name."""
    return {c["name"]: c for c in load_jsonc(VSCODE / "launch.json")["configurations"]}


def tasks() -> dict[str, dict[str, Any]]:
    """``.vscode/tasks.json``'s tasks by label (a ``func`` task without a label is named as VS Code names it)."""
    found: dict[str, dict[str, Any]] = {}
    for task in load_jsonc(VSCODE / "tasks.json")["tasks"]:
        label = task.get("label") or f"{task['type']}: {task['command']}"
        found[label] = task
    return found


def substitute(value: Any, workspace: Path = ROOT) -> Any:
    """``value`` with ``${workspaceFolder}`` replaced, as VS Code resolves it before starting a configuration."""
    if isinstance(value, str):
        return value.replace("${workspaceFolder}", str(workspace))
    if isinstance(value, list):
        return [substitute(v, workspace) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, workspace) for k, v in value.items()}
    return value


def with_port(args: list[str], port: int) -> list[str]:
    """A configuration's devhost arguments with its ``--port`` value replaced (appended when it has none)."""
    args = list(args)
    if "--port" in args:
        args[args.index("--port") + 1] = str(port)
        return args
    return [*args, "--port", str(port)]
