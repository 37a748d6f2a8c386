"""The GLIDE clients of one event loop: one for writes and non-blocking reads, one live feed."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Callable
from typing import Any, Literal

from glide import GlideError

from ._chunk import StreamChunk
from ._connection import EntraTokenSource, GlideAnyClient, create_client
from ._errors import ValkeyUnavailableError
from ._live_feed import LiveFeed
from ._notified_feed import NotifiedFeed
from ._settings import ValkeySettings

# How a live feed learns of new entries: one blocking multi-key read (standalone), polling (cluster),
# or pub/sub notifications published with every write (either).
LiveFeedMode = Literal["blocking", "polling", "notifications"]


class LoopClients:
    """The clients of one event loop, created on first use: GLIDE clients cannot be used from another loop.

    Args:
        settings: Where and how to connect.
        token_source: Entra ID tokens, when ``settings.auth`` is ``entra``.
        parse: Turns a stream entry into a chunk, for the live feed.
        live_feed: How the live feed learns of new entries.
        safety_poll_seconds: With notifications, how often every followed stream is read without one.
    """

    def __init__(
        self,
        settings: ValkeySettings,
        token_source: EntraTokenSource | None,
        parse: Callable[[str, Any], StreamChunk | None],
        *,
        live_feed: LiveFeedMode,
        safety_poll_seconds: float,
    ) -> None:
        self._settings = settings
        self._token_source = token_source
        self._parse = parse
        self._live_feed = live_feed
        self._safety_poll_seconds = safety_poll_seconds
        self._writer: GlideAnyClient | None = None
        self._renewals: list[asyncio.Task[None]] = []
        self._connecting = asyncio.Lock()
        self._feed: LiveFeed | None = None

    async def writer(self) -> GlideAnyClient:
        """The client for writes and non-blocking reads (never a blocking read: it would stall them)."""
        if self._writer is None:
            async with self._connecting:
                if self._writer is None:
                    self._writer = await self._connect("valkey-buffer")
        return self._writer

    def feed(self) -> LiveFeed:
        """The live feed of this loop."""
        if self._feed is None:
            if self._live_feed == "notifications":
                self._feed = NotifiedFeed(
                    self._connect_feed,
                    self._parse,
                    self._unblock,
                    block_ms=self._settings.read_block_ms,
                    cluster=self._settings.cluster,
                    safety_poll_seconds=self._safety_poll_seconds,
                )
            else:
                # Blocking on a standalone server, polling in a cluster (see LiveFeed).
                self._feed = LiveFeed(
                    self._connect_feed,
                    self._parse,
                    self._unblock,
                    block_ms=self._settings.read_block_ms,
                    cluster=self._settings.cluster,
                )
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

    async def _connect(self, name: str, request_timeout_ms: int | None = None) -> GlideAnyClient:
        try:
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
        except GlideError as error:
            raise ValkeyUnavailableError(f"Valkey at {self._settings.address} is unavailable: {error}") from error
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
