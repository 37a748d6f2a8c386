"""The Function App: durable AI agents whose streamed answers land in Valkey, and the HTTP routes over them.

Read top to bottom: settings, buffer, agents, app, routes. Importing this module connects to nothing
(the Python worker imports it to index the functions). The handlers live in ``http_api``; the agents
and the model they use in ``travel_agents``.
"""

# No ``from __future__ import annotations`` here, unlike the rest of the code: the Python worker
# reads the handlers' annotations to recognise the HTTP streaming types, so they stay real classes.

from pathlib import Path

import azure.durable_functions as df
import azure.functions as func
from azurefunctions.extensions.http.fastapi import Request, Response

from http_api import AgentHttpApi, Routes, RunInputSettings, StreamSettings, route_prefix_from_host_json
from travel_agents import (
    ModelSettings,
    StreamingAgentFunctionApp,
    build_agents,
    build_workflows,
    create_chat_client,
    is_cancelled_response,
)
from valkey_buffer import ValkeyStreamBuffer, tune_collector

APP_DIR = Path(__file__).parent

# Settings: app settings in Azure, local.settings.json with `func start` (see local.settings.sample.json).
model_settings = ModelSettings.from_env()
stream_settings = StreamSettings.from_env()
run_input_settings = RunInputSettings.from_env()

# The buffer: the response callback that appends every streamed chunk to Valkey, and the stream reader.
# It connects on first use, on the event loop that uses it; a response the agents marked as cancelled
# ends its stream as cancelled.
buffer = ValkeyStreamBuffer.from_env(is_cancelled_response=is_cancelled_response)

# The model every agent talks to: Azure OpenAI when configured, else the offline scripted model.
chat_client = create_chat_client(model_settings)

# The agents. A turn that fails for good is reported to its stream readers through the buffer, and a
# turn whose cancel is requested (through the buffer, from any instance) stops (see travel_agents/_turn_*.py).
agents = build_agents(chat_client, buffer=buffer)

# The workflows (travel_agents/_trip_planner.py): each runs as the durable orchestration `dafx-{name}`;
# its agents are entities keyed by the instance id, so all its steps stream into the instance's stream.
workflows = build_workflows(chat_client, buffer=buffer)

# The app: one durable entity `dafx-{name}` per agent, with the buffer as every agent's callback. The
# built-in HTTP routes use func.HttpRequest, which cannot share an app with streaming routes: they are
# off (the workflows' too: StreamingAgentFunctionApp), and the routes below keep their shapes.
app = StreamingAgentFunctionApp(
    agents=agents,
    workflows=workflows,
    default_callback=buffer,
    enable_http_endpoints=False,
    enable_health_check=False,
    http_auth_level=func.AuthLevel.FUNCTION,
)

# The HTTP API the routes below call; its span names and stream URLs carry host.json's route prefix.
api = AgentHttpApi(
    buffer=buffer,
    agent_names=[agent.name for agent in agents],
    stream_settings=stream_settings,
    poll_interval_seconds=app.poll_interval_seconds,
    max_poll_retries=app.max_poll_retries,
    chat_page=APP_DIR / "static" / "chat.html",
    workflow_page=APP_DIR / "static" / "workflow.html",
    run_input_settings=run_input_settings,
    route_prefix=route_prefix_from_host_json(APP_DIR),
    workflow_names=list(app.workflows),
)


@app.function_name("agent_run")
@app.route(route=Routes.RUN, methods=["POST"])
@app.durable_client_input(client_name="client")
async def agent_run(req: Request, client: df.DurableOrchestrationClient) -> Response:
    """Start a turn: 202 with its session and correlation ids, or the committed answer when asked to wait."""
    return await api.run_turn(req, client)


@app.function_name("agent_ag_ui")
@app.route(route=Routes.AGUI, methods=["POST"])
@app.durable_client_input(client_name="client")
async def agent_ag_ui(req: Request, client: df.DurableOrchestrationClient) -> Response:
    """Run a turn as an AG-UI 1.0 run (RunAgentInput in, AG-UI events out); re-attach by runId."""
    return await api.agui_run(req, client)


@app.function_name("agent_stream")
@app.route(route=Routes.STREAM, methods=["POST"])
@app.durable_client_input(client_name="client")
async def agent_stream(req: Request, client: df.DurableOrchestrationClient) -> Response:
    """Start a turn and stream it live (SSE, or plain text for Accept: text/plain)."""
    return await api.stream_turn(req, client)


@app.function_name("agent_stream_resume")
@app.route(route=Routes.RESUME, methods=["GET"])
@app.durable_client_input(client_name="client")
async def agent_stream_resume(req: Request, client: df.DurableOrchestrationClient) -> Response:
    """Resume a session's stream from `cursor` or Last-Event-ID, optionally one turn (`correlation_id`).

    The durable client reads a turn's committed outcome when its stream lacks the end.
    """
    return await api.resume_stream(req, client)


@app.function_name("agent_stream_with_token")
@app.route(route=Routes.STREAM_WITH_TOKEN, methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@app.durable_client_input(client_name="client")
async def agent_stream_with_token(req: Request, client: df.DurableOrchestrationClient) -> Response:
    """The resume route for browsers: anonymous, but only with a stream token (a run's `stream_url`)."""
    return await api.stream_with_token(req, client)


@app.function_name("agent_session")
@app.route(route=Routes.SESSION, methods=["GET"])
@app.durable_client_input(client_name="client")
async def agent_session(req: Request, client: df.DurableOrchestrationClient) -> Response:
    """A session's turns (message, answer, status) and the running turn with a `stream_url`."""
    return await api.session_history(req, client)


@app.function_name("agent_turn_status")
@app.route(route=Routes.TURN, methods=["GET"])
@app.durable_client_input(client_name="client")
async def agent_turn_status(req: Request, client: df.DurableOrchestrationClient) -> Response:
    """The committed outcome of a turn: pending (from acceptance on), completed, cancelled or failed."""
    return await api.turn_status(req, client)


@app.function_name("agent_turn_cancel")
@app.route(route=Routes.TURN_CANCEL, methods=["POST"])
@app.durable_client_input(client_name="client")
async def agent_turn_cancel(req: Request, client: df.DurableOrchestrationClient) -> Response:
    """Stop a turn, on whichever instance runs it: 202 cancelling, or its outcome when it has ended."""
    return await api.cancel_turn(req, client)


@app.function_name("workflow_run")
@app.route(route=Routes.WORKFLOW_RUN, methods=["POST"])
@app.durable_client_input(client_name="client")
async def workflow_run(req: Request, client: df.DurableOrchestrationClient) -> Response:
    """Start a workflow instance: 202 with its instanceId, statusQueryGetUri and stream_url."""
    return await api.workflows.run(req, client)


@app.function_name("workflow_status")
@app.route(route=Routes.WORKFLOW_STATUS, methods=["GET"])
@app.durable_client_input(client_name="client")
async def workflow_status(req: Request, client: df.DurableOrchestrationClient) -> Response:
    """A workflow instance's status, pending human-input requests and steps."""
    return await api.workflows.status(req, client)


@app.function_name("workflow_respond")
@app.route(route=Routes.WORKFLOW_RESPOND, methods=["POST"])
@app.durable_client_input(client_name="client")
async def workflow_respond(req: Request, client: df.DurableOrchestrationClient) -> Response:
    """Answer a workflow instance's pending human-input request (once)."""
    return await api.workflows.respond(req, client)


@app.function_name("workflow_cancel")
@app.route(route=Routes.WORKFLOW_CANCEL, methods=["POST"])
@app.durable_client_input(client_name="client")
async def workflow_cancel(req: Request, client: df.DurableOrchestrationClient) -> Response:
    """Cancel a workflow instance and stop its running agent step."""
    return await api.workflows.cancel(req, client)


@app.function_name("workflow_stream")
@app.route(route=Routes.WORKFLOW_STREAM, methods=["GET"])
@app.durable_client_input(client_name="client")
async def workflow_stream(req: Request, client: df.DurableOrchestrationClient) -> Response:
    """A workflow instance's stream (SSE) until the workflow ends, resumable with Last-Event-ID."""
    return await api.workflows.stream(req, client)


@app.function_name("workflow_ag_ui")
@app.route(route=Routes.WORKFLOW_AGUI, methods=["POST"])
@app.durable_client_input(client_name="client")
async def workflow_ag_ui(req: Request, client: df.DurableOrchestrationClient) -> Response:
    """Drive a workflow instance with AG-UI 1.0 runs: agent calls as subagent lanes, human input as interrupts."""
    return await api.workflow_agui.run(req, client)


@app.function_name("health")
@app.route(route=Routes.HEALTH, methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def health(req: Request) -> Response:
    """Liveness, Valkey reachability (503 when unreachable) and the registered agents."""
    return await api.health(req)


@app.function_name("chat_page")
@app.route(route=Routes.CHAT, methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def chat_page(req: Request) -> Response:
    """The browser chat page (static/chat.html); it passes a `code` query value on to the API."""
    return await api.chat_page(req)


@app.function_name("workflow_page")
@app.route(route=Routes.WORKFLOW_PAGE, methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def workflow_page(req: Request) -> Response:
    """The browser workflow page (static/workflow.html): lanes per agent, approval, cancel, the outcome."""
    return await api.workflow_page(req)


# Last: the heap built so far lives as long as the process, and every streamed chunk allocates; the
# collector leaves the first alone and runs less often (see docs/deploy.md#the-garbage-collector).
tune_collector()
