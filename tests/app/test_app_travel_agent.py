"""The example agent, its tools, the scripted model, model selection and the turn failure reporter."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from agent_framework import ChatResponse, ChatResponseUpdate, Message, ResponseStream

from travel_agents import (
    FAIL_MARKER,
    FLAKY_MARKER,
    TURN_OPTION_KEY,
    ModelSettings,
    ScriptedChatClient,
    ScriptedModelError,
    TurnFailureReporter,
    create_chat_client,
    create_travel_agent,
    estimate_trip_budget,
    get_destination_weather,
    scripted_answer,
    split_into_chunks,
    turn_options,
)


class RecordingSink:
    def __init__(self, fail: bool = False) -> None:
        self.errors: list[tuple[str, str, str, str | None]] = []
        self.fail = fail

    async def write_error(
        self, session_id: str, message: str, *, correlation_id: str, agent: str | None = None
    ) -> None:
        if self.fail:
            raise ConnectionError("sink is down")
        self.errors.append((session_id, message, correlation_id, agent))


class OptionsRecordingClient(ScriptedChatClient):
    """The scripted model, remembering the options every model call received."""

    def __init__(self) -> None:
        super().__init__(chunk_delay_seconds=0)
        self.seen_options: list[dict[str, Any]] = []

    def _inner_get_response(
        self, *, messages: Sequence[Message], stream: bool, options: Mapping[str, Any], **kwargs: Any
    ) -> Any:
        self.seen_options.append(dict(options))
        return super()._inner_get_response(messages=messages, stream=stream, options=options, **kwargs)


def test_tools_answer_deterministically() -> None:
    assert get_destination_weather.func("lisbon", "April") == "Lisbon in April: sunny, 20 °C."
    assert get_destination_weather.func("Oslo", "January") == "Oslo in January: snowy, -4 °C."
    assert "not a month" in get_destination_weather.func("Oslo", "Smarch")
    assert "known cities" in get_destination_weather.func("Atlantis", "May")
    assert estimate_trip_budget.func("Tokyo", 3, 2) == "About 810 EUR for 2 traveller(s), 3 night(s) in Tokyo."
    assert estimate_trip_budget.func("Nowhere", 1) == "No budget data for Nowhere."


def test_scripted_chunks_join_to_the_answer_and_are_small() -> None:
    answer = scripted_answer("Hello there")
    chunks = split_into_chunks(answer, 12)

    assert "".join(chunks) == answer
    assert len(chunks) > 20
    assert max(len(chunk) for chunk in chunks) < 40
    assert answer.startswith('You asked: "Hello there". ')
    assert answer.count(".") >= 5, "a multi-sentence answer"
    assert "**" in answer and "\n- " in answer, "with a little Markdown for clients to render"


async def test_scripted_model_streams_with_the_configured_pace() -> None:
    client = ScriptedChatClient(chunk_delay_seconds=0.01)
    stream = client.get_response([Message(role="user", contents=["Pace me"])], stream=True)
    assert isinstance(stream, ResponseStream)

    updates = [update async for update in stream]
    final = await stream.get_final_response()

    assert len(updates) > 20
    assert "".join(update.text for update in updates) == final.text == scripted_answer("Pace me")


@pytest.mark.parametrize("marker", [FAIL_MARKER, FLAKY_MARKER])
async def test_scripted_model_fails_mid_stream_when_asked(marker: str) -> None:
    client = ScriptedChatClient(chunk_delay_seconds=0)
    received: list[ChatResponseUpdate] = []

    with pytest.raises(ScriptedModelError):
        async for update in client.get_response([Message(role="user", contents=[f"go {marker}"])], stream=True):
            received.append(update)

    assert 0 < len(received) < len(split_into_chunks(scripted_answer(f"go {marker}"), 12))


async def test_scripted_model_non_streaming_fails_on_fail_but_not_on_flaky() -> None:
    client = ScriptedChatClient(chunk_delay_seconds=0)

    with pytest.raises(ScriptedModelError):
        await client.get_response([Message(role="user", contents=[f"x {FAIL_MARKER}"])])
    response = await client.get_response([Message(role="user", contents=[f"x {FLAKY_MARKER}"])])
    assert isinstance(response, ChatResponse)
    assert response.text == scripted_answer(f"x {FLAKY_MARKER}")


async def test_agent_calls_the_weather_tool_through_the_scripted_model() -> None:
    agent = create_travel_agent(ScriptedChatClient(chunk_delay_seconds=0))

    response = await agent.run("Plan a trip to Tokyo in October")

    assert "Tokyo in October: comfortable, 19 °C." in response.text
    calls = [c for m in response.messages for c in m.contents if c.type == "function_call"]
    assert [call.name for call in calls] == ["get_destination_weather"]


async def test_private_turn_option_never_reaches_the_model_on_stream_or_retry() -> None:
    client = OptionsRecordingClient()
    sink = RecordingSink()
    agent = create_travel_agent(client, middleware=[TurnFailureReporter(sink)])
    options = {**turn_options("session-1", "turn-1"), "temperature": 0.2}

    stream = agent.run(f"flaky {FLAKY_MARKER}", stream=True, options=options)
    with pytest.raises(ScriptedModelError):
        async for _ in stream:
            pass
    retry = await agent.run(f"flaky {FLAKY_MARKER}", options=options)  # the same dict, as the entity passes it

    assert retry.text == scripted_answer(f"flaky {FLAKY_MARKER}")
    assert len(client.seen_options) == 2
    assert all(TURN_OPTION_KEY not in seen for seen in client.seen_options)
    assert all(seen.get("temperature") == 0.2 for seen in client.seen_options)
    assert TURN_OPTION_KEY in options, "the caller's options are not mutated"
    assert sink.errors == [], "a failed stream is not final: the retry decides"


async def test_reporter_writes_the_error_of_a_failed_non_streaming_run_and_reraises() -> None:
    sink = RecordingSink()
    agent = create_travel_agent(ScriptedChatClient(chunk_delay_seconds=0), middleware=[TurnFailureReporter(sink)])

    with pytest.raises(ScriptedModelError):
        await agent.run(f"boom {FAIL_MARKER}", options=turn_options("session-1", "turn-2"))

    [(session_id, message, correlation_id, agent_name)] = sink.errors
    assert (session_id, correlation_id, agent_name) == ("session-1", "turn-2", "TravelAgent")
    assert message.startswith("ScriptedModelError: ")


async def test_reporter_ignores_runs_without_turn_ids_and_keeps_the_agents_error_when_the_sink_fails() -> None:
    quiet = RecordingSink()
    broken = RecordingSink(fail=True)
    client = ScriptedChatClient(chunk_delay_seconds=0)

    with pytest.raises(ScriptedModelError):
        await create_travel_agent(client, middleware=[TurnFailureReporter(quiet)]).run(f"a {FAIL_MARKER}")
    with pytest.raises(ScriptedModelError):
        await create_travel_agent(client, middleware=[TurnFailureReporter(broken)]).run(
            f"b {FAIL_MARKER}", options=turn_options("s", "t")
        )

    assert quiet.errors == []


def test_model_settings_read_the_environment() -> None:
    settings = ModelSettings.from_env(
        {
            "AZURE_OPENAI_ENDPOINT": " https://example.openai.azure.com/ ",
            "AZURE_OPENAI_DEPLOYMENT": "gpt-4o",
            "AZURE_CLIENT_ID": "00000000-0000-0000-0000-000000000001",
            "SCRIPTED_CHUNK_DELAY_MS": "5",
        }
    )

    assert settings.azure_openai_endpoint == "https://example.openai.azure.com/"
    assert settings.uses_azure_openai
    assert settings.scripted_chunk_delay_ms == 5
    assert not ModelSettings.from_env({"AZURE_OPENAI_ENDPOINT": "https://example.openai.azure.com/"}).uses_azure_openai
    assert ModelSettings.from_env({}).scripted_chunk_delay_ms == 40
    with pytest.raises(ValueError, match="SCRIPTED_CHUNK_DELAY_MS"):
        ModelSettings.from_env({"SCRIPTED_CHUNK_DELAY_MS": "fast"})
    with pytest.raises(ValueError, match="SCRIPTED_CHUNK_DELAY_MS"):
        ModelSettings.from_env({"SCRIPTED_CHUNK_DELAY_MS": "-1"})


def test_model_selection_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="travel_agents")

    scripted = create_chat_client(ModelSettings(scripted_chunk_delay_ms=7))
    azure = create_chat_client(
        ModelSettings(azure_openai_endpoint="https://example.openai.azure.com/", azure_openai_deployment="gpt-4o")
    )

    assert isinstance(scripted, ScriptedChatClient)
    assert scripted.chunk_delay_seconds == pytest.approx(0.007)
    assert type(azure).__name__ == "OpenAIChatCompletionClient"
    assert "offline scripted chat client" in caplog.text
    assert "Azure OpenAI deployment 'gpt-4o'" in caplog.text
