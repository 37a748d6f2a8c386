"""The live feed woken by pub/sub notifications: no polling while readers wait (the cluster default).

Every write batch also publishes an empty notification on a channel named after the stream key, in
the same atomic batch as the XADDs and the EXPIRE (in a cluster that is SPUBLISH, and the channel
hashes to the key's slot, so the batch stays on one node). The feed subscribes to the channels of
the streams it follows and reads a stream, from its position, when told to. A notification carries
nothing readers depend on: entries are always read from the stream, so a lost one costs latency,
never data. The seams:

- A stream starts being followed: its channel is requested from GLIDE, and until GLIDE reports the
  subscription active the stream is polled like in the polling feed. Once it is active the stream
  is read once more: what was written before the subscription is in that read, what came after it
  is notified.
- A reconnect, a failover or a slot migration: GLIDE drops the lost connection's channels from its
  actual subscriptions at once and resubscribes in the background, but tells the application
  nothing (its disconnect notice only goes to its own log). The feed therefore watches GLIDE's
  subscription state (``get_subscriptions``, answered inside the client, no server round trip)
  every quarter second: a stream whose channel is missing is polled, and read once more when the
  channel is back.
- A notification lost without any of that, or a writer that does not publish (an older instance,
  the reference samples): a safety poll reads every followed stream every ``safety_poll_seconds``.
  It is the only Valkey traffic of idle readers.
- A server that refuses pub/sub (an old server, an ACL, a managed cache that disables it): the
  feed logs it once and becomes the feed it extends, polling in a cluster and one blocking read on a
  standalone server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from glide import (
    Batch,
    ClusterBatch,
    GlideClientConfiguration,
    GlideClusterClient,
    GlideClusterClientConfiguration,
    RequestError,
    StreamReadOptions,
)

from ._chunk import StreamChunk
from ._connection import GlideAnyClient
from ._ids import STREAM_KEY_PREFIX
from ._live_feed import LiveFeed, _text

logger = logging.getLogger("valkey_buffer")

# Published once when the feed starts, to learn whether the server takes notifications at all. Shaped
# like a stream key so that an ACL limiting channels to the streams' names allows it too.
PROBE_CHANNEL = STREAM_KEY_PREFIX + "live-feed-probe"
# How often GLIDE's subscription state is compared with the followed streams (about 1 ms of CPU per
# 1,000 channels, no server traffic): the longest a reconnect goes unnoticed.
_STATE_CHECK_SECONDS = 0.25
# How often a subscription that is not active yet is asked again (GLIDE retries by itself only every 5 s).
_NUDGE_SECONDS = 1.0
# The server's answer when it will not run a pub/sub command or allow a channel.
_REFUSAL = re.compile(r"(no permissions|noperm|unknown command|disabled)[^\n]*(publish|subscribe|channel)", re.I)


def is_pubsub_refusal(error: Exception) -> bool:
    """Whether ``error`` says that the server refuses pub/sub (not that it is unreachable)."""
    return isinstance(error, RequestError) and bool(_REFUSAL.search(str(error)))


def add_notification(batch: Batch | ClusterBatch, key: str) -> None:
    """Append the notification of a write to ``key`` to ``batch`` (SPUBLISH in a cluster)."""
    if isinstance(batch, ClusterBatch):
        batch.publish("", key, sharded=True)
    else:
        batch.publish("", key)


class NotifiedFeed(LiveFeed):
    """A live feed that reads a followed stream when a notification says it has new entries.

    See the module docstring for how notifications, positions, reconnects and the safety poll fit
    together. Falls back to the :class:`LiveFeed` it extends when the server refuses pub/sub.

    Args:
        connect: Creates the feed's client (called lazily, again after a failure).
        parse: Turns an entry into a chunk (``None`` when malformed); called once per entry.
        unblock: Sends ``CLIENT UNBLOCK <id>`` over another connection (the standalone fallback).
        block_ms: How long one blocking read of the standalone fallback waits.
        cluster: Whether the server is a cluster (sharded pub/sub) or standalone (plain pub/sub).
        safety_poll_seconds: How often every followed stream is read without a notification.
        subscribe_timeout: Seconds a subscription may stay inactive while Valkey answers reads
            before the feed takes it as refused (only while no subscription has ever been active).
        **options: The :class:`LiveFeed` tuning options (poll intervals, batch and queue sizes).
    """

    def __init__(
        self,
        connect: Callable[[], Awaitable[GlideAnyClient]],
        parse: Callable[[str, Any], StreamChunk | None],
        unblock: Callable[[int], Awaitable[bool]],
        *,
        block_ms: int,
        cluster: bool,
        safety_poll_seconds: float = 5.0,
        subscribe_timeout: float = 5.0,
        **options: Any,
    ) -> None:
        if safety_poll_seconds <= 0:
            raise ValueError("safety_poll_seconds must be positive")
        super().__init__(connect, parse, unblock, block_ms=block_ms, cluster=cluster, **options)
        self._safety_poll_seconds = safety_poll_seconds
        self._subscribe_timeout = subscribe_timeout
        self.pubsub_refused = False  # then the feed reads as the LiveFeed it extends
        self._probed = False
        self._listening_on: GlideAnyClient | None = None  # the client whose subscriptions are below
        self._receiver: asyncio.Task[None] | None = None
        self._requested: set[str] = set()  # channels asked of GLIDE
        self._active: set[str] = set()  # followed streams whose subscription is active, read since it became so
        self._inactive_since: dict[str, float] = {}  # followed stream -> since when inactive while reads succeed
        self._subscriptions_work = False  # a subscription has been active: the server takes them
        self._due: set[str] = set()  # streams to read in the next round
        self._wake = asyncio.Event()
        self._next_state_check = 0.0
        self._next_nudge = 0.0
        self._next_safety_poll = 0.0

    async def aclose(self) -> None:
        """Stop following and close the feed's client."""
        if self._receiver is not None:
            self._receiver.cancel()
            with contextlib.suppress(BaseException):
                await self._receiver
        await super().aclose()

    def _stream_followed(self, key: str) -> None:
        if self.pubsub_refused:
            super()._stream_followed(key)
            return
        self._due.add(key)  # read at once: entries may have come between the reader's catch-up and now
        self._wake.set()

    def _stream_unfollowed(self, key: str) -> None:
        self._active.discard(key)
        self._inactive_since.pop(key, None)

    async def _next_round(self, client: GlideAnyClient) -> None:
        if self.pubsub_refused:
            await super()._next_round(client)
            return
        if not self._probed:
            refusal = await self._probe(client)
            self._probed = True
            if refusal is not None:
                await self._fall_back(client, refusal)
                return
        self._listen(client)
        await self._update_subscriptions(client)
        now = time.monotonic()
        if now >= self._next_state_check:
            self._next_state_check = now + _STATE_CHECK_SECONDS
            refusal = await self._check_subscriptions(client, now)
            if refusal is not None:
                await self._fall_back(client, refusal)
                return
        # Streams without an active subscription are polled; the rest are read when notified.
        inactive = self._positions.keys() - self._active
        if now >= self._next_safety_poll:
            self._next_safety_poll = now + self._safety_poll_seconds
            due = set(self._positions)
        else:
            due = (self._due | inactive) & self._positions.keys()
        # Taken before the read: a notification that arrives during it asks for another read.
        self._due.clear()
        self._wake.clear()
        try:
            found, unreadable = await self._read_streams(client, due) if due else (False, set[str]())
        except Exception:
            self._due |= due  # read them once Valkey answers again
            self._inactive_since.clear()  # Valkey does not answer: no evidence of a refusal
            raise
        if unreadable:
            self._inactive_since.clear()
        self._due |= unreadable  # their node does not answer now: read them again, like inactive ones
        self._note_unreadable(unreadable)
        await self._wait_for_work(found, bool(inactive or unreadable))

    async def _wait_for_work(self, found: bool, polling_some: bool) -> None:
        if polling_some:
            self._idle_polls = 0 if found else self._idle_polls + 1
            timeout = self._poll_pause() if self._idle_polls else 0.0
        else:
            self._idle_polls = 0
            timeout = min(self._next_state_check, self._next_safety_poll) - time.monotonic()
        if timeout > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    async def _read_streams(self, client: GlideAnyClient, keys: set[str]) -> tuple[bool, set[str]]:
        """Read ``keys`` after their positions and deliver: whether anything was found, and the keys that failed."""
        positions = {key: self._positions[key] for key in keys}
        if self._cluster:
            results, unreadable = await self._poll(client, positions)
        else:
            results = dict(await client.xread(positions, StreamReadOptions(count=self._batch_count)) or {})
            unreadable = set()
        return self._deliver(results), unreadable

    async def _probe(self, client: GlideAnyClient) -> str | None:
        """Publish once: the reason the server refuses notifications, ``None`` if it takes them."""
        try:
            if isinstance(client, GlideClusterClient):
                await client.publish("", PROBE_CHANNEL, sharded=True)
            else:
                await client.publish("", PROBE_CHANNEL)
        except RequestError as error:
            if is_pubsub_refusal(error):
                return str(error)
            raise
        return None

    def _listen(self, client: GlideAnyClient) -> None:
        if client is not self._listening_on:
            # A new client (the previous one closed) has no subscriptions: ask for them all again.
            self._listening_on = client
            self._requested.clear()
            self._active.clear()
        if self._receiver is None or self._receiver.done():
            self._receiver = asyncio.get_running_loop().create_task(
                self._receive(client), name="valkey-live-feed-notifications"
            )

    async def _receive(self, client: GlideAnyClient) -> None:
        while True:
            try:
                message: Any = await client.get_pubsub_message()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                logger.debug("Live feed notifications stopped: %s", error)
                return  # the client closed; the next round listens on its replacement
            # Take every notification already here at once: one per event-loop turn falls far
            # behind when many streams are written at the same time.
            while message is not None:
                key = _text(message.channel)
                if key in self._positions:
                    self._due.add(key)
                message = client.try_get_pubsub_message()
            self._wake.set()

    async def _update_subscriptions(self, client: GlideAnyClient) -> None:
        # Lazy (un)subscriptions only update GLIDE's desired state; GLIDE talks to the server.
        wanted = set(self._positions)
        new, gone = wanted - self._requested, self._requested - wanted
        if new:
            await _subscribe(client, new)
            self._requested |= new
        if gone:
            await _unsubscribe(client, gone)
            self._requested -= gone

    async def _check_subscriptions(self, client: GlideAnyClient, now: float) -> str | None:
        """Compare GLIDE's active subscriptions with the followed streams; a refusal's reason, if any."""
        active = _active_channels(client, await client.get_subscriptions()) & self._positions.keys()
        # Newly active (or active again after a reconnect): read once, to cover the time without.
        self._due |= active - self._active
        self._active = active
        inactive = self._positions.keys() - active
        for key in active:
            self._inactive_since.pop(key, None)
        self._subscriptions_work = self._subscriptions_work or bool(active)
        if not inactive:
            return None
        if now >= self._next_nudge:
            self._next_nudge = now + _NUDGE_SECONDS
            await _subscribe(client, inactive)  # makes GLIDE try again now rather than in 5 s
        if self._subscriptions_work:
            return None  # the server takes subscriptions: these wait for a reconnect or a slot move
        for key in inactive:
            since = self._inactive_since.setdefault(key, now)
            if now - since > self._subscribe_timeout:
                return f"the subscription to {key} stayed inactive for {now - since:.0f} s while reads succeeded"
        return None

    async def _fall_back(self, client: GlideAnyClient, reason: str) -> None:
        mode = "polls" if self._cluster else "waits in one blocking read"
        logger.warning("Valkey refuses pub/sub notifications (%s): the live feed %s instead", reason, mode)
        self.pubsub_refused = True
        if self._receiver is not None:
            self._receiver.cancel()
        if self._requested:
            # Otherwise GLIDE would keep asking for the refused subscriptions in the background.
            with contextlib.suppress(Exception):
                await _unsubscribe(client, set(self._requested))
        self._requested.clear()
        self._active.clear()


async def _subscribe(client: GlideAnyClient, channels: set[str]) -> None:
    if isinstance(client, GlideClusterClient):
        await client.ssubscribe_lazy(channels)
    else:
        await client.subscribe_lazy(channels)


async def _unsubscribe(client: GlideAnyClient, channels: set[str]) -> None:
    if isinstance(client, GlideClusterClient):
        await client.sunsubscribe_lazy(channels)
    else:
        await client.unsubscribe_lazy(channels)


def _active_channels(client: GlideAnyClient, state: Any) -> set[str]:
    mode: Any = (
        GlideClusterClientConfiguration.PubSubChannelModes.Sharded
        if isinstance(client, GlideClusterClient)
        else GlideClientConfiguration.PubSubChannelModes.Exact
    )
    return {_text(channel) for channel in state.actual_subscriptions.get(mode, ())}
