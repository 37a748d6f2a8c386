"""What the app relies on in Agent Framework beyond its documented API: named here, checked at import.

Agent Framework's durable packages are pre-releases, and the app depends on a few of their private
names and undocumented behaviours. Each is listed in :data:`RELIANCES` with a probe, and
:func:`check_agent_framework` runs the probes when ``travel_agents`` is imported: a release that
changes one stops the app at start-up with a message that names it and the versions this code was
written for, instead of showing up as turns whose stream never ends or cancelled turns reported as
completed.

Part of what the durable entity does is seen only while it runs a turn, so the probes check the names
that behaviour goes through, and the tests named below pin the behaviour itself:

- The entity passes ``RunRequest.options`` on as ``agent.run(options=...)``, to its streaming run and
  to the non-streaming run it retries with when streaming fails (``AgentEntity._invoke_agent`` gets
  the same ``run_kwargs`` for both). The middleware learns a turn's stream and trace from a private
  key there (``_stream_turn``). Pinned by ``tests/app/test_app_durable_entity.py``.
- The entity calls the response callback only for a turn that succeeds, and records a failure as an
  error content in the state (its ``is_error`` flag is not persisted): the failure reporter writes
  the stream's ``error`` entry itself, and a turn's outcome is read from the error content. Pinned by
  ``tests/app/test_app_durable_entity.py`` (the failing and flaky turns).
- ``AgentFunctionApp`` registers a hosted workflow's ``func.HttpRequest`` routes through
  ``_register_workflow_routes`` whatever ``enable_http_endpoints`` says, and its orchestrator through
  ``_setup_workflow_orchestration``; ``StreamingAgentFunctionApp`` overrides both (no such routes;
  agent calls that carry the turn options). Pinned by ``tests/app/test_app_function_index.py`` and
  ``tests/app/test_app_worker_indexing.py`` (no workflow function takes ``func.HttpRequest``).
- The durable state keeps a reasoning content (the cancelled-turn marker) as a content of type
  ``unknown`` holding the content's dict; :func:`reasoning_text` reads it in either shape. Pinned by
  ``tests/app/test_app_cancel.py``.
"""

from __future__ import annotations

import importlib.metadata
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from agent_framework import AgentContext, BaseChatClient, Content
from agent_framework_durabletask import (
    AgentEntity,
    DurableAgentState,
    DurableAgentStateContent,
    DurableAgentStateErrorContent,
    DurableAgentStateMessage,
    DurableAgentStateResponse,
    RunRequest,
)

WRITTEN_FOR: dict[str, str] = {
    "agent-framework-core": "1.23.0",
    "agent-framework-durabletask": "1.0.0b260922",
    "agent-framework-azurefunctions": "1.0.0b260922",
}
"""The releases whose private names and behaviours this module describes."""


class IncompatibleAgentFrameworkError(RuntimeError):
    """The installed Agent Framework lacks a private name or behaviour the app relies on."""


def reasoning_text(content: Any) -> str | None:
    """The text of a reasoning content, be it Agent Framework's own or one read back from durable state.

    The durable state maps Agent Framework contents by type, and it knows reasoning under a type name
    Agent Framework does not use (``reasoning``, not ``text_reasoning``): a reasoning content is
    therefore kept as a content of type ``unknown`` that holds the content's dict. A release that
    maps it to its own reasoning content keeps the text readable here too.

    Returns:
        The reasoning text, or None when ``content`` is not a reasoning content.
    """
    kind = str(getattr(content, "type", ""))
    if kind in ("text_reasoning", "reasoning"):
        text = getattr(content, "text", None)
        return text if isinstance(text, str) else None
    held = getattr(content, "content", None)
    if kind == "unknown" and isinstance(held, dict) and held.get("type") == "text_reasoning":
        text = held.get("text")
        return text if isinstance(text, str) else None
    return None


@dataclass(frozen=True)
class Reliance:
    """One private name or behaviour the app relies on, and how to see that it is still there.

    Attributes:
        what: The name or behaviour, as the failure message says it.
        holds: True when the installed packages still have it (an exception counts as False).
    """

    what: str
    holds: Callable[[], bool]


def _parameters(function: Callable[..., Any]) -> set[str]:
    return set(inspect.signature(function).parameters)


def _options_cross_the_durable_hop() -> bool:
    # The route sends the RunRequest as JSON through a durable signal; the entity parses it back.
    options = {"_probe": {"session_id": "s", "correlation_id": "c"}}
    sent = RunRequest(message="probe", correlation_id="c", options=options)
    return RunRequest.from_dict(sent.to_dict()).options == options


def _entity_runs_share_run_kwargs() -> bool:
    return {"run_kwargs"} <= _parameters(AgentEntity._invoke_agent) and callable(AgentEntity.run)


def _middleware_context_has_options() -> bool:
    return {"options", "metadata", "stream", "result"} <= _parameters(AgentContext.__init__)


def _chat_client_hook_is_the_one_scripted() -> bool:
    # The offline scripted model implements the abstract hook every chat client implements.
    hook = BaseChatClient._inner_get_response
    return {"messages", "stream", "options"} <= _parameters(hook) and getattr(hook, "__isabstractmethod__", False)


def _from_state(content: Content) -> Any:
    # Through the state's own JSON, as the HTTP routes read it back from the entity.
    response = DurableAgentStateResponse(
        correlation_id="c",
        created_at=datetime.now(UTC),
        messages=[DurableAgentStateMessage(role="assistant", contents=[])],
    )
    response.messages[0].contents.append(DurableAgentStateContent.from_ai_content(content))
    state = DurableAgentState()
    state.data.conversation_history.append(response)
    entry = DurableAgentState.from_dict(state.to_dict()).data.conversation_history[0]
    return entry.messages[0].contents[0]


def _reasoning_survives_the_state() -> bool:
    return reasoning_text(_from_state(Content.from_text_reasoning(text="probe"))) == "probe"


def _errors_survive_the_state() -> bool:
    stored = _from_state(Content.from_error(message="probe", error_code="Probe"))
    return isinstance(stored, DurableAgentStateErrorContent) and [stored.message, stored.error_code] == [
        "probe",
        "Probe",
    ]


def _calls(function: Callable[..., Any], *names: str) -> bool:
    source = inspect.getsource(function)
    return all(f"self.{name}(" in source for name in names)


def _workflow_registration_goes_through_overridable_hooks() -> bool:
    from agent_framework_azurefunctions import AgentFunctionApp

    return _calls(
        AgentFunctionApp._register_workflow, "_register_workflow_routes", "_register_workflow_primitives"
    ) and (_calls(AgentFunctionApp._register_workflow_primitives, "_setup_workflow_orchestration"))


def _workflow_agent_calls_go_through_the_context() -> bool:
    from agent_framework_azurefunctions._orchestration import AgentTask, AzureFunctionsAgentExecutor
    from agent_framework_azurefunctions._workflow_af_context import AzureFunctionsWorkflowContext
    from agent_framework_durabletask._workflows.orchestrator import run_workflow_orchestrator

    return (
        {"executor_id", "message", "orchestration_instance_id"}
        <= _parameters(AzureFunctionsWorkflowContext.prepare_agent_task)
        and {"message", "options"} <= _parameters(AzureFunctionsAgentExecutor.get_run_request)
        and {"agent_name", "run_request", "session"} <= _parameters(AzureFunctionsAgentExecutor.run_durable_agent)
        and _parameters_in_order(AgentTask.__init__) == ["self", "entity_task", "response_format", "correlation_id"]
        and {"_response_format", "_correlation_id"} <= set(AgentTask.__init__.__code__.co_names)
        and list(_parameters_in_order(run_workflow_orchestrator))
        == ["ctx", "workflow", "initial_message", "shared_state"]
    )


def _parameters_in_order(function: Callable[..., Any]) -> list[str]:
    return list(inspect.signature(function).parameters)


RELIANCES: tuple[Reliance, ...] = (
    Reliance(
        "RunRequest(options=...) keeping its options through to_dict() and from_dict()", _options_cross_the_durable_hop
    ),
    Reliance(
        "AgentEntity._invoke_agent(run_kwargs, ...): the entity's streaming run and its retry get the same options",
        _entity_runs_share_run_kwargs,
    ),
    Reliance(
        "AgentContext's options, metadata, stream and result (the middleware's view of a run)",
        _middleware_context_has_options,
    ),
    Reliance(
        "BaseChatClient._inner_get_response(*, messages, stream, options): the scripted model's hook",
        _chat_client_hook_is_the_one_scripted,
    ),
    Reliance("a reasoning content read back from the durable state with its text", _reasoning_survives_the_state),
    Reliance(
        "an error content read back from the durable state as DurableAgentStateErrorContent", _errors_survive_the_state
    ),
    Reliance(
        "AgentFunctionApp._register_workflow calling _register_workflow_routes and (through "
        "_register_workflow_primitives) _setup_workflow_orchestration",
        _workflow_registration_goes_through_overridable_hooks,
    ),
    Reliance(
        "AzureFunctionsWorkflowContext.prepare_agent_task, AzureFunctionsAgentExecutor.get_run_request and "
        "run_durable_agent, AgentTask(entity_task, response_format, correlation_id) and its _response_format "
        "and _correlation_id, and run_workflow_orchestrator(ctx, workflow, initial_message, shared_state)",
        _workflow_agent_calls_go_through_the_context,
    ),
)


def _versions(packages: dict[str, str]) -> str:
    return ", ".join(f"{name} {version}" for name, version in packages.items())


def _installed() -> dict[str, str]:
    installed: dict[str, str] = {}
    for name in WRITTEN_FOR:
        try:
            installed[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed[name] = "(not installed)"
    return installed


def check_agent_framework(reliances: tuple[Reliance, ...] = RELIANCES) -> None:
    """Check every reliance; raise on the first that no longer holds.

    Raises:
        IncompatibleAgentFrameworkError: Naming the reliance, the installed versions and the versions
            this code was written for.
    """
    for reliance in reliances:
        try:
            holds = reliance.holds()
        except Exception as error:
            holds, cause = False, f" ({type(error).__name__}: {error})"
        else:
            cause = ""
        if not holds:
            raise IncompatibleAgentFrameworkError(
                f"travel_agents relies on {reliance.what}, which the installed Agent Framework does not "
                f"offer{cause}. Installed: {_versions(_installed())}. Written for: {_versions(WRITTEN_FOR)}. "
                "Install those (requirements.txt pins them) or update travel_agents/_af_compat.py."
            )


check_agent_framework()
