"""A turn run a second time (the durable runtime re-runs an entity operation whose worker died):
every reader ends with the second run's text, shown once, wherever its cursor was."""

from __future__ import annotations

import asyncio

from tests.buffer.helpers import MakeBuffer, collect, context, new_id, response, update
from tests.shown_text import chunks_text
from valkey_buffer import StreamChunk, ValkeySettings

FIRST_RUN = [f"first{i} " for i in range(40)]
SECOND_RUN = [f"second{i} " for i in range(60)]


def _check(name: str, chunks: list[StreamChunk]) -> None:
    shown_since_reset: list[str] = []
    for chunk in chunks:
        if chunk.kind == "replace":
            shown_since_reset = [chunk.text] if chunk.text else []
        elif chunk.kind == "message":
            assert chunk.text not in shown_since_reset, f"{name} was shown {chunk.text!r} twice"
            shown_since_reset.append(chunk.text)
    assert chunks and chunks[-1].kind == "done", f"{name} did not end with done: {chunks[-3:]}"
    assert chunks_text(chunks) == "".join(SECOND_RUN), f"{name} shows {chunks_text(chunks)[:90]!r}..."


async def test_a_turn_run_again_after_its_worker_died_shows_every_reader_the_second_runs_text(
    valkey_settings: ValkeySettings, make_buffer: MakeBuffer
) -> None:
    session = new_id()
    readers = make_buffer(valkey_settings)
    follow = {"correlation_id": "t"}
    live = asyncio.create_task(collect(readers, session, None, **follow))

    # The first run streams part of its answer, then its worker dies: no end is ever written.
    first = make_buffer(valkey_settings)
    for piece in FIRST_RUN:
        await first.on_streaming_response_update(update(piece), context(session, "t"))
    await first.aclose()
    written = await readers.read_available(session, None)
    inside_first_run = written[len(written) // 2].entry_id

    # The runtime runs the turn again on another worker: sequences start over, the text differs.
    second = make_buffer(valkey_settings)
    for piece in SECOND_RUN[:30]:
        await second.on_streaming_response_update(update(piece), context(session, "t"))
    resumed = asyncio.create_task(collect(readers, session, inside_first_run, **follow))
    for piece in SECOND_RUN[30:]:
        await second.on_streaming_response_update(update(piece), context(session, "t"))
    await second.on_agent_response(response("".join(SECOND_RUN)), context(session, "t"))
    await second.aclose()

    every_entry = await readers.read_available(session, None)
    inside_second_run = next(chunk.entry_id for chunk in every_entry if chunk.text == SECOND_RUN[10])
    readers_chunks = {
        "the live reader": await asyncio.wait_for(live, 10),
        "a reader resumed inside the first run": await asyncio.wait_for(resumed, 10),
        "a reader from the start": await asyncio.wait_for(collect(readers, session, None, **follow), 10),
        "a reader resumed inside the second run": await asyncio.wait_for(
            collect(readers, session, inside_second_run, **follow), 10
        ),
    }
    for name, chunks in readers_chunks.items():
        if name == "a reader resumed inside the second run":
            # Its client has shown the second run up to the cursor: it gets the rest, no reset.
            assert chunks_text(chunks) == "".join(SECOND_RUN[11:]), name
            assert all(chunk.kind != "replace" for chunk in chunks), name
        else:
            _check(name, chunks)
    _check("a poller from the start", await readers.read_available(session, None, correlation_id="t"))
