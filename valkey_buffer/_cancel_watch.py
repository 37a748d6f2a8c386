"""Cancelling a turn: the request travels through Valkey to whichever instance runs the turn.

A cancel request adds the turn's correlation id to a set kept next to the session's stream,
``{agent-stream:<session>}:cancelled``: the hash tag is the stream key's whole name, so in a cluster
the set lives in the stream's slot. That lets every write batch of a turn ask "am I cancelled?" in
the same atomic round trip as its appends (at most every ``CANCEL_CHECK_SECONDS``, so that a fast
stream does not pay for the question on every batch); while a turn writes nothing (the model is
thinking, a tool runs), :class:`CancelWatch` asks on its own a few times a second.

The turn's response then says it was stopped in a way of the app's choosing (an Agent Framework
app marks it in its content): the buffer asks the ``is_cancelled_response`` hook it was given.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from types import TracebackType

logger = logging.getLogger("valkey_buffer")

CANCEL_CHECK_SECONDS = 0.1
"""A watched turn's write batches ask whether it was cancelled at most this often."""


def cancel_key(stream_key: str) -> str:
    """The set of a session's cancelled turns; in the stream's hash slot (its hash tag is the stream key)."""
    return "{" + stream_key + "}:cancelled"


class CancelWatch:
    """Tells a running turn, through ``event``, that it was cancelled.

    Use it as an async context manager around the turn: while it is entered, a background task asks
    Valkey every ``poll_seconds``, unless a write batch of the turn asked within that time (its
    answer arrives through :meth:`checked`).

    Args:
        ask: Asks Valkey whether the turn is cancelled.
        poll_seconds: The longest a cancel request goes unnoticed while the turn writes nothing.
        on_exit: Called when the context is left (the buffer forgets the turn).
    """

    def __init__(
        self,
        ask: Callable[[], Awaitable[bool]],
        *,
        poll_seconds: float = 0.25,
        on_exit: Callable[[], object] | None = None,
    ) -> None:
        self.event = asyncio.Event()
        self._ask = ask
        self._poll_seconds = poll_seconds
        self._on_exit = on_exit
        self._last_checked = 0.0
        self._poller: asyncio.Task[None] | None = None

    @property
    def is_cancelled(self) -> bool:
        """Whether the turn is known to be cancelled."""
        return self.event.is_set()

    def check_due(self) -> bool:
        """Whether the next write batch should ask (no answer for ``CANCEL_CHECK_SECONDS``)."""
        return not self.event.is_set() and time.monotonic() - self._last_checked >= CANCEL_CHECK_SECONDS

    def checked(self, cancelled: bool) -> None:
        """Record an answer to "is the turn cancelled?" that a write batch got."""
        self._last_checked = time.monotonic()
        if cancelled:
            self.event.set()

    async def __aenter__(self) -> CancelWatch:
        self._poller = asyncio.get_running_loop().create_task(self._poll(), name="turn-cancellation-poll")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._on_exit is not None:
            self._on_exit()
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller

    async def _poll(self) -> None:
        while not self.event.is_set():
            await asyncio.sleep(max(0.0, self._last_checked + self._poll_seconds - time.monotonic()))
            if time.monotonic() - self._last_checked < self._poll_seconds:
                continue  # a write batch asked meanwhile
            try:
                self.checked(await self._ask())
            except Exception as error:
                # Valkey is unreachable: the turn goes on, and the next poll asks again.
                logger.debug("Could not ask whether a turn is cancelled: %s", error)
                self._last_checked = time.monotonic()
