"""The live feed's wake-ups without pub/sub: one blocking read (standalone) or polling (cluster)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from glide import ClusterBatch, StreamReadOptions

from ._connection import GlideAnyClient
from ._live_feed import LiveFeed


class BlockingRead:
    """Standalone: one blocking multi-key ``XREAD`` of every followed stream.

    The read runs on the feed's own client (a blocking read stalls every other command on its
    client, so writes never share it). When a stream starts being followed, the pending read is cut
    short with ``CLIENT UNBLOCK`` so the new stream is read at once, whatever the feed was doing.

    Args:
        feed: The feed whose streams are read.
        unblock: Sends ``CLIENT UNBLOCK <id>`` over another connection.
        block_ms: How long one blocking read waits.
        batch_count: Entries read per stream and round at most.
    """

    name = "blocking"

    def __init__(
        self, feed: LiveFeed, unblock: Callable[[int], Awaitable[bool]], *, block_ms: int, batch_count: int = 512
    ) -> None:
        self._feed = feed
        self._unblock = unblock
        self._block_ms = block_ms
        self._batch_count = batch_count
        self._client_id: int | None = None
        self._reading: int | None = None  # the round whose blocking read is pending, if any
        self._round = 0

    async def next_round(self, client: GlideAnyClient) -> None:
        if self._client_id is None:
            self._client_id = int(await client.custom_command(["CLIENT", "ID"]))
        options = StreamReadOptions(block_ms=self._block_ms, count=self._batch_count)
        self._round += 1
        self._reading = self._round
        try:
            reply = await client.xread(dict(self._feed.positions), options)
        finally:
            self._reading = None
        self._feed.deliver(dict(reply or {}))

    def followed(self, key: str) -> None:
        # The pending blocking read does not cover the new stream: cut it short so the next one does.
        if self._reading is not None:
            asyncio.get_running_loop().create_task(self._cut_short(self._reading))

    def unfollowed(self, key: str) -> None:
        pass

    def failed(self) -> None:
        self._client_id = None  # a reconnected client has a new id

    async def aclose(self) -> None:
        pass

    async def _cut_short(self, read_round: int) -> None:
        # CLIENT UNBLOCK travels on another connection and may overtake the XREAD it is meant to
        # cut short (it then answers 0): try again until that read has started or has ended.
        deadline = time.monotonic() + self._block_ms / 1000
        while self._reading == read_round and time.monotonic() < deadline:
            client_id = self._client_id
            if client_id is not None:
                with contextlib.suppress(Exception):
                    if await self._unblock(client_id):
                        return
            await asyncio.sleep(0.002)


class PollBackoff:
    """The pause between polls: none while entries flow, then doubling up to a maximum while all is quiet."""

    def __init__(self, first: float = 0.005, longest: float = 0.05) -> None:
        self._first = first
        self._longest = longest
        self._idle_polls = 0  # polls in a row that found nothing

    def after(self, found: bool) -> float:
        """The pause after a poll that found entries or not."""
        self._idle_polls = 0 if found else self._idle_polls + 1
        if not self._idle_polls:
            return 0.0
        return float(min(self._first * 2 ** (self._idle_polls - 1), self._longest))

    def reset(self) -> None:
        self._idle_polls = 0


class Polling:
    """Cluster: a multi-key ``XREAD`` must stay within one hash slot, so every followed stream is polled.

    One pipelined, non-blocking ``XREAD`` per followed stream, repeated at once while entries flow
    and, while all is quiet, after a pause that doubles up to ``max_poll_interval``. It costs Valkey
    commands while readers wait: by default a cluster uses notifications, which fall back to this
    when the server refuses pub/sub. The streams of a node that does not answer are retried while
    the others are read.

    Args:
        feed: The feed whose streams are read.
        poll_interval: The first pause after a poll that found nothing.
        max_poll_interval: The longest pause between polls.
        batch_count: Entries read per stream and round at most.
    """

    name = "polling"

    def __init__(
        self,
        feed: LiveFeed,
        *,
        poll_interval: float = 0.005,
        max_poll_interval: float = 0.05,
        batch_count: int = 512,
    ) -> None:
        self._feed = feed
        self._backoff = PollBackoff(poll_interval, max_poll_interval)
        self._batch_count = batch_count

    async def next_round(self, client: GlideAnyClient) -> None:
        results, unreadable = await poll_streams(client, dict(self._feed.positions), self._batch_count)
        self._feed.note_unreadable(unreadable)  # read again next round, like every stream
        pause = self._backoff.after(self._feed.deliver(results))
        if pause:
            await asyncio.sleep(pause)

    def followed(self, key: str) -> None:
        pass  # the next poll covers it

    def unfollowed(self, key: str) -> None:
        pass

    def failed(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


async def poll_streams(client: Any, positions: Mapping[str, str], batch_count: int) -> tuple[dict[Any, Any], set[str]]:
    """Read each cluster stream after its position in one pipeline: the entries, and the streams that failed.

    A stream whose node does not answer (a failover) fails alone: the others are read. Raises when
    no stream could be read.
    """
    batch = ClusterBatch(is_atomic=False)
    for key, position in positions.items():
        batch.xread({key: position}, StreamReadOptions(count=batch_count))
    replies = await client.exec(batch, raise_on_error=False) or []
    results: dict[Any, Any] = {}
    errors: dict[str, Exception] = {}
    for key, reply in zip(positions, replies, strict=True):
        if isinstance(reply, Exception):
            errors[key] = reply
        else:
            results.update(reply or {})
    if errors and len(errors) == len(positions):
        raise next(iter(errors.values()))
    return results, set(errors)
