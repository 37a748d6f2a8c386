"""The live feed's wake-up by pub/sub notifications: no polling while readers wait (the cluster default).

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
  refusal is recorded in :class:`PubSubSupport`, logged once, and the feed falls back to polling in
  a cluster and to one blocking read on a standalone server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from glide import RequestError, StreamReadOptions

from ._connection import GlideAnyClient
from ._glide import active_channels, is_pubsub_refusal, publish, subscribe, text, unsubscribe
from ._ids import STREAM_KEY_PREFIX
from ._live_feed import LiveFeed
from ._wake_ups import PollBackoff, poll_streams

logger = logging.getLogger("valkey_buffer")

# Published once when the feed starts, to learn whether the server takes notifications at all. Shaped
# like a stream key so that an ACL limiting channels to the streams' names allows it too.
PROBE_CHANNEL = STREAM_KEY_PREFIX + "live-feed-probe"
# How often GLIDE's subscription state is compared with the followed streams (no server traffic):
# the longest a reconnect goes unnoticed.
_STATE_CHECK_SECONDS = 0.25
# How often a subscription that is not active yet is asked again (GLIDE retries by itself only every 5 s).
_NUDGE_SECONDS = 1.0


class PubSubSupport:
    """Whether readers are woken by notifications, and what the server has refused of pub/sub.

    One per buffer, shared by its writers and the live feeds of every event loop. The server may
    refuse publishing and subscribing apart (an ACL can deny either), so each side records its own
    refusal here, and each is logged once.

    Args:
        wanted: The buffer's live feed is ``notifications``.
    """

    def __init__(self, *, wanted: bool) -> None:
        self.wanted = wanted
        self.publish_refused = False
        self.subscribe_refused = False

    @property
    def writes_publish(self) -> bool:
        """Whether write batches publish a notification."""
        return self.wanted and not self.publish_refused

    @property
    def feeds_subscribe(self) -> bool:
        """Whether live feeds wait for notifications (rather than their fallback)."""
        return self.wanted and not self.subscribe_refused

    def refuse_publish(self, error: Exception) -> None:
        """A write batch's notification was refused: writes stop publishing."""
        if not self.publish_refused:
            self.publish_refused = True
            logger.warning("Valkey refuses pub/sub notifications (%s): writes no longer publish them", error)

    def refuse_subscribe(self, reason: str, *, cluster: bool) -> None:
        """A live feed's probe or subscriptions were refused: feeds fall back."""
        if not self.subscribe_refused:
            self.subscribe_refused = True
            mode = "polls" if cluster else "waits in one blocking read"
            logger.warning("Valkey refuses pub/sub notifications (%s): the live feed %s instead", reason, mode)


class Notifications:
    """Reads a followed stream when a notification says it has new entries (see the module docstring).

    Args:
        feed: The feed whose streams are read; it falls back when the server refuses pub/sub.
        support: What the server has refused of pub/sub, shared with the writers.
        cluster: Whether the server is a cluster (sharded pub/sub, one pipelined read per stream).
        safety_poll_seconds: How often every followed stream is read without a notification.
        subscribe_timeout: Seconds a subscription may stay inactive while Valkey answers reads
            before it is taken as refused (only while no subscription has ever been active).
        poll_interval: The first pause between polls of streams without an active subscription.
        max_poll_interval: The longest such pause.
        batch_count: Entries read per stream and round at most.
    """

    name = "notifications"

    def __init__(
        self,
        feed: LiveFeed,
        support: PubSubSupport,
        *,
        cluster: bool,
        safety_poll_seconds: float = 5.0,
        subscribe_timeout: float = 5.0,
        poll_interval: float = 0.005,
        max_poll_interval: float = 0.05,
        batch_count: int = 512,
    ) -> None:
        self._feed = feed
        self._support = support
        self._cluster = cluster
        self._safety_poll_seconds = safety_poll_seconds
        self._subscribe_timeout = subscribe_timeout
        self._backoff = PollBackoff(poll_interval, max_poll_interval)
        self._batch_count = batch_count
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

    def followed(self, key: str) -> None:
        self._due.add(key)  # read at once: entries may have come between the reader's catch-up and now
        self._wake.set()

    def unfollowed(self, key: str) -> None:
        self._active.discard(key)
        self._inactive_since.pop(key, None)

    def failed(self) -> None:
        pass

    async def aclose(self) -> None:
        if self._receiver is not None:
            self._receiver.cancel()
            with contextlib.suppress(BaseException):
                await self._receiver

    async def next_round(self, client: GlideAnyClient) -> None:
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
        positions = self._feed.positions
        # Streams without an active subscription are polled; the rest are read when notified.
        inactive = positions.keys() - self._active
        if now >= self._next_safety_poll:
            self._next_safety_poll = now + self._safety_poll_seconds
            due = set(positions)
        else:
            due = (self._due | inactive) & positions.keys()
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
        self._feed.note_unreadable(unreadable)
        await self._wait_for_work(found, bool(inactive or unreadable))

    async def _wait_for_work(self, found: bool, polling_some: bool) -> None:
        if polling_some:
            timeout = self._backoff.after(found)
        else:
            self._backoff.reset()
            timeout = min(self._next_state_check, self._next_safety_poll) - time.monotonic()
        if timeout > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    async def _read_streams(self, client: GlideAnyClient, keys: set[str]) -> tuple[bool, set[str]]:
        """Read ``keys`` after their positions and deliver: whether anything was found, and the keys that failed."""
        positions = {key: self._feed.positions[key] for key in keys}
        if self._cluster:
            results, unreadable = await poll_streams(client, positions, self._batch_count)
        else:
            results = dict(await client.xread(positions, StreamReadOptions(count=self._batch_count)) or {})
            unreadable = set()
        return self._feed.deliver(results), unreadable

    async def _probe(self, client: GlideAnyClient) -> str | None:
        """Publish once: the reason the server refuses notifications, ``None`` if it takes them."""
        try:
            await publish(client, PROBE_CHANNEL)
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
            positions = self._feed.positions
            while message is not None:
                key = text(message.channel)
                if key in positions:
                    self._due.add(key)
                message = client.try_get_pubsub_message()
            self._wake.set()

    async def _update_subscriptions(self, client: GlideAnyClient) -> None:
        # Lazy (un)subscriptions only update GLIDE's desired state; GLIDE talks to the server.
        wanted = set(self._feed.positions)
        new, gone = wanted - self._requested, self._requested - wanted
        if new:
            await subscribe(client, new)
            self._requested |= new
        if gone:
            await unsubscribe(client, gone)
            self._requested -= gone

    async def _check_subscriptions(self, client: GlideAnyClient, now: float) -> str | None:
        """Compare GLIDE's active subscriptions with the followed streams; a refusal's reason, if any."""
        followed = self._feed.positions.keys()
        active = active_channels(client, await client.get_subscriptions()) & followed
        # Newly active (or active again after a reconnect): read once, to cover the time without.
        self._due |= active - self._active
        self._active = active
        inactive = followed - active
        for key in active:
            self._inactive_since.pop(key, None)
        self._subscriptions_work = self._subscriptions_work or bool(active)
        if not inactive:
            return None
        if now >= self._next_nudge:
            self._next_nudge = now + _NUDGE_SECONDS
            await subscribe(client, inactive)  # makes GLIDE try again now rather than in 5 s
        if self._subscriptions_work:
            return None  # the server takes subscriptions: these wait for a reconnect or a slot move
        for key in inactive:
            since = self._inactive_since.setdefault(key, now)
            if now - since > self._subscribe_timeout:
                return f"the subscription to {key} stayed inactive for {now - since:.0f} s while reads succeeded"
        return None

    async def _fall_back(self, client: GlideAnyClient, reason: str) -> None:
        self._support.refuse_subscribe(reason, cluster=self._cluster)
        if self._receiver is not None:
            self._receiver.cancel()
        if self._requested:
            # Otherwise GLIDE would keep asking for the refused subscriptions in the background.
            with contextlib.suppress(Exception):
                await unsubscribe(client, set(self._requested))
        self._requested.clear()
        self._active.clear()
        await self._feed.fall_back(reason)
