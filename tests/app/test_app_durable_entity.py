"""The agent entity run the way the durable extension runs it: scripted model, real Valkey, real state."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from types import ModuleType
from typing import Any

from agent_framework_durabletask import DurableAgentState, RunRequest

from http_api import outcome_from_state
from tests.app.app_harness import entity_context_json, entity_functions
from tests.eventually import eventually
from tests.shown_text import chunks_text
from travel_agents import FAIL_MARKER, FLAKY_MARKER, turn_options
from valkey_buffer import StreamChunk, ValkeyStreamBuffer

ENTITY = "dafx-TravelAgent"


def _run_request(session_id: str, message: str) -> tuple[str, dict[str, Any]]:
    correlation_id = uuid.uuid4().hex
    request = RunRequest(
        message=message, correlation_id=correlation_id, options=turn_options(session_id, correlation_id)
    )
    return correlation_id, request.to_dict()


async def _run_entity(
    app_module: ModuleType, session_id: str, request: dict[str, Any], state: str | None = None
) -> dict[str, Any]:
    entity = entity_functions(app_module.app)[ENTITY]
    output = await asyncio.to_thread(entity, entity_context_json(ENTITY, session_id, state, "run", request))
    return json.loads(output)


async def test_entity_turn_streams_chunks_then_done_and_commits_the_same_text(
    app_module: ModuleType, buffer: ValkeyStreamBuffer
) -> None:
    session_id = uuid.uuid4().hex
    correlation_id, request = _run_request(session_id, "Plan a trip to Lisbon in April")

    output = await _run_entity(app_module, session_id, request)

    assert output["entityExists"] is True
    assert [result["isError"] for result in output["results"]] == [False]
    chunks = await buffer.read_available(session_id, correlation_id=correlation_id)
    assert len(chunks) > 5, "the answer should arrive in many small chunks"
    # The message names a city and a month: the weather tool's call and result come first.
    assert [chunk.kind for chunk in chunks[:-1]] == ["tool_call", "tool_result"] + ["message"] * (len(chunks) - 3)
    assert chunks[-1].is_done
    assert {chunk.correlation_id for chunk in chunks} == {correlation_id}
    assert {chunk.agent for chunk in chunks} == {"TravelAgent"}

    outcome = outcome_from_state(DurableAgentState.from_dict(json.loads(output["entityState"])), correlation_id)
    assert outcome.status == "completed"
    assert outcome.text == chunks_text(chunks)
    # The scripted model called the weather tool and quoted it.
    assert "Lisbon in April: sunny, 20 °C." in outcome.text


async def test_failed_turn_lands_an_error_entry_and_a_failed_outcome(
    app_module: ModuleType, buffer: ValkeyStreamBuffer
) -> None:
    session_id = uuid.uuid4().hex
    correlation_id, request = _run_request(session_id, f"Break this turn {FAIL_MARKER}")

    output = await _run_entity(app_module, session_id, request)

    chunks = await buffer.read_available(session_id, correlation_id=correlation_id)
    assert chunks, "the partial stream and the error entry should be in Valkey when the entity returns"
    assert chunks[-1].kind == "error"
    assert "ScriptedModelError" in (chunks[-1].error or "")
    assert not any(chunk.is_done for chunk in chunks)
    outcome = outcome_from_state(DurableAgentState.from_dict(json.loads(output["entityState"])), correlation_id)
    assert outcome.status == "failed"
    assert "ScriptedModelError" in (outcome.error or "")


async def test_a_reader_following_a_failing_turn_gets_the_error_promptly(
    app_module: ModuleType, buffer: ValkeyStreamBuffer
) -> None:
    session_id = uuid.uuid4().hex
    correlation_id, request = _run_request(session_id, f"Break this turn too {FAIL_MARKER}")

    async def follow() -> tuple[list[StreamChunk], float]:
        seen = [chunk async for chunk in buffer.read_stream(session_id, correlation_id=correlation_id)]
        return seen, time.monotonic()

    reader = asyncio.create_task(follow())
    # The reader is live before the turn starts.
    await eventually(lambda: buffer.reader_stats().active == 1, message="the reader never joined the live feed")
    await _run_entity(app_module, session_id, request)
    entity_done = time.monotonic()
    chunks, reader_done = await asyncio.wait_for(reader, 10)

    assert chunks[-1].kind == "error" and chunks[-1].entry_id, "a real error entry, not the reader's idle timeout"
    assert reader_done - entity_done < 2.0
    assert any(chunk.kind == "message" for chunk in chunks), "the chunks streamed before the failure come first"


async def test_turn_whose_stream_fails_but_retry_succeeds_ends_with_the_committed_text(
    app_module: ModuleType, buffer: ValkeyStreamBuffer
) -> None:
    session_id = uuid.uuid4().hex
    correlation_id, request = _run_request(session_id, f"Stream breaks, retry works {FLAKY_MARKER}")

    output = await _run_entity(app_module, session_id, request)

    chunks = await buffer.read_available(session_id, correlation_id=correlation_id)
    assert chunks[-1].is_done
    assert not any(chunk.kind == "error" for chunk in chunks)
    outcome = outcome_from_state(DurableAgentState.from_dict(json.loads(output["entityState"])), correlation_id)
    assert outcome.status == "completed"
    assert chunks_text(chunks) == outcome.text


async def test_second_turn_continues_the_session_and_its_reader_skips_the_first_turn(
    app_module: ModuleType, buffer: ValkeyStreamBuffer
) -> None:
    session_id = uuid.uuid4().hex
    first_id, first = _run_request(session_id, "Three days in Oslo")
    second_id, second = _run_request(session_id, "And what should I pack?")

    state = (await _run_entity(app_module, session_id, first))["entityState"]
    output = await _run_entity(app_module, session_id, second, state)

    second_chunks = await buffer.read_available(session_id, correlation_id=second_id)
    assert {chunk.correlation_id for chunk in second_chunks} == {second_id}
    assert second_chunks[-1].is_done
    assert "And what should I pack?" in chunks_text(second_chunks)
    state_after = DurableAgentState.from_dict(json.loads(output["entityState"]))
    assert outcome_from_state(state_after, first_id).status == "completed"
    assert outcome_from_state(state_after, second_id).status == "completed"
    all_chunks = await buffer.read_available(session_id)
    assert all_chunks[-1].correlation_id == first_id, "without a correlation id a reader ends at the first turn"
