"""The GLIDE clients of each event loop: one for writes and non-blocking reads, one live feed.

GLIDE clients belong to the event loop that created them, and an Agent Framework host runs the
response callback on a loop of its own while the HTTP server reads on another: every loop that uses
the buffer gets its own clients, created on first use, sharing one Entra ID token source.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections.abc import Callable
from typing import Any, Literal

from ._chunk import StreamChunk
from ._connection import EntraTokenSource, GlideAnyClient, TokenCredential, create_client
from ._glide import unavailable_on_glide_error
from ._live_feed import LiveFeed, WakeUp
from ._notifications import Notifications, PubSubSupport
from ._settings import ValkeySettings
from ._wake_ups import BlockingRead, Polling

# How a live feed learns of new entries: one blocking multi-key read (standalone), polling (cluster),
# or pub/sub notifications published with every write (either).
LiveFeedMode = Literal["blocking", "polling", "notifications"]


def live_feed_mode(requested: str, *, cluster: bool) -> LiveFeedMode:
    """The live feed for ``requested`` (``auto`` or a mode) on a cluster or a standalone server.

    Raises:
        ValueError: If ``requested`` is unknown or does not fit the server.
    """
    if requested == "auto":
        return "notifications" if cluster else "blocking"
    if requested == "notifications":
        return "notifications"
    if requested == "blocking":
        if cluster:
            raise ValueError("live_feed='blocking' needs a standalone server: a blocking XREAD cannot span slots")
        return "blocking"
    if requested == "polling":
        if not cluster:
            raise ValueError("live_feed='polling' is for a cluster: a standalone server takes one blocking read")
        return "polling"
    raise ValueError(f"live_feed must be 'auto', 'blocking', 'polling' or 'notifications', got {requested!r}")


class LoopClients:
    """The clients of one event loop, created on first use.

    Args:
        settings: Where and how to connect.
        token_source: Entra ID tokens, when ``settings.auth`` is ``entra``.
        parse: Turns a stream entry into a chunk, for the live feed.
        pubsub: Whether the live feed waits for notifications, and what the server refused of them.
        safety_poll_seconds: With notifications, how often every followed stream is read without one.
    """

    def __init__(
        self,
        settings: ValkeySettings,
        token_source: EntraTokenSource | None,
        parse: Callable[[str, Any], StreamChunk | None],
        *,
        pubsub: PubSubSupport,
        safety_poll_seconds: float,
    ) -> None:
        self._settings = settings
        self._token_source = token_source
        self._parse = parse
        self._pubsub = pubsub
        self._safety_poll_seconds = safety_poll_seconds
        self._writer: GlideAnyClient | None = None
        self._renewals: list[asyncio.Task[None]] = []
        self._connecting = asyncio.Lock()
        self._feed: LiveFeed | None = None

    async def writer(self) -> GlideAnyClient:
        """The client for writes and non-blocking reads (never a blocking read: it would stall them).

        Raises:
            ValkeyUnavailableError: If it cannot connect.
        """
        if self._writer is None:
            async with self._connecting:
                if self._writer is None:
                    self._writer = await self._connect("valkey-buffer")
        return self._writer

    def feed(self) -> LiveFeed:
        """The live feed of this loop."""
        if self._feed is None:
            wake_up = self._notifications if self._pubsub.feeds_subscribe else self._without_pubsub
            fallback = self._without_pubsub if self._pubsub.wanted else None
            self._feed = LiveFeed(self._connect_feed, self._parse, wake_up, fallback=fallback)
        return self._feed

    async def aclose(self) -> None:
        """Stop token renewal and the live feed, and close the clients."""
        for task in self._renewals:
            task.cancel()
        if self._feed is not None:
            await self._feed.aclose()
        if self._writer is not None:
            with contextlib.suppress(Exception):
                await self._writer.close()
            self._writer = None

    def _notifications(self, feed: LiveFeed) -> WakeUp:
        return Notifications(
            feed, self._pubsub, cluster=self._settings.cluster, safety_poll_seconds=self._safety_poll_seconds
        )

    def _without_pubsub(self, feed: LiveFeed) -> WakeUp:
        if self._settings.cluster:
            return Polling(feed)
        return BlockingRead(feed, self._unblock, block_ms=self._settings.read_block_ms)

    async def _connect(self, name: str, request_timeout_ms: int | None = None) -> GlideAnyClient:
        with unavailable_on_glide_error(self._settings.address):
            # In a context of its own: the client's background tasks (token renewal) serve every
            # later request, not the one whose trace happens to be current when it connects.
            client, renewal = await asyncio.get_running_loop().create_task(
                create_client(
                    self._settings,
                    token_source=self._token_source,
                    request_timeout_ms=request_timeout_ms,
                    client_name=name,
                ),
                context=contextvars.Context(),
            )
        if renewal is not None:
            self._renewals.append(renewal)
        return client

    async def _connect_feed(self) -> GlideAnyClient:
        # A blocking read may take read_block_ms: its request timeout must outlast it.
        return await self._connect(
            "valkey-buffer-feed", self._settings.read_block_ms + self._settings.request_timeout_ms
        )

    async def _unblock(self, client_id: int) -> bool:
        writer = await self.writer()
        return bool(await writer.custom_command(["CLIENT", "UNBLOCK", str(client_id)]))


class ClientsPerLoop:
    """The :class:`LoopClients` of every event loop that uses a buffer, and the Entra token source they share.

    Args:
        settings: Where and how to connect.
        credential: The credential for ``auth="entra"`` (``DefaultAzureCredential`` when ``None``).
        token_refresh_margin_seconds: Renew Entra tokens this long before they expire.
        parse: Turns a stream entry into a chunk, for the live feeds.
        pubsub: Whether live feeds wait for notifications, and what the server refused of them.
        safety_poll_seconds: With notifications, how often every followed stream is read without one.

    Raises:
        ValueError: If ``safety_poll_seconds`` is not positive.
    """

    def __init__(
        self,
        settings: ValkeySettings,
        *,
        credential: TokenCredential | None,
        token_refresh_margin_seconds: float,
        parse: Callable[[str, Any], StreamChunk | None],
        pubsub: PubSubSupport,
        safety_poll_seconds: float,
    ) -> None:
        if safety_poll_seconds <= 0:
            raise ValueError("safety_poll_seconds must be positive")
        self._settings = settings
        self._credential = credential
        self._token_refresh_margin = token_refresh_margin_seconds
        self._parse = parse
        self._pubsub = pubsub
        self._safety_poll_seconds = safety_poll_seconds
        self._token_source: EntraTokenSource | None = None
        self._loops: dict[asyncio.AbstractEventLoop, LoopClients] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._loops)

    def current(self) -> LoopClients:
        """The clients of the running event loop."""
        loop = asyncio.get_running_loop()
        clients = self._loops.get(loop)
        if clients is None:
            with self._lock:
                clients = self._loops.get(loop)
                if clients is None:
                    clients = self._loops[loop] = LoopClients(
                        self._settings,
                        self._token_source_for_entra(),
                        self._parse,
                        pubsub=self._pubsub,
                        safety_poll_seconds=self._safety_poll_seconds,
                    )
        return clients

    async def aclose(self) -> None:
        """Close every loop's clients, each on its own loop (clients belong to their loop)."""
        current = asyncio.get_running_loop()
        with self._lock:
            loops = dict(self._loops)
            self._loops.clear()
        for loop, clients in loops.items():
            if loop is current:
                await clients.aclose()
            elif loop.is_running():
                future = asyncio.run_coroutine_threadsafe(clients.aclose(), loop)
                with contextlib.suppress(Exception):
                    await asyncio.wrap_future(future)

    def _token_source_for_entra(self) -> EntraTokenSource | None:
        if self._settings.auth != "entra":
            return None
        if self._token_source is None:
            self._token_source = EntraTokenSource(
                self._credential, username=self._settings.username, refresh_margin_seconds=self._token_refresh_margin
            )
        return self._token_source
