"""A cancel request reaches the instance that writes the turn, on a standalone server and in a cluster."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.buffer.helpers import MakeBuffer, context, new_id, response
from tests.valkey_servers import ValkeyCluster, ValkeyProcess
from valkey_buffer import CANCEL_CHECK_SECONDS, ValkeySettings


@pytest.fixture(params=["standalone", "cluster"])
def settings(request: pytest.FixtureRequest) -> ValkeySettings:
    if request.param == "cluster":
        cluster: ValkeyCluster = request.getfixturevalue("valkey_cluster")
        return ValkeySettings(host=cluster.host, port=cluster.port, cluster=True)
    server: ValkeyProcess = request.getfixturevalue("valkey_server")
    return ValkeySettings(host=server.host, port=server.port)


async def test_the_next_write_batch_of_a_turn_learns_of_its_cancel(
    settings: ValkeySettings, make_buffer: MakeBuffer
) -> None:
    producer, api = make_buffer(settings), make_buffer(settings)  # two instances
    session, turn = new_id(), new_id("t")
    async with producer.watch_cancellation(session, turn) as cancellation:
        await producer.write_chunk(session, "first ", correlation_id=turn)
        await asyncio.sleep(0.05)
        assert not cancellation.is_cancelled
        await api.request_cancel(session, turn)
        asked = time.monotonic()
        async with asyncio.timeout(2):
            while not cancellation.is_cancelled:  # the model streams on, a chunk every 10 ms
                await producer.write_chunk(session, "more ", correlation_id=turn)
                await asyncio.sleep(0.01)
        # Within the batches' check interval and a round trip, before the next poll.
        assert time.monotonic() - asked < CANCEL_CHECK_SECONDS + 0.1
    assert await api.is_cancel_requested(session, turn)
    assert not await api.is_cancel_requested(session, new_id("t")), "only that turn"


async def test_a_quiet_turn_learns_of_its_cancel_within_a_poll_period(
    settings: ValkeySettings, make_buffer: MakeBuffer
) -> None:
    producer, api = make_buffer(settings), make_buffer(settings)
    session, turn = new_id(), new_id("t")
    async with producer.watch_cancellation(session, turn) as cancellation:
        await asyncio.sleep(0.3)  # the model thinks; nothing is written
        await api.request_cancel(session, turn)
        asked = time.monotonic()
        await asyncio.wait_for(cancellation.event.wait(), 2)
        assert time.monotonic() - asked < 0.5


async def test_a_response_the_is_cancelled_hook_recognises_ends_its_stream_as_cancelled(
    valkey_settings: ValkeySettings, make_buffer: MakeBuffer
) -> None:
    # The buffer does not know how an app marks a cancelled response: it asks the hook it is given.
    marked = make_buffer(valkey_settings, is_cancelled_response=lambda r: r.text.startswith("Stopped"))
    session = new_id()
    for turn, text in (("cut", "Stopped early"), ("whole", "All of it")):
        await marked.on_agent_response(response(text), context(session, turn))
    kinds = {
        turn: [c.kind async for c in marked.read_stream(session, correlation_id=turn)] for turn in ("cut", "whole")
    }
    assert kinds == {"cut": ["message", "cancelled"], "whole": ["message", "done"]}
