"""The cluster live feed woken by sharded pub/sub, against the real 3-primary cluster.

Readers' entry ids are compared with the stream's (after each reader's cursor), so a gap or a
duplicate fails a test, not only a wrong text. Where a test proves that delivery came from a
notification, the safety poll is set far beyond the test's own timeouts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.buffer.helpers import MakeBuffer, collect, new_id
from tests.busy_session import busy_session
from tests.eventually import eventually
from tests.shown_text import chunks_text
from tests.valkey_servers import ValkeyCluster, ValkeyProcess
from valkey_buffer import ValkeySettings, ValkeyStreamBuffer

pytestmark = pytest.mark.cluster

NO_SAFETY_POLL = 3600.0  # longer than any test: what arrives came by notification (or while subscribing)


@pytest.fixture
def notified_buffer(make_buffer: MakeBuffer, cluster_settings: ValkeySettings) -> ValkeyStreamBuffer:
    """A buffer on the session's cluster whose live readers are woken by notifications only."""
    return make_buffer(cluster_settings, safety_poll_seconds=NO_SAFETY_POLL)


def _stream(cluster: ValkeyCluster, session: str) -> list[tuple[str, dict[str, str]]]:
    """The stream's entries as the server holds them: (id, fields)."""
    reply = cluster.command("XRANGE", f"agent-stream:{session}", "-", "+")
    return [(entry[0], dict(zip(entry[1][::2], entry[1][1::2], strict=True))) for entry in reply]  # type: ignore[union-attr]


def _expected_after(entries: list[tuple[str, dict[str, str]]], cursor: str | None) -> list[str]:
    """The ids a reader from ``cursor`` must get: every entry after it, a repeated (turn, sequence) once.

    A cursor at the turn's last entry gets that entry again (the turn's end, at once).
    """
    if entries and cursor == entries[-1][0]:
        return [cursor]
    seen: set[tuple[str, str]] = set()
    expected: list[str] = []
    for entry_id, fields in entries:
        turn = (fields.get("correlation_id", ""), fields.get("sequence", ""))
        repeated = turn in seen
        seen.add(turn)
        if cursor is not None and _order(entry_id) <= _order(cursor):
            continue
        if not repeated:
            expected.append(entry_id)
    return expected


def _order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq)


async def _ids(buffer: ValkeyStreamBuffer, session: str, cursor: str | None = None) -> list[str]:
    return [chunk.entry_id async for chunk in buffer.read_stream(session, cursor, correlation_id="t", idle_timeout=60)]


async def _turn(buffer: ValkeyStreamBuffer, session: str, chunks: int, pause: float = 0.002) -> None:
    for i in range(chunks):
        await buffer.write_chunk(session, f"c{i} ", correlation_id="t")
        await asyncio.sleep(pause)
    await buffer.write_completion(session, correlation_id="t")


def _readers_joined(buffer: ValkeyStreamBuffer, count: int) -> Callable[[], bool]:
    return lambda: buffer.reader_stats().active == count


@pytest.mark.parametrize(("readers", "streams"), [(1, 1), (100, 10), (1000, 100)])
async def test_every_live_reader_gets_exactly_its_streams_entries_by_notification(
    valkey_cluster: ValkeyCluster, notified_buffer: ValkeyStreamBuffer, readers: int, streams: int
) -> None:
    buffer = notified_buffer
    sessions = [new_id() for _ in range(streams)]
    tasks = [asyncio.create_task(_ids(buffer, sessions[i % streams])) for i in range(readers)]
    await eventually(_readers_joined(buffer, readers), message=f"{readers} readers never joined the live feed")
    await asyncio.sleep(0.5)  # the subscriptions are active: from here on only notifications wake the feed
    await asyncio.gather(*(_turn(buffer, session, chunks=30) for session in sessions))
    got = await asyncio.wait_for(asyncio.gather(*tasks), 30)
    assert buffer.reader_stats().live_feed == "notifications"
    for i, ids in enumerate(got):
        session = sessions[i % streams]
        assert ids == _expected_after(_stream(valkey_cluster, session), None), f"reader {i} of {session}"


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), resumers=st.integers(3, 10), live_readers=st.integers(1, 3))
async def test_readers_joining_mid_turn_get_exactly_the_entries_after_their_cursor(
    valkey_cluster: ValkeyCluster, notified_buffer: ValkeyStreamBuffer, seed: int, resumers: int, live_readers: int
) -> None:
    session = await busy_session(
        notified_buffer,
        valkey_cluster,
        random.Random(seed),
        resumers=resumers,
        live_readers=live_readers,  # type: ignore[arg-type]
    )
    session.assert_exactly_once()


async def test_entries_whose_notification_never_comes_arrive_by_the_safety_poll(
    valkey_cluster: ValkeyCluster, cluster_settings: ValkeySettings, make_buffer: MakeBuffer
) -> None:
    # A writer with the polling feed publishes nothing: every notification of this turn is lost, as
    # with an older instance during a rolling deploy, or a reference-sample writer.
    readers = make_buffer(cluster_settings, safety_poll_seconds=1.0)
    silent_writer = make_buffer(cluster_settings, live_feed="polling")
    session = new_id()
    reader = asyncio.create_task(collect(readers, session, correlation_id="t", idle_timeout=30))
    await eventually(_readers_joined(readers, 1), message="the reader never joined the live feed")
    await asyncio.sleep(0.5)  # subscribed: nothing polls this stream quickly any more
    xreads_before = valkey_cluster.command_calls().get("xread", 0)
    started = time.monotonic()
    for i in range(6):
        await silent_writer.write_chunk(session, f"c{i} ", correlation_id="t")
        await asyncio.sleep(0.25)
    await silent_writer.write_completion(session, correlation_id="t")
    chunks = await asyncio.wait_for(reader, 10)
    elapsed = time.monotonic() - started
    xreads = valkey_cluster.command_calls().get("xread", 0) - xreads_before
    assert chunks_text(chunks) == "c0 c1 c2 c3 c4 c5 " and chunks[-1].is_done
    # Read by the safety poll, once a second, not polled: a few XREADs, where polling sends hundreds.
    assert xreads <= elapsed + 3, f"{xreads} XREADs in {elapsed:.1f} s"


async def test_idle_readers_cost_less_than_one_command_per_stream_per_second(
    valkey_cluster: ValkeyCluster, cluster_settings: ValkeySettings, make_buffer: MakeBuffer
) -> None:
    streams, window = 100, 6.0  # the window holds at least one safety poll (every 5 s)
    buffer = make_buffer(cluster_settings)
    sessions = [new_id() for _ in range(streams)]
    readers = [asyncio.create_task(collect(buffer, s, correlation_id="t", idle_timeout=60)) for s in sessions]
    await eventually(_readers_joined(buffer, streams), message=f"{streams} readers never joined the live feed")
    await asyncio.sleep(1.0)
    before = [node.command_calls() for node in valkey_cluster.nodes]
    await asyncio.sleep(window)
    after = [node.command_calls() for node in valkey_cluster.nodes]
    for session in sessions:
        await buffer.write_completion(session, correlation_id="t")
    await asyncio.wait_for(asyncio.gather(*readers), 30)
    # Every command on every node but the INFO calls of this test.
    per_node = [
        {name: calls - old.get(name, 0) for name, calls in new.items() if name != "info" and calls > old.get(name, 0)}
        for old, new in zip(before, after, strict=True)
    ]
    rate = sum(sum(node.values()) for node in per_node) / window
    assert rate < streams, f"{rate:.0f} commands/s for {streams} idle streams: {per_node}"


async def test_writes_publish_one_notification_per_batch_in_a_cluster_and_none_on_a_standalone_server(
    valkey_cluster: ValkeyCluster,
    cluster_settings: ValkeySettings,
    valkey_settings: ValkeySettings,
    valkey_server: ValkeyProcess,
    make_buffer: MakeBuffer,
) -> None:
    clustered, standalone = make_buffer(cluster_settings), make_buffer(valkey_settings)
    before = valkey_cluster.command_calls().get("spublish", 0)
    await _turn(clustered, new_id(), chunks=20, pause=0)
    published = valkey_cluster.command_calls().get("spublish", 0) - before
    batches = clustered.stats.batches_written

    standalone_before = valkey_server.command_calls()
    await _turn(standalone, new_id(), chunks=20, pause=0)
    standalone_after = valkey_server.command_calls()
    assert published == batches > 0
    for command in ("publish", "spublish"):
        assert standalone_after.get(command, 0) == standalone_before.get(command, 0)


async def test_a_primary_killed_and_restarted_mid_turn_loses_and_repeats_nothing_for_any_reader(
    make_valkey_cluster: Callable[..., ValkeyCluster], make_buffer: MakeBuffer
) -> None:
    # A cluster of its own, with every write on disk before it is acknowledged: the restarted
    # primary comes back with its slots and its entries.
    cluster = make_valkey_cluster(node_args=("--appendonly", "yes", "--appendfsync", "always"))
    victim = cluster.nodes[1]
    base = ValkeySettings(host=cluster.host, port=cluster.port, cluster=True, read_idle_timeout_seconds=60)
    writer = make_buffer(base, write_retry_seconds=20)
    # No safety poll during the test: the feed must notice the reconnect by itself.
    feed_side = make_buffer(base, safety_poll_seconds=NO_SAFETY_POLL)
    on_victim = [s for s in (new_id() for _ in range(200)) if cluster.node_for(f"agent-stream:{s}") is victim][:3]
    elsewhere = [s for s in (new_id() for _ in range(200)) if cluster.node_for(f"agent-stream:{s}") is not victim][:3]
    sessions = on_victim + elsewhere
    readers: list[tuple[str, str | None, asyncio.Task[list[str]]]] = []

    def join(session: str, cursor: str | None) -> None:
        readers.append((session, cursor, asyncio.create_task(_ids(feed_side, session, cursor))))

    async def join_mid_turn(delay: float) -> None:
        await asyncio.sleep(delay)
        for session in sessions:
            try:
                ids = [entry_id for entry_id, _ in _stream(cluster, session)]
            except (OSError, RuntimeError):
                continue  # its primary is down: a client would be refused (503) and come back later
            join(session, random.choice(ids) if ids else None)

    for session in sessions:
        join(session, None)
    await eventually(_readers_joined(feed_side, len(sessions)), message="the readers never joined the live feed")
    await asyncio.sleep(0.5)
    # Half the turns end during the outage: their last entries are written (retried) as the primary
    # comes back, perhaps before the feed's subscriptions are back; the others go on after it.
    turns = [
        asyncio.create_task(_turn(writer, session, chunks=120 if i % 2 else 300, pause=0.01))
        for i, session in enumerate(sessions)
    ]
    joiners = [asyncio.create_task(join_mid_turn(delay)) for delay in (0.5, 1.4, 2.5)]
    await asyncio.sleep(1.0)
    victim.kill()
    await asyncio.sleep(1.0)
    await asyncio.to_thread(victim.start)  # in a thread: the writer and the feed go on meanwhile
    await asyncio.wait_for(asyncio.gather(*turns, *joiners), 60)
    turn_ended = time.monotonic()
    got = await asyncio.wait_for(asyncio.gather(*(task for _, _, task in readers)), 20)
    assert time.monotonic() - turn_ended < 10, "readers ended late: the feed missed the reconnect"
    assert feed_side.reader_stats().live_feed == "notifications"  # an outage is not a refusal
    for (session, cursor, _), ids in zip(readers, got, strict=True):
        expected = _expected_after(_stream(cluster, session), cursor)
        assert ids == expected, (
            f"{session} after {cursor}: missing {sorted(set(expected) - set(ids))[:5]}, "
            f"extra {sorted(set(ids) - set(expected))[:5]}, {len(ids)} of {len(expected)}"
        )


async def test_a_stream_whose_slot_moves_mid_turn_is_read_while_its_subscription_moves(
    make_valkey_cluster: Callable[..., ValkeyCluster], make_buffer: MakeBuffer
) -> None:
    # The old owner unsubscribes the feed from the moved slot's channels, and GLIDE subscribes again
    # at the new owner only after a while; the turn ends in between, its last notifications lost.
    cluster = make_valkey_cluster()
    base = ValkeySettings(host=cluster.host, port=cluster.port, cluster=True, read_idle_timeout_seconds=60)
    writer, feed_side = make_buffer(base), make_buffer(base, safety_poll_seconds=NO_SAFETY_POLL)
    session = next(
        s for s in (new_id() for _ in range(100)) if cluster.node_for(f"agent-stream:{s}") is cluster.nodes[0]
    )
    readers = [asyncio.create_task(_ids(feed_side, session)) for _ in range(3)]
    await eventually(_readers_joined(feed_side, 3), message="3 readers never joined the live feed")
    await asyncio.sleep(0.5)
    for i in range(20):
        await writer.write_chunk(session, f"c{i} ", correlation_id="t")
        await asyncio.sleep(0.01)
    await asyncio.to_thread(cluster.move_slot, f"agent-stream:{session}", cluster.nodes[1])
    for i in range(20, 25):
        await writer.write_chunk(session, f"c{i} ", correlation_id="t")
        await asyncio.sleep(0.05)
    await writer.write_completion(session, correlation_id="t")
    got = await asyncio.wait_for(asyncio.gather(*readers), 10)
    assert feed_side.reader_stats().live_feed == "notifications"
    expected = _expected_after(_stream(cluster, session), None)
    assert len(expected) == 26
    for ids in got:
        assert ids == expected


@pytest.mark.parametrize(
    "denied",
    [("-ssubscribe", "-spublish"), ("-spublish",), ("-ssubscribe",)],
    ids=["pubsub-denied", "spublish-denied", "ssubscribe-denied"],
)
async def test_a_server_that_refuses_sharded_pubsub_gets_the_polling_feed_logged_once(
    valkey_cluster: ValkeyCluster,
    cluster_settings: ValkeySettings,
    caplog: pytest.LogCaptureFixture,
    denied: tuple[str, ...],
    make_buffer: MakeBuffer,
) -> None:
    # An ACL user stands in for a server or a managed cache that disables sharded pub/sub.
    user = f"no-pubsub-{'-'.join(d.lstrip('-') for d in denied)}"
    for node in valkey_cluster.nodes:
        node.command("ACL", "SETUSER", user, "on", ">secret", "~*", "&*", "+@all", *denied)
    buffer = make_buffer(
        dataclasses.replace(cluster_settings, username=user, password="secret", read_idle_timeout_seconds=30)
    )
    sessions = [new_id() for _ in range(6)]
    caplog.set_level(logging.WARNING, logger="valkey_buffer")
    # Turns while the feed may still be finding out, then a long one that it follows across the fallback.
    readers = [asyncio.create_task(collect(buffer, s, correlation_id="t")) for s in sessions]
    await eventually(_readers_joined(buffer, len(sessions)), message="the readers never joined the live feed")
    long_turn = asyncio.create_task(_turn(buffer, sessions[0], chunks=40, pause=0.25))
    await asyncio.gather(*(_turn(buffer, session, chunks=20) for session in sessions[1:]))
    # A refused subscription shows only as one that never becomes active: it takes a few seconds.
    await eventually(
        lambda: buffer.reader_stats().live_feed == "polling",
        timeout=15,
        message=lambda: f"the live feed is still {buffer.reader_stats().live_feed!r}, not 'polling'",
    )
    second = [new_id() for _ in range(3)]
    readers += [asyncio.create_task(collect(buffer, s, correlation_id="t")) for s in second]
    await asyncio.gather(long_turn, *(_turn(buffer, session, chunks=20) for session in second))
    results = await asyncio.wait_for(asyncio.gather(*readers), 10)
    expected = ["".join(f"c{i} " for i in range(40))] + ["".join(f"c{i} " for i in range(20))] * (len(sessions) + 2)
    assert [chunks_text(chunks) for chunks in results] == expected
    assert (buffer.stats.batch_failures, buffer.stats.entries_dropped, buffer.stats.turns_replaced) == (0, 0, 0)
    refusals = [r.getMessage() for r in caplog.records if "refuses pub/sub" in r.getMessage()]
    feed_refusals = [m for m in refusals if "live feed polls instead" in m]
    write_refusals = [m for m in refusals if "writes no longer publish" in m]
    assert len(feed_refusals) == 1, refusals
    assert len(write_refusals) == (1 if "-spublish" in denied else 0), refusals


def test_a_live_feed_that_does_not_fit_the_server_is_refused_when_the_buffer_is_made(
    cluster_settings: ValkeySettings, valkey_settings: ValkeySettings
) -> None:
    with pytest.raises(ValueError, match="live_feed='blocking' needs a standalone server"):
        ValkeyStreamBuffer(cluster_settings, live_feed="blocking")
    with pytest.raises(ValueError, match="live_feed='polling' is for a cluster"):
        ValkeyStreamBuffer(valkey_settings, live_feed="polling")
    with pytest.raises(ValueError, match="live_feed must be"):
        ValkeyStreamBuffer(valkey_settings, live_feed="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="safety_poll_seconds"):
        ValkeyStreamBuffer(cluster_settings, safety_poll_seconds=0)
