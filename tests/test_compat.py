"""Reliance on other libraries' private names fails fast, with a message naming it and the versions written for."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from agent_framework import Content
from agent_framework_durabletask import AgentEntity, DurableAgentStateContent, DurableAgentStateTextReasoningContent

from devhost import _compat as devhost_compat
from travel_agents import _af_compat

ROOT = Path(__file__).resolve().parent.parent


def test_the_installed_packages_offer_everything_relied_on() -> None:
    _af_compat.check_agent_framework()
    devhost_compat.check_devhost_dependencies()


def test_a_missing_agent_framework_name_is_named_with_the_versions_written_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delattr(AgentEntity, "_invoke_agent")

    with pytest.raises(_af_compat.IncompatibleAgentFrameworkError) as failure:
        _af_compat.check_agent_framework()

    message = str(failure.value)
    assert "AgentEntity._invoke_agent" in message
    assert "agent-framework-durabletask 1.0.0b260922" in message
    assert "travel_agents/_af_compat.py" in message


def test_a_changed_durable_state_shape_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # A release that kept reasoning without its text would report cancelled turns as completed.
    monkeypatch.setattr(
        DurableAgentStateContent,
        "from_ai_content",
        staticmethod(lambda content: DurableAgentStateTextReasoningContent(text=None)),
    )

    with pytest.raises(_af_compat.IncompatibleAgentFrameworkError, match="reasoning content read back"):
        _af_compat.check_agent_framework()


def test_a_missing_durabletask_internal_is_named_with_the_versions_written_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delattr(devhost_compat.sidecar_stubs, "add_TaskHubSidecarServiceServicer_to_server")

    with pytest.raises(devhost_compat.IncompatibleDependencyError) as failure:
        devhost_compat.check_devhost_dependencies()

    message = str(failure.value)
    assert "add_TaskHubSidecarServiceServicer_to_server" in message
    assert "durabletask 1.12.0" in message
    assert "devhost/_compat.py" in message


def test_the_app_stops_at_import_when_a_reliance_is_gone() -> None:
    script = "import agent_framework_durabletask as d; del d.AgentEntity._invoke_agent; import travel_agents"
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)

    assert result.returncode != 0
    assert "IncompatibleAgentFrameworkError" in result.stderr
    assert "AgentEntity._invoke_agent" in result.stderr


def test_reasoning_text_reads_both_shapes_of_the_durable_state() -> None:
    reasoning = Content.from_text_reasoning(text="why")

    assert _af_compat.reasoning_text(reasoning) == "why"
    assert _af_compat.reasoning_text(DurableAgentStateContent.from_ai_content(reasoning)) == "why"
    assert _af_compat.reasoning_text(DurableAgentStateTextReasoningContent(text="why")) == "why"
    assert _af_compat.reasoning_text(Content.from_text("why")) is None
