"""The stream itself holds each chunk once, so that a reader of the reference samples' schema is right.

A reader written for the Agent Framework's Redis samples knows nothing of ``(correlation_id, run,
sequence)`` nor of ``replace``: it reads the stream from its start and appends every entry's
``text`` until an entry says ``done``. It shows the committed answer only if the stream holds every
chunk exactly once and the end adds nothing to ``text``. Each test streams a turn through a fault
longer than the request timeout (replies held by a loopback proxy, Valkey frozen with SIGSTOP) and
then checks the stream as stored: what that reader shows, that no ``(correlation_id, run,
sequence)`` is in it twice, and that our own readers still end with the committed text.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.buffer.helpers import MakeBuffer, context, new_id, response, update
from tests.eventually import eventually
from tests.shown_text import chunks_text
from tests.slow_reply_proxy import SlowReplyProxy
from tests.valkey_servers import ValkeyCluster, ValkeyProcess
from valkey_buffer import ValkeySettings, ValkeyStreamBuffer

PIECES = [f"word{i} " for i in range(120)]
FINAL = "".join(PIECES)
# Longer than the writers' request timeout below: every write during the fault times out.
REQUEST_TIMEOUT_MS = 300
HOLD_SECONDS = 0.45

Fields = dict[str, str]
Fault = Callable[[int], Awaitable[None]]  # called before each chunk with its index


def reference_reader_text(entries: list[Fields]) -> tuple[str, bool]:
    """What the samples' reader shows: every entry's ``text`` from the start until ``done`` (or ``error``).

    It mirrors ``read_stream`` of the samples' ``RedisStreamResponseHandler``: an ``error`` field
    ends the read, ``done == "true"`` ends it, any other entry's non-empty ``text`` is appended.
    Returns the text and whether it reached ``done``.
    """
    shown: list[str] = []
    for fields in entries:
        if fields.get("error"):
            return "".join(shown), False
        if fields.get("done") == "true":
            return "".join(shown), True
        if fields.get("text"):
            shown.append(fields["text"])
    return "".join(shown), False


def _entries(server: ValkeyProcess | ValkeyCluster, session: str) -> list[Fields]:
    raw: Any = server.command("XRANGE", f"agent-stream:{session}", "-", "+") or []
    return [dict(zip(fields[::2], fields[1::2], strict=True)) for _, fields in raw]


@dataclass
class Turn:
    """How one turn went: the longest the agent's callback waited, and the writer's counters."""

    longest_callback: float
    writer: ValkeyStreamBuffer


async def _stream_turn(writer: ValkeyStreamBuffer, session: str, fault: Fault | None = None) -> Turn:
    ctx = context(session, "t")
    longest = 0.0
    for index, piece in enumerate(PIECES):
        if fault is not None:
            await fault(index)
        started = time.monotonic()
        await writer.on_streaming_response_update(update(piece), ctx)
        longest = max(longest, time.monotonic() - started)
        await asyncio.sleep(0.01)
    started = time.monotonic()
    await writer.on_agent_response(response(FINAL), ctx)
    longest = max(longest, time.monotonic() - started)
    return Turn(longest, writer)


async def _check_stream(
    server: ValkeyProcess | ValkeyCluster, readers: ValkeyStreamBuffer, session: str, turn: Turn, *, within: float
) -> None:
    """Wait for the turn's end in the stream, then check the stream as stored and what readers show of it."""
    entries = await _stored_turn(server, session, within)
    text, reached_done = reference_reader_text(entries)
    assert reached_done, "the reference reader never met done"
    assert text == FINAL, f"the reference reader shows {len(text)} characters for a {len(FINAL)}-character answer"
    keys = [(f["correlation_id"], f["run"], f["sequence"]) for f in entries]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    assert not repeated, f"the stream holds {len(repeated)} (correlation_id, run, sequence) more than once"
    # Nothing was lost, so nothing needed correcting.
    assert turn.writer.stats.turns_replaced == 0 and turn.writer.stats.entries_dropped == 0
    ours = await readers.read_available(session, correlation_id="t")
    assert chunks_text(ours) == FINAL and ours[-1].is_done


async def _stored_turn(server: ValkeyProcess | ValkeyCluster, session: str, within: float) -> list[Fields]:
    """The stream's entries once the turn's end is among them."""

    def ended() -> list[Fields] | None:
        entries = _entries(server, session)
        return entries if any(fields.get("done") == "true" for fields in entries) else None

    return await eventually(ended, timeout=within, interval=0.1, message="the turn's end never reached the stream")


def _writer_settings(host: str, port: int, **options: object) -> ValkeySettings:
    return ValkeySettings(host=host, port=port, request_timeout_ms=REQUEST_TIMEOUT_MS, **options)  # type: ignore[arg-type]


def _holding(proxies: list[SlowReplyProxy]) -> Fault:
    async def fault(index: int) -> None:
        if index in (30, 70):
            for proxy in proxies:
                proxy.hold_replies(HOLD_SECONDS if index == 30 else 0)

    return fault


def _pausing(nodes: list[ValkeyProcess], seconds: float, at: int = 40) -> tuple[Fault, list[asyncio.Task[None]]]:
    """A fault that freezes ``nodes`` for ``seconds`` before chunk ``at``; the task that thaws them."""
    thawing: list[asyncio.Task[None]] = []

    async def thaw() -> None:
        await asyncio.sleep(seconds)
        for node in nodes:
            node.resume()

    async def fault(index: int) -> None:
        if index == at:
            for node in nodes:
                node.pause()
            thawing.append(asyncio.create_task(thaw()))

    return fault, thawing


# ----- a standalone server -----


@pytest.mark.parametrize("held", [False, True], ids=["no-fault", "replies-held"])
async def test_a_reference_reader_shows_the_committed_answer_once_with_replies_held_past_the_timeout(
    valkey_server: ValkeyProcess, valkey_settings: ValkeySettings, make_buffer: MakeBuffer, held: bool
) -> None:
    proxy = SlowReplyProxy(valkey_server.port)
    try:
        writer = make_buffer(_writer_settings("127.0.0.1", proxy.port))
        session = new_id()
        turn = await _stream_turn(writer, session, _holding([proxy]) if held else None)
        await _check_stream(valkey_server, make_buffer(valkey_settings), session, turn, within=20)
        if held:
            # The fault bit: writes timed out (and Valkey applied them) while the agent went on.
            assert proxy.replies_held and writer.stats.batch_failures >= 1
            assert turn.longest_callback < 0.2, f"the callback waited {turn.longest_callback:.2f} s"
        await writer.aclose()  # while the proxy still forwards
    finally:
        proxy.close()


@pytest.mark.timeout(120)
async def test_valkey_paused_mid_turn_a_reference_reader_shows_the_committed_answer_once(
    make_valkey_server: Callable[[], ValkeyProcess], make_buffer: MakeBuffer
) -> None:
    pauses = (2.0, 8.0, 30.0)

    async def scenario(seconds: float) -> None:
        server = make_valkey_server()
        writer = make_buffer(_writer_settings(server.host, server.port))
        readers = make_buffer(ValkeySettings(host=server.host, port=server.port))
        session = new_id()
        fault, thawing = _pausing([server], seconds)
        turn = await _stream_turn(writer, session, fault)
        # The whole turn was streamed and committed while Valkey was frozen: nothing waited for it.
        assert thawing and not thawing[0].done(), "the turn outlived the pause: make the pause longer"
        assert turn.longest_callback < 1.0, f"the callback waited {turn.longest_callback:.2f} s ({seconds:g} s pause)"
        await thawing[0]
        await _check_stream(server, readers, session, turn, within=20)
        assert writer.stats.batch_failures >= 1

    await asyncio.gather(*(scenario(seconds) for seconds in pauses))


# ----- a 3-primary cluster, every node behind a proxy that can hold its replies -----


@dataclass
class ProxiedCluster:
    cluster: ValkeyCluster
    proxies: list[SlowReplyProxy]

    @property
    def settings(self) -> ValkeySettings:
        return _writer_settings("127.0.0.1", self.proxies[0].port, cluster=True)


@pytest.fixture(scope="module")
def proxied_cluster() -> Iterator[ProxiedCluster]:
    """A cluster of its own whose nodes announce their proxies' ports, so clients reach them through the proxies.

    Its nodes wait a minute before they take a frozen peer for failed: a pause stays a pause.
    """
    cluster = ValkeyCluster(node_args=("--cluster-node-timeout", "60000")).start()
    proxies = [SlowReplyProxy(node.port) for node in cluster.nodes]
    try:
        for node, proxy in zip(cluster.nodes, proxies, strict=True):
            node.command(
                "CONFIG",
                "SET",
                "cluster-announce-port",
                str(proxy.port),
                "cluster-announce-bus-port",
                str(node.port + 10000),
            )
        wanted = {proxy.port for proxy in proxies}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            slots: list[Any] = [node.command("CLUSTER", "SLOTS") for node in cluster.nodes]
            announced = [{int(shard[2][1]) for shard in reply} for reply in slots]
            if all(ports == wanted for ports in announced):
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("the cluster's nodes never announced their proxies")
        yield ProxiedCluster(cluster, proxies)
    finally:
        for proxy in proxies:
            proxy.close()
        cluster.stop()


@pytest.mark.parametrize("fault", ["no-fault", "replies-held", "paused-8s"])
async def test_on_a_cluster_a_reference_reader_shows_the_committed_answer_once(
    proxied_cluster: ProxiedCluster, make_buffer: MakeBuffer, fault: str
) -> None:
    cluster = proxied_cluster.cluster
    writer, readers = make_buffer(proxied_cluster.settings), make_buffer(proxied_cluster.settings)
    session = new_id()
    thawing: list[asyncio.Task[None]] = []
    injected: Fault | None = None
    if fault == "replies-held":
        injected = _holding(proxied_cluster.proxies)
    elif fault == "paused-8s":
        injected, thawing = _pausing([cluster.node_for(f"agent-stream:{session}")], 8.0)
    turn = await _stream_turn(writer, session, injected)
    for task in thawing:
        await task
    await _check_stream(cluster, readers, session, turn, within=30)
    if fault != "no-fault":
        assert writer.stats.batch_failures >= 1
        assert turn.longest_callback < 1.0, f"the callback waited {turn.longest_callback:.2f} s"


# ----- what the writer holds, and the script it needs -----


async def test_an_outage_past_the_memory_cap_gives_up_the_oldest_entries_and_the_end_carries_the_answer(
    make_valkey_server: Callable[[], ValkeyProcess], make_buffer: MakeBuffer
) -> None:
    server = make_valkey_server()
    # Room for about ten entries: the rest of the turn, written while Valkey is frozen, does not fit.
    writer = make_buffer(_writer_settings(server.host, server.port), max_held_bytes=10 * 450)
    readers = make_buffer(ValkeySettings(host=server.host, port=server.port))
    session = new_id()
    fault, thawing = _pausing([server], 3.0, at=10)
    turn = await _stream_turn(writer, session, fault)
    assert turn.longest_callback < 1.0
    await thawing[0]
    entries = await _stored_turn(server, session, 20)
    assert writer.stats.entries_dropped > 0 and writer.stats.turns_replaced == 1
    keys = [(f["correlation_id"], f["run"], f["sequence"]) for f in entries]
    assert len(keys) == len(set(keys))
    ours = await readers.read_available(session, correlation_id="t")
    assert chunks_text(ours) == FINAL and ours[-1].is_done


async def test_writes_go_on_when_the_server_has_forgotten_the_script(
    valkey_server: ValkeyProcess, buffer: ValkeyStreamBuffer
) -> None:
    # A restart or a failover empties the script cache: the next write loads the script again.
    session = new_id()
    ctx = context(session, "t")
    for piece in PIECES[:60]:
        await buffer.on_streaming_response_update(update(piece), ctx)
    await buffer.flush_turn(session, "t")
    valkey_server.command("SCRIPT", "FLUSH")
    for piece in PIECES[60:]:
        await buffer.on_streaming_response_update(update(piece), ctx)
    await buffer.on_agent_response(response(FINAL), ctx)
    text, reached_done = reference_reader_text(_entries(valkey_server, session))
    assert reached_done and text == FINAL
    assert buffer.stats.batch_failures == 0


async def test_a_server_that_refuses_scripting_still_gets_every_turn_written_and_says_so_once(
    valkey_server: ValkeyProcess,
    valkey_settings: ValkeySettings,
    make_buffer: MakeBuffer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # An ACL user stands in for a server or a managed cache without Lua scripting.
    valkey_server.command("ACL", "SETUSER", "no-scripting", "on", ">secret", "~*", "&*", "+@all", "-@scripting")
    buffer = make_buffer(dataclasses.replace(valkey_settings, username="no-scripting", password="secret"))
    caplog.set_level(logging.ERROR, logger="valkey_buffer")
    sessions = [new_id(), new_id()]
    for session in sessions:
        await _stream_turn(buffer, session)
    for session in sessions:
        text, reached_done = reference_reader_text(_entries(valkey_server, session))
        assert reached_done and text == FINAL
        assert chunks_text(await buffer.read_available(session, correlation_id="t")) == FINAL
    refusals = [r.getMessage() for r in caplog.records if "refuses scripting" in r.getMessage()]
    assert len(refusals) == 1, refusals
