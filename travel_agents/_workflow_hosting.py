"""Hosting Agent Framework workflows in a streaming Function App: no built-in workflow routes, steps that stream.

``AgentFunctionApp(workflows=[...])`` registers a workflow as a durable orchestration whose agents
are entities, and also registers the framework's own ``workflow/{name}/...`` HTTP routes, whatever
``enable_http_endpoints`` says (in 1.0.0b260922 that flag covers agents only). Those routes take
``func.HttpRequest``, which cannot share an app with the streaming (FastAPI-typed) routes, so
:class:`StreamingAgentFunctionApp` leaves them out; ``http_api`` serves the same paths and shapes.

It also runs the workflow's orchestrator with two changes: an agent call whose agent failed fails (the
entity answers it with an error content, on which the workflow would go on), and every agent call
carries the turn options
(``turn_options``: the orchestration instance id as the stream, the call's correlation id, the
workflow's name) that the app's middleware reads, so a workflow step is traced, reported when it
fails and stopped when its cancel is requested, like a chat turn. The private names this relies on
are checked at import in ``_af_compat``.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import azure.durable_functions as df
from agent_framework import Workflow
from agent_framework_azurefunctions import AgentFunctionApp
from agent_framework_azurefunctions._orchestration import AgentTask, AzureFunctionsAgentExecutor
from agent_framework_azurefunctions._workflow_af_context import AzureFunctionsWorkflowContext
from agent_framework_durabletask import (
    AgentSessionId,
    DurableAgentSession,
    DurableAIAgent,
    RunRequest,
    load_agent_response,
)
from agent_framework_durabletask._workflows.naming import workflow_orchestrator_name
from agent_framework_durabletask._workflows.orchestrator import run_workflow_orchestrator
from azure.durable_functions.models import TaskBase
from azure.durable_functions.models.Task import TaskState

from ._stream_turn import turn_options


class _StreamingStepExecutor(AzureFunctionsAgentExecutor):
    """Dispatches a workflow's agent call with the turn options that name its stream and turn."""

    def __init__(self, context: Any, workflow_name: str) -> None:
        super().__init__(context)
        self._workflow_name = workflow_name

    def get_run_request(self, message: str, *, options: dict[str, Any] | None = None) -> RunRequest:
        request = super().get_run_request(message, options=options)
        # The correlation id is the orchestration's new_uuid(): the same on every replay.
        request.options.update(
            turn_options(self.context.instance_id, request.correlation_id, workflow=self._workflow_name)
        )
        return request

    def run_durable_agent(self, agent_name: str, run_request: RunRequest, session: Any = None) -> AgentTask:
        return _StepTask(super().run_durable_agent(agent_name, run_request, session), agent_name)


class _StepTask(AgentTask):
    """An agent call that fails when the agent failed.

    The entity answers a failed run with an error content instead of an error: without this, the
    workflow would go on with an empty answer. Raised in the orchestrator, the failure fails the
    workflow with the agent's error, unless the workflow catches it.
    """

    def __init__(self, agent_task: AgentTask, agent_name: str) -> None:
        self._agent_name = agent_name
        super().__init__(agent_task.children[0], agent_task._response_format, agent_task._correlation_id)

    def try_set_value(self, child: TaskBase) -> None:
        if child.state is TaskState.SUCCEEDED and not self.pending_tasks:
            errors = _errors_of(child.result)
            if errors:
                self.set_value(is_error=True, value=RuntimeError(f"{self._agent_name} failed: {errors}"))
                return
        super().try_set_value(child)


def _errors_of(raw_result: Any) -> str:
    try:
        response = load_agent_response(raw_result)
    except Exception:
        return ""  # AgentTask reports a result it cannot read
    errors = [
        f"{content.error_code}: {content.message}" if content.error_code else str(content.message or "error")
        for message in response.messages
        for content in message.contents
        if content.type == "error"
    ]
    return "; ".join(errors)


class _StreamingWorkflowContext(AzureFunctionsWorkflowContext):
    def __init__(self, context: df.DurableOrchestrationContext, workflow_name: str) -> None:
        super().__init__(context)
        self._workflow_name = workflow_name

    def prepare_agent_task(self, executor_id: str, message: str, orchestration_instance_id: str) -> Any:
        session = DurableAgentSession(
            durable_session_id=AgentSessionId(name=executor_id, key=orchestration_instance_id)
        )
        agent = DurableAIAgent(_StreamingStepExecutor(self._context, self._workflow_name), executor_id)
        return agent.run(message, session=session)


class StreamingAgentFunctionApp(AgentFunctionApp):
    """``AgentFunctionApp`` for an app whose HTTP routes stream: hosts workflows without the built-in routes.

    Takes the same arguments as ``AgentFunctionApp``. Each workflow is still the orchestration
    ``dafx-{name}`` with its agents as entities ``dafx-{name}-{executor id}`` and its other executors
    as activities; its agent calls stream to the app's callback with the instance id as session.
    """

    def _register_workflow_routes(self, workflow: Workflow) -> None:
        # The built-in routes take func.HttpRequest: not in a streaming app (http_api serves them).
        return

    def _setup_workflow_orchestration(self, workflow: Workflow) -> None:
        hosted = workflow

        @self.function_name(workflow_orchestrator_name(workflow.name))
        @self.orchestration_trigger(context_name="context")
        def workflow_orchestrator(context: df.DurableOrchestrationContext) -> Generator[Any, Any, Any]:
            """Run the workflow; its agent calls carry the turn options of the app's middleware."""
            streaming_context = _StreamingWorkflowContext(context, hosted.name)
            outputs = yield from run_workflow_orchestrator(streaming_context, hosted, context.get_input(), {})
            return outputs

        _ = workflow_orchestrator
