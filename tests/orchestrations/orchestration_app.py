"""A small v2 function app with Durable Functions orchestrations, for the bridge and end-to-end tests.

Written as a user would write it for Azure (``azure.durable_functions`` and Agent Framework's
``AgentFunctionApp``): ``python -m devhost --app tests.orchestrations.orchestration_app:app`` hosts it.
Every orchestrator here exercises one thing the local host must run as the Functions host does.
"""

# No ``from __future__ import annotations``: the Python worker reads the handlers' annotations.

import json
import threading
from datetime import timedelta

import azure.durable_functions as df
import azure.functions as func
from agent_framework_azurefunctions import AgentFunctionApp
from azurefunctions.extensions.http.fastapi import JSONResponse, Request, Response

from http_api import AgentHttpApi, Routes, RunInputSettings, StreamSettings
from travel_agents import TRAVEL_AGENT_NAME, ModelSettings, build_agents, create_chat_client
from valkey_buffer import ValkeyStreamBuffer

buffer = ValkeyStreamBuffer.from_env()
agents = build_agents(create_chat_client(ModelSettings.from_env()), buffer=buffer)
app = AgentFunctionApp(
    agents=agents,
    default_callback=buffer,
    enable_http_endpoints=False,
    enable_health_check=False,
    http_auth_level=func.AuthLevel.ANONYMOUS,
)
# The template's own run route, for a direct turn to compare an orchestration's agent call with.
api = AgentHttpApi(
    buffer=buffer,
    agent_names=[agent.name for agent in agents],
    stream_settings=StreamSettings.from_env(),
    # Polled often, so that a waited turn's time is the turn's, not the poll's (bench_orchestrations).
    poll_interval_seconds=0.02,
    max_poll_retries=1500,
    run_input_settings=RunInputSettings.from_env(),
)

# Attempts of the flaky activity per key: activities run in the host's process, so a dict is enough.
_attempts: dict[str, int] = {}
_attempts_lock = threading.Lock()


@app.route(route="health", methods=["GET"])
async def health(req: Request) -> Response:
    return JSONResponse({"status": "ok"})


@app.route(route=Routes.RUN, methods=["POST"])
@app.durable_client_input(client_name="client")
async def agent_run(req: Request, client: df.DurableOrchestrationClient) -> Response:
    return await api.run_turn(req, client)


@app.route(route="orchestrators/{name}", methods=["POST"])
@app.durable_client_input(client_name="client")
async def start(req: Request, client: df.DurableOrchestrationClient) -> Response:
    """Start an orchestration with the JSON body as input; 202 with the management URLs."""
    body = await req.body()
    instance_id = await client.start_new(req.path_params["name"], None, json.loads(body) if body else None)
    return client.create_check_status_response(req, instance_id)


@app.route(route="orchestrators/{name}/wait", methods=["POST"])
@app.durable_client_input(client_name="client")
async def start_and_wait(req: Request, client: df.DurableOrchestrationClient) -> Response:
    """Start an orchestration and answer with its output if it ends within 20 s."""
    body = await req.body()
    instance_id = await client.start_new(req.path_params["name"], None, json.loads(body) if body else None)
    return await client.wait_for_completion_or_create_check_status_response(req, instance_id, 20000, 100)


@app.route(route="instances/{instance_id}", methods=["GET"])
@app.durable_client_input(client_name="client")
async def status(req: Request, client: df.DurableOrchestrationClient) -> Response:
    """The instance's status through the client binding's get_status."""
    found = await client.get_status(req.path_params["instance_id"])
    if not found:
        return JSONResponse({"error": "not found"}, status_code=404)
    return JSONResponse(found.to_json())


@app.activity_trigger(input_name="name")
def greet(name: str) -> str:
    return f"Hello {name}!"


@app.activity_trigger(input_name="value")
def double(value: int) -> int:
    return value * 2


@app.activity_trigger(input_name="message")
def fail(message: str) -> str:
    raise ValueError(message)


@app.activity_trigger(input_name="key")
def flaky(key: str) -> int:
    """Fails on its first two attempts for a key, then answers the number of attempts."""
    with _attempts_lock:
        _attempts[key] = _attempts.get(key, 0) + 1
        attempt = _attempts[key]
    if attempt < 3:
        raise RuntimeError(f"attempt {attempt} fails")
    return attempt


@app.orchestration_trigger(context_name="context")
def fan_out(context: df.DurableOrchestrationContext):
    """Activities and an agent call at once (task_all), with the agent reached through get_agent."""
    names = context.get_input()
    agent = app.get_agent(context, TRAVEL_AGENT_NAME)
    tasks = [context.call_activity("greet", name) for name in names]
    tasks.append(agent.run("Suggest a weekend in Lisbon", session=agent.create_session()))
    results = yield context.task_all(tasks)
    context.set_custom_status({"stage": "done", "tasks": len(results)})
    return {"greetings": results[:-1], "agent": results[-1].text}


@app.orchestration_trigger(context_name="context")
def approval(context: df.DurableOrchestrationContext):
    """A durable timer, then an external event; custom status says which it waits for."""
    first_uuid = context.new_uuid()
    started = context.current_utc_datetime.isoformat()
    context.set_custom_status({"waiting": "timer", "uuid": first_uuid, "started": started})
    yield context.create_timer(context.current_utc_datetime + timedelta(seconds=1))
    context.set_custom_status({"waiting": "approval", "uuid": first_uuid, "started": started})
    decision = yield context.wait_for_external_event("approval")
    return {"decision": decision, "uuid": first_uuid, "started": started}


@app.orchestration_trigger(context_name="context")
def race(context: df.DurableOrchestrationContext):
    """task_any between an external event and a long timer."""
    event = context.wait_for_external_event("go")
    timer = context.create_timer(context.current_utc_datetime + timedelta(minutes=10))
    winner = yield context.task_any([event, timer])
    return "event" if winner == event else "timer"


@app.orchestration_trigger(context_name="context")
def catches_failure(context: df.DurableOrchestrationContext):
    try:
        yield context.call_activity("fail", "expected failure")
    except Exception as error:
        return f"caught: {error}"
    return "not raised"


@app.orchestration_trigger(context_name="context")
def fails(context: df.DurableOrchestrationContext):
    yield context.call_activity("fail", "uncaught failure")
    return "not raised"


@app.orchestration_trigger(context_name="context")
def retries(context: df.DurableOrchestrationContext):
    options = df.RetryOptions(first_retry_interval_in_milliseconds=100, max_number_of_attempts=3)
    return (yield context.call_activity_with_retry("flaky", options, context.get_input()))


@app.orchestration_trigger(context_name="context")
def counter(context: df.DurableOrchestrationContext):
    """Continues as new until its input reaches 3."""
    value = context.get_input() or 0
    yield context.call_activity("double", value)
    if value < 3:
        context.continue_as_new(value + 1)
        return None
    return value


@app.orchestration_trigger(context_name="context")
def parent(context: df.DurableOrchestrationContext):
    child = yield context.call_sub_orchestrator("child", context.get_input())
    return {"child": child}


@app.orchestration_trigger(context_name="context")
def child(context: df.DurableOrchestrationContext):
    return (yield context.call_activity("double", context.get_input()))


@app.orchestration_trigger(context_name="context")
def waits_forever(context: df.DurableOrchestrationContext):
    context.set_custom_status("waiting for an event nobody raises")
    return (yield context.wait_for_external_event("never"))


@app.orchestration_trigger(context_name="context")
def sequence(context: df.DurableOrchestrationContext):
    """``count`` activity calls one after the other (the benchmark's replay cost)."""
    total = 0
    for _ in range(context.get_input()):
        total = yield context.call_activity("double", total + 1)
    return total


@app.orchestration_trigger(context_name="context")
def one_agent_call(context: df.DurableOrchestrationContext):
    agent = app.get_agent(context, TRAVEL_AGENT_NAME)
    response = yield agent.run(context.get_input(), session=agent.create_session())
    return response.text


@app.orchestration_trigger(context_name="context")
def uses_http(context: df.DurableOrchestrationContext):
    return (yield context.call_http("GET", "http://127.0.0.1:1/"))


@app.orchestration_trigger(context_name="context")
def signals_agent(context: df.DurableOrchestrationContext):
    """A fire-and-forget agent run: a signal to the agent's entity, answered at once with an acceptance."""
    agent = app.get_agent(context, TRAVEL_AGENT_NAME)
    session = agent.create_session()
    accepted = yield agent.run(context.get_input(), session=session, options={"wait_for_response": False})
    return {"accepted": bool(accepted), "session": str(session.session_id)}
